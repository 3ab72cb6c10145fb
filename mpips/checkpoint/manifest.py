"""The manifest of a checkpoint: what was saved, by whom, where every worker stood. Pure.

It is JSON, so reading one cannot run code, and it is written last, so a folder with a
valid manifest is complete.
It holds the step, the settings, the tables and the partition map's shape, one entry per
server file (size and per-dataset checksums), and one per worker (its completed steps,
samples, summed loss and random state): enough to continue exactly where the job stopped.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional, Sequence

from ..config import TrainConfig, from_mapping
from ..data.schedule import worker_entries
from ..errors import CheckpointError, ConfigError
from ..models import TableSpec
from .layout import MANIFEST, complete_steps, resume_candidates, server_file

FORMAT = "mpips-checkpoint"
VERSION = 1
# Settings a resumed job may change; any other difference is refused.
MAY_CHANGE = frozenset({"servers", "pull", "progress_seconds", "metrics_out", "checkpoint_dir",
                        "checkpoint_every", "checkpoint_seconds", "checkpoint_keep", "resume",
                        "run_name", "slow_worker", "delay_jitter", "standby", "rebalance",
                        "rebalance_margin", "rebalance_window", "rebalance_mib",
                        "window_headroom", "slow_server", "move_every", "join_at", "kill_at",
                        "drain_at", "compress", "compress_keep", "table_compress",
                        "residual_rows", "link_gbps", "pull_cache", "pull_codec",
                        "table_pull_codec"})


# What a manifest written before a setting existed meant by its absence: the behaviour of
# that time (no validation, no early stopping, every key its own row, no eviction).
FORMER = {"val": None, "val_fraction": 0.0, "eval_every": 0, "early_stop": 0,
          "min_count": 0, "admit_probability": 1.0, "evict_after": 0}


def settings(cfg: TrainConfig) -> dict:
    """The settings as JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_of(values: dict, where: str) -> TrainConfig:
    """The settings a manifest holds (``settings``'s inverse) as a ``TrainConfig``; a
    setting it lacks has its default, one this mpips does not know is an error."""
    values = {**{k: v for k, v in FORMER.items() if k not in values}, **values}
    items = {k: tuple(tuple(x) for x in v)
             if k in ("tables", "fields", "table_compress", "table_pull_codec") else v
             for k, v in values.items() if v is not None}
    try:
        return from_mapping(items, where)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def build(step: int, final: bool, cfg: TrainConfig, specs: Sequence[TableSpec],
          slots: Sequence[str], ring: dict, servers: Sequence[dict], workers: Sequence[dict],
          seconds: float, extra: Optional[dict] = None) -> dict:
    """The manifest of a checkpoint after ``step`` steps (``final``: training had ended);
    ``extra`` adds keys (``validation``: the early-stopping history)."""
    return {**(extra or {}),"format": FORMAT, "version": VERSION, "step": step, "final": final,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": seconds,
            "settings": settings(cfg),
            "tables": [{"name": s.name, "rows": s.rows, "dim": s.dim, "state": list(slots)}
                       for s in specs],
            "ring": ring, "servers": sorted(servers, key=lambda s: s["index"]),
            "workers": sorted(workers, key=lambda w: w["index"])}


_REQUIRED = {"format": str, "version": int, "step": int, "final": bool, "settings": dict,
             "tables": list, "ring": dict, "servers": list, "workers": list}
_SERVER = {"index": int, "file": str, "bytes": int, "datasets": dict}
_WORKER = {"index": int, "step": int, "finished": bool, "samples": int, "loss": (int, float)}


def _entries_ok(entries: list, keys: dict) -> bool:
    return all(isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in keys.items())
               for e in entries)


def load(step_dir: Path) -> dict:
    """Read and check a manifest; anything unexpected is a ``CheckpointError`` naming it."""
    path = step_dir / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (the checkpoint is incomplete)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mpips checkpoint manifest")
    for key, kind in _REQUIRED.items():
        if not isinstance(doc.get(key), kind):
            raise CheckpointError(f"{path}: '{key}' is missing or not a {kind.__name__}")
    if doc["version"] != VERSION:
        raise CheckpointError(f"{path}: format version {doc['version']}, this mpips reads "
                              f"{VERSION}")
    for part, keys in (("servers", _SERVER), ("workers", _WORKER)):
        if not _entries_ok(doc[part], keys):
            raise CheckpointError(f"{path}: an entry of '{part}' lacks one of "
                                  f"{', '.join(keys)}")
    n = doc["ring"].get("servers")
    if not isinstance(n, int) or [s.get("index") for s in doc["servers"]] != list(range(n)) \
            or any(s.get("file") != server_file(s["index"]) for s in doc["servers"]):
        raise CheckpointError(f"{path}: the server entries do not match the ring")
    return doc


