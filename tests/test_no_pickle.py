"""No file or message mpips reads is deserialised into arbitrary objects: no pickle
module, and none of mpi4py's lower-case (object-serialising) calls. (numba's own kernel
cache under ``__pycache__``, which numba writes and loads itself, is outside this.)"""
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mpips"
OBJECT_CALLS = re.compile(r"\.\s*(allgather|allreduce|alltoall|bcast|gather|reduce|scatter|"
                          r"i?[bs]?send|i?recv|sendrecv|exscan|scan|mprobe|improbe)\s*\(")
UNSAFE_IMPORTS = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|cloudpickle|"
                            r"shelve|marshal)\b", re.M)


def test_no_unsafe_deserialisation_in_the_package():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        found += [f"{path.name}: import" for _ in UNSAFE_IMPORTS.finditer(text)]
        found += [f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                  for m in OBJECT_CALLS.finditer(text)]
    assert found == []


def test_the_check_finds_what_it_looks_for():
    assert OBJECT_CALLS.search("x = comm.allgather(mine)")
    assert OBJECT_CALLS.search("comm.issend (x, 1)") and OBJECT_CALLS.search("c.bsend(x)")
    assert not OBJECT_CALLS.search("comm.Allgather(buf, out)")
    assert UNSAFE_IMPORTS.search("import pickle\n")
