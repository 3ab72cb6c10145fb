"""Training data: sources of CTR rows, hashed into table keys, cut into batches. No MPI.

A source yields ``Batch`` objects for any row range, so each worker reads or generates only
its own share (``share``), and any batch of it without reading the ones before, so an
epoch may visit them in a shuffled order (``epoch_order``). Keys are already hashed into
the table by ``FieldHashing``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from .hashing import FieldHashing


@dataclass
class Batch:
    """Rows of sparse features: ``keys`` and ``vals`` are (n, fields), ``labels`` (n,)."""

    keys: np.ndarray             # int64 table rows
    vals: np.ndarray             # float32 feature values (1 for categorical)
    labels: np.ndarray           # float32 0/1
    true_p: Optional[np.ndarray] = None  # the generator's click probability, when known

    def __len__(self) -> int:
        return int(self.labels.size)

    @staticmethod
    def concat(batches: Sequence["Batch"]) -> "Batch":
        """One batch of the rows of ``batches`` in turn (the first itself if it is alone)."""
        if len(batches) == 1:
            return batches[0]
        probs = [b.true_p for b in batches]
        return Batch(np.concatenate([b.keys for b in batches]),
                     np.concatenate([b.vals for b in batches]),
                     np.concatenate([b.labels for b in batches]),
                     None if any(p is None for p in probs) else np.concatenate(probs))


class Source(Protocol):
    """Rows ``0..rows-1`` of a dataset; train/test splits are row ranges of it."""

    fields: int
    hashing: "FieldHashing"

    @property
    def rows(self) -> int: ...

    @property
    def bad_lines(self) -> int:
        """Malformed lines skipped so far (text read with ``--on-bad-line skip``)."""

    def batches(self, start: int, stop: int, batch_size: int,
                order: Optional[Iterable[int]] = None) -> Iterator[Batch]:
        """Batches of rows [start, stop): those numbered ``order`` (default all, in turn);
        batch b is rows ``start + b*batch_size`` on, whatever the order."""


def share(start: int, stop: int, index: int, parts: int) -> tuple[int, int]:
    """The contiguous row range ``index`` of ``parts`` near-equal shares of [start, stop)."""
    n = stop - start
    return start + n * index // parts, start + n * (index + 1) // parts


def n_batches(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


def batch_of(shares: Sequence[tuple[int, int]], rows: tuple[int, int], batch_size: int
             ) -> Optional[tuple[int, int]]:
    """(worker, batch index) where ``rows`` are one whole batch of that worker's share
    (batch b is rows ``lo + b*batch_size`` on), else None."""
    for w, (lo, hi) in enumerate(shares):
        b, off = divmod(rows[0] - lo, batch_size)
        if lo <= rows[0] < hi and off == 0 and rows[1] == min(rows[0] + batch_size, hi):
            return w, b
    return None


SHUFFLE_BLOCK_ROWS = 1 << 16    # rows of one block of batches shuffled together


def shuffle_block(batch_size: int) -> int:
    """Batches per shuffled block: one contiguous read of about ``SHUFFLE_BLOCK_ROWS``."""
    return max(1, SHUFFLE_BLOCK_ROWS // batch_size)


def pick_runs(picks: Iterable[int], span: int) -> Iterator[tuple[list[int], int, int]]:
    """Consecutive ``picks`` that lie within ``span`` batches of each other (a block of a
    shuffled epoch, or a run in order), as (run, lowest, highest): a reader fetches the
    rows of a run at once, then serves its batches in the order asked."""
    run: list[int] = []
    first = last = 0
    for b in map(int, picks):
        if run and max(last, b) - min(first, b) >= span:
            yield run, first, last
            run = []
        first, last = (min(first, b), max(last, b)) if run else (b, b)
        run.append(b)
    if run:
        yield run, first, last


def epoch_order(n_batches: int, epoch: int, seed: int, worker: int, block: int = 1
                ) -> np.ndarray:
    """A worker's batch indices for one epoch, seeded by (seed, worker, epoch): blocks of
    ``block`` consecutive batches in a random order, and the batches of each block in a
    random order, so that a reader of files fetches a block at once; never the identity
    when there are two batches or more."""
    rng = np.random.default_rng([seed, worker, epoch, 0x5EED])
    starts = rng.permutation(np.arange(0, n_batches, block))
    order = np.concatenate([s + rng.permutation(min(block, n_batches - s)) for s in starts]) \
        if n_batches else np.empty(0, dtype=np.int64)
    if n_batches > 1 and (order == np.arange(n_batches)).all():
        order = np.roll(order, 1)
    return order