def check_settings(doc: dict, cfg: TrainConfig, where: str) -> None:
    """Refuse to resume with settings that change what the saved state means. A setting
    the checkpoint lacks (written before the setting existed) had its default value."""
    now = settings(cfg)
    then = {**settings(TrainConfig()), **FORMER, **doc["settings"]}
    for key in sorted(set(now) | set(then)):
        if key in MAY_CHANGE or now.get(key) == then.get(key):
            continue
        flag = "--" + key.replace("_", "-")
        raise ConfigError(f"{where}: the checkpoint was written with {flag} "
                          f"{then.get(key)!r}, this job has {now.get(key)!r}; resume with the "
                          f"same value (only the number of servers and run-time options may "
                          f"change)")


def describe(doc: dict, step_dir: Path) -> str:
    """A human-readable summary for ``mpips inspect``."""
    cfg = doc["settings"]
    lines = [f"checkpoint {step_dir}",
             f"  step {doc['step']}{' (final)' if doc['final'] else ''}, written "
             f"{doc.get('created', '?')}, after {doc.get('seconds', 0.0):.1f}s of training",
             f"  model {cfg.get('model')} + {cfg.get('optimizer')} (lr {cfg.get('lr')}), "
             f"batch {cfg.get('batch_size')}, {cfg.get('epochs')} epoch(s), sync "
             f"{cfg.get('sync')}, data {cfg.get('data') or 'built-in'}",
             f"  ring: {doc['ring']['servers']} server(s)"
             + (f" ({doc['ring']['standby']} of them standby)" if doc['ring'].get('standby')
                else "")
             + f", {doc['ring'].get('partitions')} partitions, placement epoch "
             f"{doc['ring'].get('epoch', 0)}"]
    for t in doc["tables"]:
        state = ", ".join(t["state"]) or "none"
        lines.append(f"  table {t['name']}: {t['rows']:,} rows x {t['dim']}, state: {state}")
    for s in doc["servers"]:
        lines.append(f"  {s['file']}: {s['bytes']:,} bytes, {len(s['datasets'])} datasets")
    for w in doc["workers"]:
        state = "finished" if w["finished"] else f"at step {w['step']}"
        lines.append(f"  worker {w['index']}: {state}, {w['samples']:,} samples")
    return "\n".join(lines)


def positions(doc: dict) -> list[int]:
    """Each worker's completed steps."""
    return [int(w["step"]) for w in doc["workers"]]


def check_setup(cfg: TrainConfig, n_workers: int, train_range: tuple[int, int]) -> None:
    """Before any rank starts: a resume must find a checkpoint that fits this job (with
    another number of workers, one whose workers can be regrouped); a new run with
    checkpoints must not mix its own with an earlier run's."""
    if cfg.resume is not None:
        found = resume_candidates(cfg.resume, cfg.run_dir)
        where = cfg.run_dir if cfg.resume == "latest" else cfg.resume
        if not found:
            raise CheckpointError(f"--resume: no complete checkpoint in {where}")
        errors = []
        for path in found:
            try:
                doc = load(path)
            except CheckpointError as exc:
                errors.append(str(exc))
                continue
            check_settings(doc, cfg, str(path))
            try:
                worker_entries(doc["workers"], cfg, train_range, n_workers)
            except CheckpointError as exc:
                raise CheckpointError(f"{path}: {exc}") from None
            return
        raise CheckpointError(f"--resume: no readable checkpoint in {where}: {errors[0]}")
    if cfg.checkpointing and complete_steps(cfg.run_dir):
        raise ConfigError(f"{cfg.run_dir} holds checkpoints of an earlier run: add --resume "
                          f"to continue it, or choose another --run-name or --checkpoint-dir")
