"""A trained model in one process: read from a checkpoint or from its exported file,
scored in NumPy and numba with the models' own code, and written as that file. No MPI.

The exported file (``mpips export``) is one HDF5 file that describes itself:

- attributes ``format`` = ``mpips-model``, ``index`` (JSON) and ``index_crc32``;
- ``tables/NAME/keys`` (int64) and ``tables/NAME/rows`` (float32, rows x dim): the sparse
  table, every row in key order (FM rows are ``[w, v_1..v_k]``);
- ``dense/NAME``: the other tables in their own shapes: ``bias`` (1,), DeepFM's
  ``mlp{i}.w`` (inputs, outputs) and ``mlp{i}.b`` (outputs,); the MLP's input is the
  fields' embeddings ``v_f x_f`` side by side, its layers ReLU but the last;
- ``crc/...``: a CRC32 per 1 MiB block of every dataset, as in checkpoints.

The index holds the model's name and settings, the ``input`` description (format, field
names, schema, hashing seed, table ranges: ``data.inputs.InputSpec``), the tables, the
number of workers whose evaluation the scoring reproduces, and every dataset's checksum
entry. No optimiser state is kept. Use::

    from mpips.export import Model
    model = Model.load("model.h5")
    p = model.predict(["0\\t1\\t5\\t...", ...])      # raw lines in the model's format
"""
from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Optional

import h5py
import numpy as np

from . import __version__
from .checkpoint import manifest
from .checkpoint.inspect import resolve
from .checkpoint.shardfile import ServerFile, dataset_entry, write_server_file
from .checkpoint.whole import read_tables
from .config import TrainConfig
from .data import Batch
from .data.inputs import InputSpec
from .errors import CheckpointError, ConfigError
from .models import DeepFM, Lookup, Model as Net, build_model

FORMAT = "mpips-model"
VERSION = 1


