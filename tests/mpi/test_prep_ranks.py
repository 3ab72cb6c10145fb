"""``mpips prep`` across ranks, and training from its shards against training from text.

Rows are compared in order (which implies as a multiset): prep under all ranks of the
job and under one rank give the same rows; BSP training on the shards gives bit-identical
parameters to training on the text.
"""
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from former import former
from mpips.cli import build_parser
from mpips.data.plan import plan_data
from mpips.job import train
from mpips.prep import check_prep, run_prep
from mpips.wire import all_ranks
from textdata import KAGGLE, criteo_text, libsvm_text

comm = MPI.COMM_WORLD


def inputs(folder: Path, fmt: str, packed: bool = False) -> list[Path]:
    """Two text files (the Kaggle sample as the first when it is there), gzipped with
    ``packed`` (then each goes whole to one rank). The libSVM ones end with one line wider
    than all others, in the last rank's part only, so the ranks must agree on the width."""
    make = criteo_text if fmt == "criteo" else libsvm_text
    paths = [folder / "a.txt", folder / "b.txt"]
    if comm.Get_rank() == 0:
        if fmt == "criteo" and KAGGLE.exists():
            shutil.copy(KAGGLE, paths[0])
        else:
            paths[0].write_text(make(1500, 1))
        last = make(500, 2).splitlines(keepends=True)
        if fmt == "libsvm":
            last[-1] = "+1 " + " ".join(f"{i}:1" for i in range(12)) + "\n"
        paths[1].write_text("".join(last))
        if packed:
            for p in paths:
                p.with_suffix(".txt.gz").write_bytes(gzip.compress(p.read_bytes()))
    comm.Barrier()
    return [p.with_suffix(".txt.gz") for p in paths] if packed else paths


def prep(paths: list[Path], out: Path, fmt: str, on: MPI.Intracomm) -> None:
    args = build_parser().parse_args(["prep", *map(str, paths), "--format", fmt,
                                      "--out", str(out)])
    run_prep(check_prep(args, on.Get_size()), on, verbose=False, progress_seconds=0.0)


def rows(data: Path, **kw) -> tuple[np.ndarray, ...]:
    src = plan_data(former(data=str(data), table_rows=1 << 16, **kw)).train
    batches = list(src.batches(0, src.rows, 1000))
    return tuple(np.concatenate([getattr(b, f) for b in batches])
                 for f in ("keys", "vals", "labels"))


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(180)
@pytest.mark.parametrize("fmt,packed", [("criteo", False), ("libsvm", False),
                                        ("criteo", True), ("libsvm", True)])
def test_prep_on_all_ranks_equals_prep_on_one(shared_dir, fmt, packed):
    """Progress reported after every block; gzipped inputs go whole to two ranks, the
    others write empty shards."""
    paths = inputs(shared_dir, fmt, packed)
    prep(paths, shared_dir / "many", fmt, comm)
    if comm.Get_rank() == 0:
        prep(paths, shared_dir / "one", fmt, MPI.COMM_SELF)
    comm.Barrier()
    many, one = rows(shared_dir / "many"), rows(shared_dir / "one")
    same = all(np.array_equal(x, y) for x, y in zip(many, one))
    as_set = sorted(map(bytes, np.c_[many[0], many[2]])) == sorted(map(bytes, np.c_[one[0],
                                                                                    one[2]]))
    assert all_ranks(comm, same and as_set and len(many[2]) == (8500 if KAGGLE.exists()
                                                          and fmt == "criteo" else 2000))
    assert all_ranks(comm, len(list((shared_dir / "many").glob("shard-*.h5"))) == comm.Get_size())


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(240)
@pytest.mark.parametrize("fmt,model", [("criteo", "lr"), ("libsvm", "deepfm")])
def test_training_from_shards_equals_training_from_text(shared_dir, fmt, model):
    """BSP: the same rows in the same order give bit-identical parameters."""
    paths = inputs(shared_dir, fmt)[:1]
    prep(paths, shared_dir / "shards", fmt, comm)
    base = former(format=fmt, model=model, epochs=2, batch_size=64, table_rows=1 << 14,
                       embedding_dim=4, hidden=(8,), progress_seconds=60)
    text = train(base.replace(data=str(paths[0])), comm, return_params=True, verbose=False)
    shards = train(base.replace(data=str(shared_dir / "shards")), comm, return_params=True,
                   verbose=False)
    same = all(np.array_equal(text.params[n], shards.params[n]) for n in text.params)
    assert all_ranks(comm, same and text.params.keys() == shards.params.keys())
    if text.metrics is not None:
        assert text.metrics["auc"] == shards.metrics["auc"]
