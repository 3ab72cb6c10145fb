"""Which rows train and which test, from the settings. Pure (files are only counted)."""
from __future__ import annotations

from dataclasses import dataclass
from ..config import TrainConfig
from ..errors import ConfigError, DataError
from . import Source
from .criteo import CriteoTSV
from .hashing import FIELD_NAMES, FieldHashing
from .synthetic import SyntheticCTR


@dataclass
class DataPlan:
    """Train rows ``train_range`` of ``train``; test rows ``test_range`` of ``test``."""

    train: Source
    train_range: tuple[int, int]
    test: Source
    test_range: tuple[int, int]

    @property
    def table_rows(self) -> int:
        """Rows of the sparse table: the shared hash range plus fields' own ranges."""
        return self.train.hashing.total_rows


def field_hashing(cfg: TrainConfig) -> FieldHashing:
    """The settings' hashing: ``--table-rows`` shared buckets, plus ``[fields.NAME]
    buckets = N`` ranges of a field's own."""
    own = [0] * len(FIELD_NAMES)
    for name, buckets in cfg.fields:
        if name not in FIELD_NAMES:
            raise ConfigError(f"fields.{name}: no such field (fields: {FIELD_NAMES[0]}.."
                              f"{FIELD_NAMES[12]}, {FIELD_NAMES[13]}..{FIELD_NAMES[-1]})")
        own[FIELD_NAMES.index(name)] = buckets
    return FieldHashing(cfg.table_rows, cfg.seed, tuple(own))


def plan_data(cfg: TrainConfig) -> DataPlan:
    """Open the sources named by the settings; with no ``--test``, hold out the last rows."""
    plan = _plan(cfg)
    for part, (lo, hi) in (("train", plan.train_range), ("test", plan.test_range)):
        if hi <= lo:
            raise DataError(f"{cfg.data or 'the built-in data'}: no {part} rows "
                            f"(train rows {plan.train_range}, test rows {plan.test_range}); "
                            f"give more rows or change --test-fraction")
    return plan


def _plan(cfg: TrainConfig) -> DataPlan:
    hashing = field_hashing(cfg)
    if cfg.data is None:
        src = SyntheticCTR(rows=cfg.synthetic_rows, hashing=hashing, seed=cfg.seed)
        cut = src.rows - int(src.rows * cfg.test_fraction)
        return DataPlan(src, (0, cut), src, (cut, src.rows))
    train = CriteoTSV(cfg.data, hashing)
    if cfg.test is not None:
        test = CriteoTSV(cfg.test, hashing)
        return DataPlan(train, (0, train.rows), test, (0, test.rows))
    cut = train.rows - int(train.rows * cfg.test_fraction)
    return DataPlan(train, (0, cut), train, (cut, train.rows))
