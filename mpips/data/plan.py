"""Which rows train and which test, from the settings. Pure (files are only counted)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import TrainConfig
from ..errors import ConfigError, DataError
from . import Source
from .criteo import CriteoFormat
from .csvdata import CsvFormat, read_header
from .hashing import FIELD_NAMES, FieldHashing
from .libsvm import LibSVMFormat
from .lines import max_colons
from .parse import Format
from .shards import read_manifest
from .shardsource import ShardSource
from .synthetic import SyntheticCTR
from .textsource import TextSource, check_file


EVAL_ROWS = 8192            # a worker evaluates at least this many rows a batch


def eval_batch_rows(batch_size: int) -> int:
    """Rows per batch when test rows are scored (the training job's evaluation and
    ``mpips predict`` cut them alike, so their predictions agree to the bit)."""
    return max(batch_size, EVAL_ROWS)


@dataclass
class DataPlan:
    """Train rows ``train_range`` of ``train``; test rows ``test_range`` of ``test``;
    validation rows ``val_range`` of ``val`` (None: the job does not validate)."""

    train: Source
    train_range: tuple[int, int]
    test: Source
    test_range: tuple[int, int]
    val: Optional[Source] = None
    val_range: tuple[int, int] = (0, 0)

    @property
    def table_rows(self) -> int:
        """Rows of the sparse table: the shared hash range plus fields' own ranges."""
        return self.train.hashing.total_rows

    @property
    def bad_lines(self) -> int:
        """Bad lines skipped so far (``--on-bad-line skip``, text data)."""
        return self.train.bad_lines + sum(s.bad_lines for s in (self.test, self.val)
                                          if s is not None and s is not self.train)


def field_hashing(cfg: TrainConfig, names: tuple[str, ...], seed: int,
                  padded: bool = False) -> FieldHashing:
    """The settings' hashing: ``--table-rows`` shared buckets, plus ``[fields.NAME]
    buckets = N`` ranges of a field's own (for formats whose fields have names)."""
    own = [0] * len(names)
    for name, buckets in cfg.fields:
        if name not in names:
            known = ", ".join(names) if names else "none: its features have no fixed fields"
            raise ConfigError(f"fields.{name}: no such field (fields: {known})")
        own[names.index(name)] = buckets
    return FieldHashing(cfg.table_rows, seed, tuple(own), padded)


def text_format(path: Path, cfg: TrainConfig, width: Optional[int] = None) -> Format:
    """The format of a text input: CSV by its header; libSVM rows ``width`` slots wide,
    or (None) as wide as the file's longest line, found by a scan."""
    check_file(path)
    if cfg.format == "criteo":
        return CriteoFormat()
    if cfg.format in ("libsvm", "libfm", "libffm"):
        ffm = cfg.format == "libffm"
        return LibSVMFormat(max_colons(path) // (2 if ffm else 1) if width is None
                            else width, ffm)
    if cfg.csv is None:
        raise ConfigError("--format csv needs a [csv] section in --config: label = \"...\", "
                          "numeric = [...], categorical = [...]")
    return CsvFormat(cfg.csv, read_header(path, cfg.csv))


def plan_data(cfg: TrainConfig) -> DataPlan:
    """Open the sources named by the settings; with no ``--test``, hold out the last rows."""
    plan = with_validation(_plan(cfg), cfg)
    parts = [("train", plan.train_range), ("test", plan.test_range)]
    for part, (lo, hi) in parts + ([("validation", plan.val_range)] if cfg.validating else []):
        if hi <= lo:
            raise DataError(f"{cfg.data or 'the built-in data'}: no {part} rows "
                            f"(train rows {plan.train_range}, test rows {plan.test_range}); "
                            f"give more rows or change --test-fraction or --val-fraction")
    return plan


