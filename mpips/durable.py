"""Durable file writes: fsync, and replace-by-rename so readers never see half a file."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (new names, renames), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(path: Path) -> Path:
    """Where ``path`` is written before it is complete (hidden, beside it)."""
    return path.with_name(f".{path.name}.tmp")


def commit(path: Path) -> None:
    """Put the finished ``tmp_name(path)`` in place: fsync it, rename it over ``path``,
    fsync the folder. Readers see the old file or the whole new one, never a part."""
    tmp = tmp_name(path)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name (see ``commit``)."""
    tmp_name(path).write_bytes(data)
    commit(path)
