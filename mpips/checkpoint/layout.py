"""Where checkpoints live and how files are written so that a crash never leaves one
that looks complete. No MPI.

``DIR/RUN/step-N/`` holds ``server-I.h5`` per server and ``manifest.json``; a checkpoint
is written into ``step-N.partial/`` and renamed when its manifest is in place, then
``DIR/RUN/LATEST`` is pointed at it. Folders without a manifest are never trusted.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..durable import atomic_write, fsync_path

MANIFEST = "manifest.json"
LATEST = "LATEST"
_STEP = re.compile(r"^step-(\d+)$")


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def partial_dir(run_dir: Path, step: int) -> Path:
    """Where the servers write a checkpoint before it is complete."""
    return run_dir / (step_name(step) + ".partial")


BEST = "best"


def best_partial(run_dir: Path) -> Path:
    """Where the servers write the best parameters (early stopping) before they are
    complete; ``publish_best`` makes the folder ``best``."""
    return run_dir / (BEST + ".partial")


def publish_best(run_dir: Path, source: Path, files: set[str],
                 doc: Any = None) -> Path:
    """Make ``files`` of ``source`` the run's ``best`` checkpoint: a written
    ``best.partial`` is renamed; a published step folder is linked file by file (copied
    where links fail), so that pruning old steps does not take the best with them. The
    old ``best`` is replaced only once the new one is complete; ``LATEST`` is untouched
    (a resume goes on from the newest step, not from the best). ``doc``: the manifest
    to write into it first (for a linked folder)."""
    partial = best_partial(run_dir)
    if source != partial:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in sorted(files - {MANIFEST}):
            try:
                os.link(source / name, partial / name)
            except OSError:
                shutil.copy2(source / name, partial / name)
    if doc is not None:
        write_json(partial / MANIFEST, doc)
    for stray in partial.iterdir():
        if stray.name not in files:
            stray.unlink()
    final, old = run_dir / BEST, run_dir / (BEST + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    fsync_path(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return final


def server_file(index: int) -> str:
    return f"server-{index:04d}.h5"


def write_json(path: Path, doc: Any) -> None:
    atomic_write(path, (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode())


def complete_steps(run_dir: Path) -> list[Path]:
    """Folders ``step-N`` that hold a manifest, newest first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir()
             if (m := _STEP.match(p.name)) and (p / MANIFEST).is_file()]
    return [p for _, p in sorted(found, reverse=True)]


def candidates(run_dir: Path) -> list[Path]:
    """Checkpoints to try on resume, best first: the one ``LATEST`` names, then every
    other complete one, newest first."""
    steps = complete_steps(run_dir)
    try:
        named = run_dir / (run_dir / LATEST).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return steps
    return [named] + [p for p in steps if p != named] if named in steps else steps


def publish(run_dir: Path, partial: Path, step: int, keep: int, files: set[str]) -> Path:
    """Make a written checkpoint (``files`` inside ``partial``, manifest among them) the
    latest: drop anything else a crashed attempt left in the folder, rename it, point
    ``LATEST`` at it. Then delete the checkpoints of later steps -- a job resumed from an
    older checkpoint has left that timeline, and they must not outrank this one -- all but
    the newest ``keep``, and leftover ``.partial`` folders."""
    for stray in partial.iterdir():
        if stray.name not in files:
            stray.unlink()
    final = run_dir / step_name(step)
    if final.exists():                # a stale one from before a resume: replaced
        shutil.rmtree(final)
    os.replace(partial, final)
    fsync_path(run_dir)
    atomic_write(run_dir / LATEST, (final.name + "\n").encode())
    steps = complete_steps(run_dir)
    later = steps[:steps.index(final)]
    for old in later + steps[steps.index(final) + keep:]:
        shutil.rmtree(old, ignore_errors=True)
    for p in run_dir.glob("step-*.partial"):
        shutil.rmtree(p, ignore_errors=True)
    return final


def resume_candidates(resume: str, run_dir: Path) -> list[Path]:
    """Checkpoints ``--resume`` may use, best first: ``latest`` means those of this run;
    a path names a run folder (its checkpoints) or one checkpoint folder (only it)."""
    if resume == "latest":
        return candidates(run_dir)
    path = Path(resume)
    if (path / MANIFEST).is_file() or path.name.startswith("step-"):
        return [path]
    return candidates(path)
