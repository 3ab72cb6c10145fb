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
from typing import Any, Iterator, Mapping, Optional

from .clocks import SYNC_MODES, SyncPolicy
from .codecs import RAW, Compression, pull_codec, shrinks
from .data.csvdata import CsvSchema
from .data.parse import BAD_LINE_MODES
from .errors import ConfigError
from .optim import OPTIMIZERS

FORMATS = ("criteo", "libsvm", "libfm", "libffm", "csv")
MODELS = ("lr", "fm", "deepfm")
PULL_MODES = ("auto", "get", "direct")
BALANCE_MODES = ("auto", "on", "off")
REBALANCE_MODES = ("auto", "off")


# Defaults chosen by the grid in benchmarks/tune_defaults.py (README: "Defaults"): the
# learning rate per optimiser and model, L2 per model.
# Only Adagrad's were measured; SGD and FTRL keep the former 0.05, Adam PyTorch's 0.001.
DEFAULT_LR = {"adagrad": {"lr": 0.05, "fm": 0.01, "deepfm": 0.01},
              "sgd": {"lr": 0.05, "fm": 0.05, "deepfm": 0.05},
              "adam": {"lr": 0.001, "fm": 0.001, "deepfm": 0.001},
              "ftrl": {"lr": 0.05, "fm": 0.05, "deepfm": 0.05}}
DEFAULT_L2 = {"lr": 0.001, "fm": 0.003, "deepfm": 0.001}
DEFAULT_PATIENCE = 2
PER_MODEL = ("lr", "linear_lr", "l2", "early_stop")