class Model:
    """A trained model held in memory: its tables (row ``k`` is key ``k``), the model
    (``mpips.models``) that scores with them, and how raw data become its keys."""

    def __init__(self, net: Net, tables: dict[str, np.ndarray], inputs: InputSpec,
                 cfg: TrainConfig, workers: int, source: str,
                 step: Optional[int] = None) -> None:
        """``workers``: how many workers evaluated the training job (its test rows are
        cut as they cut them, so that scores match to the bit); ``source`` and ``step``:
        the checkpoint (or file) the model was read from."""
        self.net, self.tables, self.inputs, self.cfg = net, tables, inputs, cfg
        self.workers, self.source, self.step = workers, source, step

    @property
    def name(self) -> str:
        return self.cfg.model

    # ---- reading -------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "Model":
        """An exported file, or a checkpoint (or a run folder: its latest checkpoint)."""
        path = Path(path)
        return cls.from_checkpoint(path) if path.is_dir() else cls.load(path)

    @classmethod
    def from_checkpoint(cls, path: str | Path, read: bool = True) -> "Model":
        """The tables of a checkpoint (a run folder: its latest), rebuilt by key from
        every server's file with their checksums verified. ``read`` False leaves them
        on disk (servers under mpiexec read their shards themselves)."""
        step_dir = resolve(Path(path))
        doc = manifest.load(step_dir)
        cfg = manifest.config_of(doc["settings"], str(step_dir / manifest.MANIFEST))
        dims = {t["name"]: (int(t["rows"]), int(t["dim"])) for t in doc["tables"]}
        inputs = InputSpec.of_settings(cfg, _fields(cfg, dims))
        net = _net(cfg, dims, inputs, str(step_dir))
        tables = read_tables(step_dir, doc, [t.name for t in net.tables]) if read else {}
        return cls(net, tables, inputs, cfg, len(doc["workers"]), str(step_dir), doc["step"])

    @classmethod
    def load(cls, path: str | Path) -> "Model":
        """An exported model file, every dataset verified against its checksums."""
        path = Path(path)
        index = _read_index(path)
        where = str(path)
        try:
            cfg = manifest.config_of(index["settings"], where)
            dims = {t["name"]: (int(t["rows"]), int(t["dim"])) for t in index["tables"]}
            workers = int(index["workers"])
            entry = {"bytes": path.stat().st_size, "datasets": dict(index["datasets"])}
            record = dict(index["input"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: the index lacks {exc}") from None
        inputs = InputSpec.of_record(record, where)
        net = _net(cfg, dims, inputs, where)
        tables = {}
        with ServerFile(path, entry) as f:
            for spec in net.tables:
                name = _dataset(net, spec.name)
                if name not in entry["datasets"]:
                    raise CheckpointError(f"{path}: no dataset {name!r} for table "
                                          f"{spec.name!r}")
                rows = f.read(name).reshape(spec.rows, spec.dim)
                if spec.name == net.sparse and not np.array_equal(
                        f.read(f"tables/{spec.name}/keys"), np.arange(spec.rows)):
                    raise CheckpointError(f"{path}: the keys of {spec.name!r} are not "
                                          f"0..{spec.rows - 1} in order")
                tables[spec.name] = rows
        return cls(net, tables, inputs, cfg, workers, str(path), index.get("step"))

    # ---- writing -------------------------------------------------------------------------
    def save(self, path: str | Path) -> int:
        """Write the model file (see the module's docstring) atomically: a temporary
        name, fsync, rename. Returns its size in bytes."""
        path = Path(path)
        if not path.resolve().parent.is_dir():
            raise ConfigError(f"--out {path}: folder {path.resolve().parent} does not exist")
        arrays = {}
        for spec in self.net.tables:
            name = _dataset(self.net, spec.name)
            arrays[name] = self.tables[spec.name].reshape(_shape(self.net, spec.name))
            if spec.name == self.net.sparse:
                arrays[f"tables/{spec.name}/keys"] = np.arange(spec.rows, dtype=np.int64)
        index = {"format": FORMAT, "version": VERSION, "model": self.name, "mpips": __version__,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "source": self.source,
                 "step": self.step, "settings": manifest.settings(self.cfg),
                 "input": self.inputs.record(), "workers": self.workers,
                 "tables": [{"name": t.name, "rows": t.rows, "dim": t.dim,
                             "dataset": _dataset(self.net, t.name)} for t in self.net.tables],
                 "datasets": {n: dataset_entry(a)[1] for n, a in arrays.items()}}
        text = json.dumps(index, indent=1)
        try:
            return write_server_file(path, arrays, {"format": FORMAT, "index": text,
                                                    "index_crc32": zlib.crc32(text.encode())}
                                     )["bytes"]
        except OSError as exc:
            raise ConfigError(f"--out {path}: cannot write the model ({exc})") from None

    # ---- scoring -------------------------------------------------------------------------
    def predict_batch(self, batch: Batch) -> np.ndarray:
        """Click probabilities (float64) of a batch of table keys (``score_batch``)."""
        return score_batch(self.net, batch, lambda name, lk: np.take(
            self.tables[name], lk.keys, axis=0, out=lk.rows))

    def warm_batch(self) -> Batch:
        """One row of key 0, the model's width: scoring it loads the kernels, so that a
        rate measured afterwards does not count their loading."""
        width = self.inputs.width or 1
        return Batch(np.zeros((1, width), np.int64), np.ones((1, width), np.float32),
                     np.zeros(1, np.float32))

    def predict(self, lines: str | Iterable[str], header: Optional[str] = None) -> np.ndarray:
        """Probabilities of raw text lines in the model's format (with or without their
        label; CSV: under ``header``, by default the training file's header)."""
        rows = lines.splitlines() if isinstance(lines, str) else list(lines)
        if not rows:
            return np.empty(0)
        return self.predict_batch(self.inputs.batch(rows, header)[0])

    def predict_ids(self, ids: np.ndarray, vals: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities of rows of 64-bit feature ids (uint64, rows x fields: what
        'mpips prep' stores), with their values (default 1)."""
        ids = np.asarray(ids, dtype=np.uint64)
        vals = np.ones(ids.shape, np.float32) if vals is None else np.asarray(vals, np.float32)
        return self.predict_batch(Batch(self.inputs.hashing.rows(ids), vals,
                                        np.zeros(ids.shape[0], np.float32)))

    def describe(self) -> str:
        """One line: the model, where from, its sparse table's size, its input format."""
        t = next(t for t in self.net.tables if t.name == self.net.sparse)
        return (f"{self.name} from {self.source} ({t.name} {t.rows:,} x {t.dim}, "
                f"{self.inputs.format} input)")


def export(checkpoint: str, out: str, onnx: Optional[str] = None) -> Model:
    """``mpips export``: a checkpoint's model as one file (and, with ``onnx``, DeepFM's
    MLP tower as an ONNX graph)."""
    started = time.perf_counter()
    model = Model.from_checkpoint(checkpoint)
    if onnx is not None:
        from .onnx_export import check_onnx

        check_onnx(onnx, model)
    size = model.save(out)
    print(f"[mpips] exported {model.describe()} to {out}: {size / 2**20:,.1f} MiB in "
          f"{time.perf_counter() - started:.2f}s", flush=True)
    if onnx is not None:
        from .onnx_export import write_onnx

        write_onnx(model, onnx)
        print(f"[mpips] wrote the MLP tower to {onnx} (ONNX)", flush=True)
    return model


def score_batch(net: Net, batch: Batch, fill: Callable[[str, Lookup], None]) -> np.ndarray:
    """Probabilities of a batch as a training job's workers evaluate it: the unique keys
    each table is looked up at, their rows filled by ``fill(table, lookup)`` (from memory,
    or pulled from servers), then the model's own ``predict``."""
    if len(batch) == 0:
        return np.empty(0)
    lookups = net.lookups(batch)
    for name, lk in lookups.items():
        fill(name, lk)
    return net.predict(batch, lookups)


def _fields(cfg: TrainConfig, dims: dict[str, tuple[int, int]]) -> Optional[int]:
    """DeepFM's field count, from its first layer (its inputs are fields x embedding);
    None for the other models, which take rows of any width."""
    if cfg.model != "deepfm" or "mlp0.w" not in dims:
        return None
    return dims["mlp0.w"][1] // (cfg.embedding_dim * cfg.hidden[0])


def _net(cfg: TrainConfig, dims: dict[str, tuple[int, int]], inputs: InputSpec,
         where: str) -> Net:
    """The model the settings describe over ``inputs``, checked against the stored
    tables' sizes."""
    net = build_model(cfg.model, inputs.hashing.total_rows, cfg.embedding_dim, cfg.init_std,
                      _fields(cfg, dims) or inputs.width or 1, cfg.hidden, cfg.admitting)
    if {t.name: (t.rows, t.dim) for t in net.tables} != dims:
        raise CheckpointError(f"{where}: its tables ({dims}) are not those its settings "
                              f"give the {cfg.model} model")
    return net


def _dataset(net: Net, table: str) -> str:
    """Where a table is kept in the model file."""
    return f"tables/{table}/rows" if table == net.sparse else f"dense/{table}"


def _shape(net: Net, table: str) -> tuple[int, ...]:
    """A table's shape in the model file: sparse rows x dim, dense layers as matrices."""
    spec = next(t for t in net.tables if t.name == table)
    if table == net.sparse:
        return spec.rows, spec.dim
    if isinstance(net, DeepFM) and table.endswith(".w"):
        return net.layers[int(table[3:-2])]
    return (spec.dim,)


def _read_index(path: Path) -> dict:
    """The file's index, checked against its own checksum."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        with h5py.File(path, "r") as f:
            kind, text, crc = (f.attrs.get(k) for k in ("format", "index", "index_crc32"))
    except OSError as exc:
        raise CheckpointError(f"{path}: not a readable HDF5 file ({exc})") from None
    if kind != FORMAT or not isinstance(text, str):
        raise CheckpointError(f"{path}: not an mpips model file ('mpips export' writes them)")
    if crc is None or zlib.crc32(text.encode()) != int(crc):
        raise CheckpointError(f"{path}: its index fails its checksum (damaged file)")
    index = json.loads(text)
    if index.get("version") != VERSION:
        raise CheckpointError(f"{path}: model file version {index.get('version')}, this "
                              f"mpips reads {VERSION}")
    return index
