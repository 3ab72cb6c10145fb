"""``mpips inspect PATH``: print a checkpoint's manifest and verify every checksum. No MPI."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import CheckpointError
from . import manifest
from .layout import BEST, MANIFEST, candidates, server_file
from .shardfile import ServerFile


def resolve(path: Path) -> Path:
    """A checkpoint folder, or a run folder's model: the best parameters (``best``) of a
    run that stopped early, else its latest complete checkpoint."""
    if (path / MANIFEST).is_file():
        return path
    found = candidates(path)
    if not found:
        raise CheckpointError(f"{path}: neither a checkpoint nor a run folder with one")
    best = path / BEST
    if (best / MANIFEST).is_file() and \
            manifest.load(found[0])["settings"].get("early_stop", 0) > 0:
        return best
    return found[0]


def verify(step_dir: Path, doc: dict) -> int:
    """Read every dataset of every server file, checking sizes and checksums, in bounded
    pieces; returns the bytes verified."""
    total = 0
    for entry in doc["servers"]:
        with ServerFile(step_dir / server_file(entry["index"]), entry) as f:
            total += sum(f.verify(name) for name in entry["datasets"])
    return total


def inspect(path: str) -> int:
    """Print the summary, then verify; exit status 0 if intact, 1 if not."""
    try:
        step_dir = resolve(Path(path))
        doc = manifest.load(step_dir)
        print(manifest.describe(doc, step_dir), flush=True)
        size = verify(step_dir, doc)
    except CheckpointError as exc:
        print(f"mpips: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"  checksums verified: {size / 2**20:,.1f} MiB in "
          f"{sum(len(s['datasets']) for s in doc['servers'])} datasets")
    return 0