def model_default(name: str, cfg: "TrainConfig") -> float:
    """The default of a setting left unset (``PER_MODEL``): the learning rate of the
    model and optimiser (an unknown one is refused by the checks that follow); for the
    first-order weights of FM and DeepFM, LR's rate for the optimiser when ``lr`` too
    was left unset (else ``lr``); the model's L2; early stopping when the job has
    validation rows."""
    rates = DEFAULT_LR.get(cfg.optimizer, DEFAULT_LR["adagrad"])
    if name == "lr":
        return rates.get(cfg.model, 0.05)
    if name == "linear_lr":
        return rates["lr"] if "lr" in getattr(cfg, "_unset", ()) else cfg.lr
    if name == "l2":
        return DEFAULT_L2.get(cfg.model, 0.0)
    return DEFAULT_PATIENCE if cfg.val is not None or cfg.val_fraction > 0 else 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``mpips train`` needs; see ``mpips train --help`` for each field."""

    data: Optional[str] = None
    test: Optional[str] = None
    format: str = "criteo"
    on_bad_line: str = "error"             # or "skip": leave malformed lines out, count them
    csv: Optional[CsvSchema] = None        # from [csv] in the config file
    model: str = "lr"
    servers: int = 1
    epochs: int = 10                       # at most: early stopping usually ends sooner
    batch_size: int = 512
    lr: Optional[float] = None             # None: the default of the model and optimiser
    linear_lr: Optional[float] = None      # FM/DeepFM first-order weights (None: see above)
    optimizer: str = "adagrad"
    l2: Optional[float] = None             # None: the model's default
    l1: float = 0.0
    seed: int = 0
    metrics_out: Optional[str] = None
    table_rows: int = 1 << 21
    embedding_dim: int = 8
    init_std: float = 0.01
    hidden: tuple[int, ...] = (64, 32)     # DeepFM's hidden layer sizes
    test_fraction: float = 0.2
    synthetic_rows: int = 500_000
    progress_seconds: float = 2.0
    pull: str = "auto"
    sync: str = "bsp"
    staleness: int = 3
    # Per-table overrides: (table, sync, staleness); from [tables.NAME] in the config file.
    tables: tuple[tuple[str, str, int], ...] = ()
    balance: str = "auto"                  # SSP/ASP workers steal and merge batches (balance)
    # Per-field hash buckets of a field's own: (field, buckets), from [fields.NAME].
    fields: tuple[tuple[str, int], ...] = ()
    slow_worker: Optional[str] = None      # test aid: "I:FACTOR"
    standby: int = 0                       # extra server ranks that start without partitions
    rebalance: str = "auto"                # move partitions off busy servers (balancer)
    rebalance_margin: float = 0.15         # busiest server this far above the mean: imbalance
    rebalance_window: int = 2              # load reports in a row that must show it
    rebalance_mib: float = 256.0           # most MiB of rows and state moved per round
    window_headroom: float = 0.5           # spare rows in each server's windows (a share)
    slow_server: Optional[str] = None      # test aid: "I:FACTOR"
    move_every: int = 0                    # test aid: move seeded partitions every N steps
    join_at: tuple[int, ...] = ()          # steps at which the next standby server joins
    drain_at: tuple[str, ...] = ()         # "I:STEP": server I is drained before STEP
    kill_at: Optional[str] = None          # test aid: "RANK:STEP", that world rank dies
    delay_jitter: float = 0.0              # test aid: up to this many seconds of sleep a step
    shuffle: bool = True                   # a seeded new order of each worker's batches each epoch
    run_name: str = "run"
    checkpoint_dir: str = "checkpoints"
    checkpoint_every: int = 0              # steps between checkpoints (0: none)
    checkpoint_seconds: float = 0.0        # seconds between checkpoints (0: none)
    checkpoint_keep: int = 3
    resume: Optional[str] = None           # "latest", or a run or checkpoint folder
    compress: str = "none"                 # push codec of the embedding tables (codecs)
    compress_keep: float = 0.1             # topk: the share of a table's rows sent a step
    # Per-table codecs: (table, codec); from [tables.NAME] compress = ... in the config file.
    table_compress: tuple[tuple[str, str], ...] = ()
    pull_codec: str = "none"               # codec of the embedding tables' pulls (pullcodec)
    # Per-table pull codecs: (table, codec); from [tables.NAME] pull-codec = ... .
    table_pull_codec: tuple[tuple[str, str], ...] = ()
    residual_rows: int = 1 << 20           # error feedback: keys kept per table and worker
    link_gbps: float = 0.0                 # test aid: a worker's messages wait bytes / G
    pull_cache: int = 0                    # SSP/ASP: rows a worker may serve from its cache
    val: Optional[str] = None              # validation data, as --data (else --val-fraction)
    val_fraction: float = 0.1              # the last share of the training rows validates
    eval_every: int = 0                    # steps between validations (also every epoch)
    early_stop: Optional[int] = None       # validations without a better AUC before a stop
                                           # (None: 2 when the job validates, else off)
    min_count: int = 20                    # sightings before a key gets a row of its own
    admit_probability: float = 1.0         # chance a sighting of a new key admits it
    evict_after: int = 0                   # steps untouched before a row is reset (0: never)

    def __post_init__(self) -> None:
        # Settings left unset take the measured default of the model and optimiser; a
        # copy with another model or optimiser (``replace``) takes that one's.
        unset = tuple(name for name in PER_MODEL if getattr(self, name) is None)
        object.__setattr__(self, "_unset", unset)
        for name in unset:
            object.__setattr__(self, name, model_default(name, self))
        _choice("format", self.format, FORMATS)
        _choice("on_bad_line", self.on_bad_line, BAD_LINE_MODES)
        _choice("model", self.model, MODELS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("pull", self.pull, PULL_MODES)
        for name in ("servers", "epochs", "batch_size", "table_rows", "synthetic_rows",
                     "embedding_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "linear_lr"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{_flag(name)} must be a finite number > 0, got {value}")
        for name in ("l1", "l2", "init_std"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"--{name} must be a finite number >= 0, got {value}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must lie in [0, 2**63), got {self.seed}")
        if self.test is not None and self.data is None:
            raise ConfigError("--test needs --data: the built-in data holds out its own rows")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test-fraction must lie in (0, 1), got {self.test_fraction}")
        if self.progress_seconds <= 0:
            raise ConfigError(f"--progress-seconds must be > 0, got {self.progress_seconds}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"--hidden must be one or more sizes >= 1, got {self.hidden}")
        _choice("sync", self.sync, SYNC_MODES)
        for name, mode, staleness in (("", self.sync, self.staleness), *self.tables):
            where = f"tables.{name}." if name else "--"
            _choice(f"{where}sync", mode, SYNC_MODES, flag=False)
            if staleness < 0:
                raise ConfigError(f"{where}staleness must be >= 0, got {staleness}")
        _choice("balance", self.balance, BALANCE_MODES)
        _choice("rebalance", self.rebalance, REBALANCE_MODES)
        self.slow()
        self.slow_server_factor()
        self.drains()
        self.kill()
        if self.standby < 0 or self.move_every < 0 or any(s < 1 for s in self.join_at):
            raise ConfigError("--standby and --move-every must be >= 0, and --join-at steps "
                              ">= 1")
        if not 0 < self.rebalance_margin < 10 or self.rebalance_window < 1 \
                or not self.rebalance_mib > 0:
            raise ConfigError("rebalance-margin must lie in (0, 10), rebalance-window be "
                              ">= 1 and rebalance-mib > 0")
        if not 0 <= self.window_headroom <= 10:
            raise ConfigError(f"--window-headroom must lie in [0, 10], got "
                              f"{self.window_headroom}")
        if self.checkpoint_every < 0 or not self.checkpoint_seconds >= 0:
            raise ConfigError("--checkpoint-every and --checkpoint-seconds must be >= 0")
        if self.checkpoint_keep < 1:
            raise ConfigError(f"--checkpoint-keep must be >= 1, got {self.checkpoint_keep}")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError(f"--run-name must be a plain folder name, not "
                              f"{self.run_name!r}")
        for name, codec in (("", self.compress), *self.table_compress):
            Compression.parse(codec, self.compress_keep,
                              f"tables.{name}" if name else "--compress")
        for name, codec in (("", self.pull_codec), *self.table_pull_codec):
            pull_codec(codec, f"tables.{name}" if name else "--pull-codec")
        if self.residual_rows < 1 or not self.link_gbps >= 0 or self.pull_cache < 0:
            raise ConfigError("--residual-rows must be >= 1, --link-gbps and --pull-cache "
                              ">= 0")
        self._check_quality_settings()
        if not (0 <= self.delay_jitter < 60):
            raise ConfigError(f"--delay-jitter must lie in [0, 60) seconds, got "
                              f"{self.delay_jitter}")

    def _check_quality_settings(self) -> None:
        """Validation, early stopping, admission and eviction settings."""
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must lie in [0, 1), got {self.val_fraction}")
        if self.val is not None and self.data is None:
            raise ConfigError("--val needs --data (the built-in data keeps its own "
                              "validation rows: --val-fraction)")
        for name in ("eval_every", "early_stop", "min_count", "evict_after"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if (self.eval_every or self.early_stop) and not self.validating:
            raise ConfigError(f"{'--early-stop' if self.early_stop else '--eval-every'} "
                              f"needs validation rows: --val-fraction F or --val PATH")
        if not 0 < self.admit_probability <= 1:
            raise ConfigError(f"--admit-probability must lie in (0, 1], got "
                              f"{self.admit_probability}")

    @property
    def validating(self) -> bool:
        """The job scores validation rows (every epoch, every ``--eval-every`` steps);
        ``--val`` replaces ``--val-fraction``."""
        return self.val is not None or self.val_fraction > 0

    @property
    def admitting(self) -> bool:
        """Keys get rows of their own only once admitted (``--min-count``,
        ``--admit-probability``)."""
        return self.min_count > 0 or self.admit_probability < 1

    @property
    def checkpointing(self) -> bool:
        """Checkpoints are written (periodically, and once training ends)."""
        return self.checkpoint_every > 0 or self.checkpoint_seconds > 0

    @property
    def run_dir(self) -> Path:
        """Where this run's checkpoints go: ``checkpoint-dir/run-name``."""
        return Path(self.checkpoint_dir) / self.run_name

    def slow(self) -> Optional[tuple[int, float]]:
        """``--slow-worker I:FACTOR`` as (worker, factor), or None."""
        return _slow("slow-worker", "worker", self.slow_worker)

    def slow_server_factor(self) -> Optional[tuple[int, float]]:
        """``--slow-server I:FACTOR`` as (server, factor), or None."""
        return _slow("slow-server", "server", self.slow_server)

    def drains(self) -> list[tuple[int, int]]:
        """``--drain-at I:STEP,...`` as (server, step) pairs."""
        out = []
        for item in self.drain_at:
            try:
                server, step = (int(x) for x in item.split(":"))
            except ValueError:
                raise ConfigError(f"--drain-at must be I:STEP (e.g. 1:40), not {item!r}") \
                    from None
            if server < 0 or step < 1:
                raise ConfigError(f"--drain-at {item}: the server must be >= 0, the step >= 1")
            out.append((server, step))
        return out

    def kill(self) -> Optional[tuple[int, int]]:
        """``--kill-at RANK:STEP`` as (world rank, step), or None."""
        if self.kill_at is None:
            return None
        try:
            rank, step = (int(x) for x in self.kill_at.split(":"))
        except ValueError:
            raise ConfigError(f"--kill-at must be RANK:STEP (e.g. 3:40), not "
                              f"{self.kill_at!r}") from None
        if rank < 0 or step < 0:
            raise ConfigError(f"--kill-at {self.kill_at}: the rank and the step must be >= 0")
        return rank, step

    def scheduled_steps(self) -> set[int]:
        """Steps of scheduled joins and drains (every worker pauses before them)."""
        return set(self.join_at) | {step for _, step in self.drains()}

    def sync_of(self, table: str) -> SyncPolicy:
        """The consistency policy of ``table``: its override, else the job's."""
        for name, mode, staleness in self.tables:
            if name == table:
                return SyncPolicy(mode, staleness)
        return SyncPolicy(self.sync, self.staleness)

    def compression_of(self, table: str, rows: int, dim: int) -> Compression:
        """The push compression of ``table`` (``rows`` of ``dim``): its ``[tables.NAME]
        compress``, else ``--compress`` for tables of many rows (embeddings) with a value
        codec that makes their rows smaller (``Compression.for_rows_of``: not ``int8`` of
        LR's one-value rows); dense one-row tables (bias, MLP weights) travel uncoded
        unless named."""
        for name, codec in self.table_compress:
            if name == table:
                return Compression.parse(codec, self.compress_keep, f"tables.{name}")
        return Compression.parse(self.compress if rows > 1 else "none", self.compress_keep,
                                 "--compress").for_rows_of(dim)

    def pull_codec_of(self, table: str, rows: int, dim: int) -> int:
        """The codec of ``table``'s pulls (``rows`` of ``dim``): its ``[tables.NAME]
        pull-codec``, else ``--pull-codec`` for tables of many rows (embeddings) whose rows
        it makes smaller; dense one-row tables are pulled as float32 unless named."""
        for name, codec in self.table_pull_codec:
            if name == table:
                return pull_codec(codec, f"tables.{name}")
        codec = pull_codec(self.pull_codec if rows > 1 else "none", "--pull-codec")
        return codec if shrinks(codec, dim) else RAW

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes``; settings that were left to their per-model default
        follow the copy's model and optimiser."""
        unset = {name: None for name in getattr(self, "_unset", ()) if name not in changes}
        return dataclasses.replace(self, **unset, **changes)


