"""Training configuration: one typed object, from defaults, a TOML file and flags. Pure.

Keys are the long flag names (``batch-size`` or ``batch_size``); an unknown key or a value
of the wrong type is rejected with an error naming the key and the file.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import ConfigError
from .optim import OPTIMIZERS

FORMATS = ("criteo",)
MODELS = ("lr",)
PULL_MODES = ("auto", "get", "direct")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``mpips train`` needs; see ``mpips train --help`` for each field."""

    data: Optional[str] = None
    test: Optional[str] = None
    format: str = "criteo"
    model: str = "lr"
    servers: int = 1
    epochs: int = 2
    batch_size: int = 512
    lr: float = 0.05
    optimizer: str = "adagrad"
    l2: float = 0.0
    seed: int = 0
    metrics_out: Optional[str] = None
    table_rows: int = 1 << 21
    test_fraction: float = 0.2
    synthetic_rows: int = 500_000
    progress_seconds: float = 2.0
    pull: str = "auto"

    def __post_init__(self) -> None:
        _choice("format", self.format, FORMATS)
        _choice("model", self.model, MODELS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("pull", self.pull, PULL_MODES)
        for name in ("servers", "epochs", "batch_size", "table_rows", "synthetic_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a finite number > 0, got {self.lr}")
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise ConfigError(f"--l2 must be a finite number >= 0, got {self.l2}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must lie in [0, 2**63), got {self.seed}")
        if self.test is not None and self.data is None:
            raise ConfigError("--test needs --data: the built-in data holds out its own rows")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test-fraction must lie in (0, 1), got {self.test_fraction}")
        if self.progress_seconds <= 0:
            raise ConfigError(f"--progress-seconds must be > 0, got {self.progress_seconds}")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{_flag(name)} must be one of {', '.join(allowed)}, not {value!r}")


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check a TOML value against the field's type (ints are accepted for floats)."""
    kind = {f.name: f.type for f in fields(TrainConfig)}[name]
    want = {"int": int, "float": float, "str": str, "Optional[str]": str}[kind]
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{where}: {name.replace('_', '-')} must be {want.__name__}, "
                          f"got {value!r}")
    return value


def from_mapping(values: Mapping[str, Any], where: str = "settings",
                 base: TrainConfig = TrainConfig()) -> TrainConfig:
    """``base`` with ``values`` applied; unknown keys are an error naming the key."""
    known = {f.name for f in fields(TrainConfig)}
    changes = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        changes[name] = _coerce(name, value, where)
    try:
        return base.replace(**changes)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_toml(path: str | Path, base: TrainConfig = TrainConfig()) -> TrainConfig:
    """Read a TOML file of settings (top level, or under a ``[train]`` table)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if set(doc) == {"train"} and isinstance(doc["train"], dict):
        doc = doc["train"]
    return from_mapping(doc, str(path), base)
