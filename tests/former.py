"""The training defaults from before validation, early stopping and feature admission were
on (issue 14). Tests of other things (sample counts, NumPy references, resumes) keep them,
so that what they check does not depend on those defaults."""
from mpips.config import TrainConfig

FORMER = dict(epochs=2, val_fraction=0.0, min_count=0, l2=0.0, lr=0.05)
FLAGS = ["--epochs", "2", "--val-fraction", "0", "--min-count", "0", "--l2", "0"]


def former(**kw) -> TrainConfig:
    """A ``TrainConfig`` with the former defaults under ``kw``."""
    return TrainConfig(**{**FORMER, **kw})