def _slow(flag: str, what: str, value: Optional[str]) -> Optional[tuple[int, float]]:
    """A test aid's ``I:FACTOR`` as (index, factor), or None."""
    if value is None:
        return None
    try:
        index, factor = value.split(":")
        who, slow = int(index), float(factor)
    except ValueError:
        raise ConfigError(f"--{flag} must be I:FACTOR (e.g. 0:3), not {value!r}") from None
    if who < 0 or not 1 <= slow <= 1000:
        raise ConfigError(f"--{flag} {value}: the {what} must be >= 0 and the factor in "
                          f"[1, 1000]")
    return who, slow


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choice(name: str, value: str, allowed: tuple[str, ...], flag: bool = True) -> None:
    if value not in allowed:
        raise ConfigError(f"{_flag(name) if flag else name} must be one of "
                          f"{', '.join(allowed)}, not {value!r}")


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check a TOML value against the field's type (ints are accepted for floats)."""
    kind = {f.name: f.type for f in fields(TrainConfig)}[name]
    if kind == "tuple[int, ...]":
        return _int_list(name, value, where)
    if kind == "tuple[str, ...]":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{where}: {name.replace('_', '-')} must be a list of strings, "
                              f"got {value!r}")
        return tuple(v.strip() for v in items if v.strip())
    want = {"int": int, "float": float, "str": str, "Optional[str]": str, "bool": bool,
            "Optional[float]": float, "Optional[int]": int}[kind]
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{where}: {name.replace('_', '-')} must be {want.__name__}, "
                          f"got {value!r}")
    return value


