"""Which rows train and which test, from the settings. Pure (files are only counted)."""
from __future__ import annotations

from dataclasses import dataclass
from ..config import TrainConfig
from ..errors import DataError
from . import Source
from .criteo import CriteoTSV
from .synthetic import SyntheticCTR


@dataclass
class DataPlan:
    """Train rows ``train_range`` of ``train``; test rows ``test_range`` of ``test``."""

    train: Source
    train_range: tuple[int, int]
    test: Source
    test_range: tuple[int, int]


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
    if cfg.data is None:
        src = SyntheticCTR(rows=cfg.synthetic_rows, table_rows=cfg.table_rows, seed=cfg.seed)
        cut = src.rows - int(src.rows * cfg.test_fraction)
        return DataPlan(src, (0, cut), src, (cut, src.rows))
    train = CriteoTSV(cfg.data, cfg.table_rows, cfg.seed)
    if cfg.test is not None:
        test = CriteoTSV(cfg.test, cfg.table_rows, cfg.seed)
        return DataPlan(train, (0, train.rows), test, (0, test.rows))
    cut = train.rows - int(train.rows * cfg.test_fraction)
    return DataPlan(train, (0, cut), train, (cut, train.rows))
