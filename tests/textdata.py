"""Small seeded text data sets in each format, for the reader, prep and training tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

KAGGLE = Path(__file__).resolve().parents[2] / "shared/data/criteo_kaggle/criteo_kaggle_dev.tsv"


def criteo_text(rows: int, seed: int = 0) -> str:
    """Criteo TSV lines with some empty fields; labels follow a few of the features."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        counts = [str(c) if c >= 0 else "" for c in rng.integers(-1, 40, 13)]
        cats = [f"{c:08x}" if c else "" for c in rng.integers(0, 30, 26)]
        label = int(rng.random() < 0.2 + 0.02 * (int(counts[0] or 0) % 20))
        out.append("\t".join([str(label), *counts, *cats]) + "\n")
    return "".join(out)


def libsvm_text(rows: int, seed: int = 0) -> str:
    """libSVM lines of 1 to 6 features, -1/+1 labels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        idx = rng.choice(200, rng.integers(1, 7), replace=False)
        label = "+1" if rng.random() < 0.1 + 0.004 * idx.min() else "-1"
        out.append(" ".join([label, *(f"{i}:{rng.random():.3f}" for i in idx)]) + "\n")
    return "".join(out)


def write(folder: Path, name: str, text: str) -> Path:
    path = Path(folder) / name
    path.write_text(text)
    return path
