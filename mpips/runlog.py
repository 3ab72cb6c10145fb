"""A training run's history, read back from its ``--metrics-out`` JSON lines and, where
they are still there, its checkpoints' manifests. Pure (no MPI, no plotting).

A resumed run appends to the same file: its progress records' ``seconds`` start again
from zero after a ``stopped`` record, so ``elapsed`` adds the earlier parts' time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .checkpoint import manifest
from .checkpoint.layout import complete_steps
from .errors import CheckpointError, DataError


@dataclass
class CheckpointPoint:
    """One checkpoint of the run: its step, samples trained, seconds of training, the
    mean training loss so far, and its folder."""

    step: int
    samples: int
    seconds: float
    loss: float
    path: Path


@dataclass
class Run:
    """One metrics file: its progress records in order, the final record (if the run
    ended), and the checkpoints its final record leads to."""

    name: str
    path: Path
    progress: list[dict] = field(default_factory=list)
    final: Optional[dict] = None
    checkpoints: list[CheckpointPoint] = field(default_factory=list)
    settings: dict = field(default_factory=dict)   # of its newest checkpoint, if any

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(samples, values) of progress records that carry ``key`` (a number)."""
        pts = [(r["samples"], r[key]) for r in self.progress
               if isinstance(r.get(key), (int, float))]
        return (np.array([p[0] for p in pts], dtype=np.float64),
                np.array([p[1] for p in pts], dtype=np.float64))

    def elapsed(self) -> np.ndarray:
        """Seconds since the run began at each progress record, across resumes."""
        out, offset, last = [], 0.0, 0.0
        for r in self.progress:
            seconds = float(r.get("seconds") or 0.0)
            if seconds < last:               # a resumed part: its clock restarted
                offset += last
            last = seconds
            out.append(offset + seconds)
        return np.array(out, dtype=np.float64)

    def interval_rates(self) -> tuple[np.ndarray, np.ndarray]:
        """(elapsed seconds, samples/s over the interval before each progress record)."""
        t = self.elapsed()
        s = np.array([r["samples"] for r in self.progress], dtype=np.float64)
        if t.size < 2:
            return t, np.array([r.get("samples_per_s") or 0.0 for r in self.progress])
        dt, ds = np.diff(t), np.diff(s)
        keep = dt > 0
        return t[1:][keep], ds[keep] / dt[keep]

    def per_server(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(elapsed seconds, values (records x servers)) of a per-server list ``key`` in
        the progress records that carry it."""
        t = self.elapsed()
        rows = [(t[i], r[key]) for i, r in enumerate(self.progress)
                if isinstance(r.get(key), list) and r[key]]
        if not rows:
            return np.empty(0), np.empty((0, 0))
        width = max(len(v) for _, v in rows)
        vals = np.full((len(rows), width), np.nan)
        for i, (_, v) in enumerate(rows):
            vals[i, :len(v)] = [np.nan if x is None else x for x in v]
        return np.array([r[0] for r in rows]), vals

    def steps_per_sample(self) -> Optional[float]:
        """Steps of the busiest worker per sample trained (final record), to put steps
        beside samples; None if unknown."""
        f = self.final or {}
        steps, samples = f.get("worker_steps"), f.get("samples")
        if not steps or not samples:
            return None
        return max(steps) / samples


def read_run(path: str | Path) -> Run:
    """A metrics file; an unreadable or empty one is an error naming it (and the line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such metrics file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None
    run = Run(path.stem, path)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("event"), str):
            raise DataError(f"{path}:{number}: not a metrics record (a JSON object with "
                            f"an 'event')")
        if rec["event"] == "progress":
            if not isinstance(rec.get("samples"), (int, float)):
                raise DataError(f"{path}:{number}: a progress record without 'samples'")
            run.progress.append(rec)
        elif rec["event"] == "final":
            run.final = rec
    if not run.progress and run.final is None:
        raise DataError(f"{path}: no progress or final records (was it written by "
                        f"'mpips train --metrics-out'?)")
    add_checkpoints(run)
    return run


def add_checkpoints(run: Run) -> None:
    """The manifests of the run's checkpoints, if its final record names one whose run
    folder is still there (unreadable ones are left out)."""
    named = (run.final or {}).get("checkpoint")
    if not named:
        return
    for step_dir in reversed(complete_steps(Path(named).parent)):
        try:
            doc = manifest.load(step_dir)
        except CheckpointError:
            continue
        samples = sum(int(w["samples"]) for w in doc["workers"])
        loss = sum(float(w["loss"]) for w in doc["workers"]) / max(samples, 1)
        run.checkpoints.append(CheckpointPoint(int(doc["step"]), samples,
                                               float(doc.get("seconds", 0.0)), loss, step_dir))
        run.settings = doc["settings"]