def _sections(value: Any, where: str, kind: str, allowed: set[str]
              ) -> Iterator[tuple[str, dict]]:
    """The ``[KIND.NAME]`` sections of a config file, each checked for unknown keys."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {kind} must be a table of [{kind}.NAME] sections")
    for name, section in value.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: {kind}.{name} must be a section")
        unknown = set(section) - allowed
        if unknown:
            raise ConfigError(f"{where}: unknown setting '{kind}.{name}.{sorted(unknown)[0]}'")
        yield name, section


def _field_buckets(value: Any, where: str) -> tuple:
    """``[fields.NAME]`` sections with ``buckets = N`` -> (name, N)."""
    if isinstance(value, tuple):                  # already parsed (a TrainConfig field)
        return value
    out = []
    for field_name, section in _sections(value, where, "fields", {"buckets"}):
        buckets = section.get("buckets")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
            raise ConfigError(f"{where}: fields.{field_name}.buckets must be an integer >= 1")
        out.append((field_name, buckets))
    return tuple(out)


def _csv_schema(value: Any, where: str) -> CsvSchema:
    """The ``[csv]`` section: ``label``, ``numeric`` and ``categorical`` column names,
    optional ``delimiter``."""
    if isinstance(value, CsvSchema):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: csv must be a section: [csv] label = \"...\"")
    unknown = set(value) - {"label", "numeric", "categorical", "delimiter"}
    if unknown:
        raise ConfigError(f"{where}: unknown setting 'csv.{sorted(unknown)[0]}'")
    label, delimiter = value.get("label"), value.get("delimiter", ",")
    lists = [value.get(k, []) for k in ("numeric", "categorical")]
    if not isinstance(label, str) or not isinstance(delimiter, str) or not all(
            isinstance(x, list) and all(isinstance(c, str) for c in x) for x in lists):
        raise ConfigError(f"{where}: csv needs label = \"COLUMN\", and numeric and "
                          f"categorical as lists of column names")
    try:
        return CsvSchema(label, tuple(lists[0]), tuple(lists[1]), delimiter)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _table_overrides(value: Any, where: str, base: TrainConfig) -> tuple:
    """``[tables.NAME]`` sections (``sync``, ``staleness``) -> (name, sync, staleness)."""
    if isinstance(value, tuple):                  # already parsed (a TrainConfig field)
        return value
    out = []
    for table, section in _sections(value, where, "tables", {"sync", "staleness",
                                                             "compress", "pull-codec"}):
        staleness = section.get("staleness", base.staleness)
        sync = section.get("sync", base.sync)
        if not isinstance(sync, str) or isinstance(staleness, bool) \
                or not isinstance(staleness, int):
            raise ConfigError(f"{where}: tables.{table}: sync must be a string and "
                              f"staleness an integer")
        out.append((table, sync, staleness))
    return tuple(out)


def _table_codecs(value: Any, where: str, base: TrainConfig, key: str = "compress"
                  ) -> tuple:
    """``key`` (``compress`` or ``pull-codec``) of ``[tables.NAME]`` sections -> (name,
    codec)."""
    if isinstance(value, tuple):                  # already parsed (a TrainConfig field)
        return getattr(base, TABLE_CODECS[key])
    out = []
    for table, section in value.items():
        if isinstance(section, dict) and key in section:
            if not isinstance(section[key], str):
                raise ConfigError(f"{where}: tables.{table}: {key} must be a string")
            out.append((table, section[key]))
    return tuple(out)


# The [tables.NAME] codec settings and the TrainConfig fields that hold them.
TABLE_CODECS = {"compress": "table_compress", "pull-codec": "table_pull_codec"}


def _int_list(name: str, value: Any, where: str) -> tuple[int, ...]:
    """A list of sizes: a TOML array of integers or a string like "64,32"."""
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        out = tuple(int(v) for v in items)
        if any(isinstance(v, (bool, float)) for v in items):
            raise ValueError
        return out
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name.replace('_', '-')} must be a list of integers, "
                          f"got {value!r}") from None


def from_mapping(values: Mapping[str, Any], where: str = "settings",
                 base: TrainConfig = TrainConfig()) -> TrainConfig:
    """``base`` with ``values`` applied; unknown keys are an error naming the key."""
    known = {f.name for f in fields(TrainConfig)}
    changes = {}
    overrides = None
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        if name == "tables":
            overrides = value
        elif name in TABLE_CODECS.values():   # only as a manifest holds it: [tables.NAME]
            if not isinstance(value, tuple):
                raise ConfigError(f"{where}: unknown setting {key!r}")
            changes[name] = value
        elif name == "fields":
            changes[name] = _field_buckets(value, where)
        elif name == "csv":
            changes[name] = _csv_schema(value, where)
        else:
            changes[name] = _coerce(name, value, where)
    merged = _replace(base, where, **changes)
    if overrides is None:
        return merged
    # A section's defaults are the job's own settings; its errors name the file already.
    return _replace(merged, where, tables=_table_overrides(overrides, where, merged),
                    **{field: _table_codecs(overrides, where, merged, key)
                       for key, field in TABLE_CODECS.items()})


def _replace(cfg: TrainConfig, where: str, **changes: Any) -> TrainConfig:
    """``cfg`` with ``changes``; a setting the checks refuse is an error naming ``where``."""
    try:
        return cfg.replace(**changes)
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