def with_validation(plan: DataPlan, cfg: TrainConfig) -> DataPlan:
    """The plan with its validation rows: the last ``--val-fraction`` of the training rows,
    at least one (they then no longer train), or all of ``--val``'s source (kept in
    ``plan.val``)."""
    if plan.val is not None or cfg.val is not None or cfg.val_fraction <= 0:
        return plan
    lo, hi = plan.train_range
    cut = hi - max(1, int((hi - lo) * cfg.val_fraction)) if hi - lo > 1 else hi
    return DataPlan(plan.train, (lo, cut), plan.test, plan.test_range, plan.train, (cut, hi))


def _plan(cfg: TrainConfig) -> DataPlan:
    if cfg.data is None:
        src = SyntheticCTR(rows=cfg.synthetic_rows,
                           hashing=field_hashing(cfg, FIELD_NAMES, cfg.seed),
                           seed=cfg.seed)
        cut = src.rows - int(src.rows * cfg.test_fraction)
        return DataPlan(src, (0, cut), src, (cut, src.rows))
    prepared = [Path(p).is_dir() for p in (cfg.data, cfg.test) if p is not None]
    if len(set(prepared)) > 1:
        raise ConfigError("--data and --test must both be prepared directories or both "
                          "text files")
    if cfg.val is not None and Path(cfg.val).is_dir() != prepared[0]:
        raise ConfigError("--data and --val must both be prepared directories or both "
                          "text files")
    train, test, val = _shards(cfg) if prepared[0] else _text(cfg)
    checked = (val, (0, val.rows)) if val is not None else (None, (0, 0))
    if test is not None:
        return DataPlan(train, (0, train.rows), test, (0, test.rows), *checked)
    cut = train.rows - int(train.rows * cfg.test_fraction)
    return DataPlan(train, (0, cut), train, (cut, train.rows), *checked)


def _other(cfg: TrainConfig) -> list[str]:
    """The named test and validation inputs, in that order (for the readers' loops)."""
    return [p for p in (cfg.test, cfg.val) if p is not None]


def _split(cfg: TrainConfig, sources: list[Source]
           ) -> tuple[Source, Optional[Source], Optional[Source]]:
    """(train, test, val) from the sources of ``--data`` and then ``_other``."""
    rest = iter(sources[1:])
    test = next(rest) if cfg.test is not None else None
    val = next(rest) if cfg.val is not None else None
    return sources[0], test, val


def _text(cfg: TrainConfig) -> tuple[Source, Optional[Source], Optional[Source]]:
    """Text sources, sharing one slot width (libSVM) and one hashing."""
    paths = [Path(p) for p in (cfg.data, *_other(cfg))]
    formats = [text_format(p, cfg) for p in paths]
    if formats[0].padded and len({f.fields for f in formats}) > 1:
        width = max(f.fields for f in formats)
        formats = [text_format(p, cfg, width) for p in paths]
    hashing = field_hashing(cfg, formats[0].names, cfg.seed, formats[0].padded)
    sources = [TextSource(p, f, hashing, cfg.on_bad_line) for p, f in zip(paths, formats)]
    return _split(cfg, sources)


def _shards(cfg: TrainConfig) -> tuple[Source, Optional[Source], Optional[Source]]:
    """Prepared directories; test and validation sets must be prepared alike (format,
    hashing seed)."""
    folders = [Path(p) for p in (cfg.data, *_other(cfg))]
    manifests = [read_manifest(f) for f in folders]
    first = manifests[0]
    for folder, m in zip(folders[1:], manifests[1:]):
        if (m.format, m.names, m.seed, m.schema) != (first.format, first.names, first.seed,
                                                     first.schema):
            raise DataError(f"{folder}: prepared with another format, schema or hashing "
                            f"seed than {folders[0]}")
    hashing = field_hashing(cfg, tuple(first.names), first.seed, first.padded)
    width = max(m.fields for m in manifests)
    sources = [ShardSource(f, hashing, width) for f in folders]
    return _split(cfg, sources)
