"""How many pulled rows can the pull cache serve within its bound on the built-in data?

The pull cache (``mpips/pullcache.py``) serves a row again while its server has applied at
most ``bound`` = staleness × workers updates since it was pulled. This drives the real
``PullCache`` over the built-in data's batches on a schedule with no drift, the one that
ages cached rows least: workers take turns, each pulling its batch's unique keys and then
pushing them, every push one server version. Two rules are measured: the cache's own,
where each of the worker's own pushes of a cached key ages its row by half the bound
(read-your-writes within a step), and the ceiling of any cache within the bound, which
never ages a row for its own pushes (at stop 20 such a cache cut 34 % of the pull bytes
and cost 0.016-0.037 AUC).
The share served is the share of pull bytes saved (a row pulled or served is the same
bytes for every key). No MPI.

    .venv/bin/python benchmarks/pull_cache_ceiling.py --workers 2 --staleness 3
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from mpips.data.synthetic import SyntheticCTR
from mpips.pullcache import PullCache


def served_share(batches: list[list[np.ndarray]], bound: int, capacity: int,
                 own_writes: bool) -> float:
    """The share of the rows the workers' batches need that their caches serve."""
    caches = [PullCache(1, capacity, bound) for _ in batches]
    if not own_writes:
        for cache in caches:
            cache.own = 0
    version, needed, served = 0, 0, 0
    for step in range(min(len(b) for b in batches)):
        for cache, worker in zip(caches, batches):
            keys = worker[step]
            versions = np.full(keys.size, version, dtype=np.int64)
            hit, _ = cache.lookup(keys, versions)
            miss = np.setdiff1d(np.arange(keys.size), hit)
            cache.keep(keys[miss], np.zeros((miss.size, 1), np.float32), versions[miss])
            cache.wrote(keys)
            needed, served, version = needed + keys.size, served + hit.size, version + 1
    return served / needed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="built-in rows, of which "
                        "80 %% are the workers' training shares (default 200,000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--staleness", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--cache-rows", type=int, default=1 << 18)
    args = parser.parse_args()
    data = SyntheticCTR(rows=args.rows)
    share = int(0.8 * args.rows) // args.workers
    batches = [[np.unique(b.keys) for b in data.batches(w * share, (w + 1) * share,
                                                         args.batch_size)]
               for w in range(args.workers)]
    bound = args.staleness * args.workers
    record = {"bound": bound, **{name: served_share(batches, bound, args.cache_rows, own)
                                 for name, own in (("served", True), ("ceiling", False))}}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
