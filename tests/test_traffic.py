"""Byte accounting, the slow-link aid, the pull cache, the compression settings, and the
traffic benchmark's ratios and the pull cache's ceiling."""
import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from mpips.bench_traffic import jobs, report, table
from mpips.checkpoint.manifest import config_of, settings
from mpips.codecs import BF16, FP16, INT8, RAW, Compression
from mpips.config import TrainConfig, from_mapping, load_toml
from mpips.errors import ConfigError
from mpips.models import TableSpec
from mpips.optim import Optimizer
from mpips.pullcache import PullCache, pull_caches
from mpips.store import shard_bytes
from mpips.traffic import KINDS, Link, Traffic


def test_traffic_counts_per_table_and_kind():
    t = Traffic(["bias", "features"])
    t.add("push_bytes", 1, 100)
    t.add("push_bytes_raw", 1, 300)
    t.add("pull_bytes", 0, 8)
    assert t.progress() == [100, 300, 8, 0]
    m = t.matrix()
    assert m.shape == (2, len(KINDS)) and m[1, 0] == 100 and m[0, 2] == 8


def test_the_link_aid_waits_bytes_over_its_rate():
    """10 MB at 1 Gb/s: 80 ms, within the sleeps' slack; no limit: no wait."""
    link = Link(1.0)
    assert link.seconds(10**7) == pytest.approx(0.08)
    began = time.perf_counter()
    for _ in range(10):
        link.cross(10**6)
    assert 0.079 < time.perf_counter() - began < 0.5 and link.waited > 0.07
    free = Link(0.0)
    free.cross(10**9)
    assert free.waited == 0.0


def test_the_pull_cache_serves_rows_while_fresh_enough():
    """Rows are served while their server applied at most ``bound`` updates since the
    pull; then pulled again. Zero rows are rows like any other."""
    cache = PullCache(2, 100, bound=4)
    keys = np.array([5, 9, 12], np.int64)
    rows = np.array([[0, 0], [1, 2], [3, 4]], np.float32)
    cache.keep(keys, rows, np.array([10, 10, 11]))
    hit, slots = cache.lookup(np.array([9, 5, 12, 77]), np.array([14, 15, 15, 15]))
    assert hit.tolist() == [0, 2]                  # 9 is 4 updates old, 12 is 4; 5 is 5
    out = np.full((4, 2), -1, np.float32)
    cache.serve(slots, hit, out)
    np.testing.assert_array_equal(out[[0, 2]], [[1, 2], [3, 4]])
    hit, _ = cache.lookup(np.array([5]), np.array([10]))
    assert hit.tolist() == [0]


def test_the_workers_own_pushes_age_its_cached_rows_by_half_the_bound():
    """Bound 6 (SSP(3), 2 workers): a row the worker pushed after pulling it is served
    while 3 more updates came; one it pushed twice, or did not push but 7 updates old,
    is pulled again."""
    cache = PullCache(1, 10, bound=6)
    keys = np.array([1, 2, 3], np.int64)
    cache.keep(keys, np.ones((3, 1), np.float32), np.array([10, 10, 10]))
    cache.wrote(np.array([1, 2, 99], np.int64))            # 99: not cached
    cache.wrote(np.array([2], np.int64))
    hit, _ = cache.lookup(keys, np.array([13, 12, 16]))
    assert hit.tolist() == [0, 2]
    hit, _ = cache.lookup(keys, np.array([14, 11, 17]))
    assert hit.tolist() == []


def test_the_pull_cache_keeps_at_most_its_rows_dropping_the_oldest():
    cache = PullCache(1, 3, bound=100)
    for v in range(5):
        cache.keep(np.array([v], np.int64), np.ones((1, 1), np.float32), np.array([v]))
    assert len(cache.rows) == 3 and cache.rows.arrays()[0].tolist() == [2, 3, 4]
    cache.clear()
    assert len(cache.rows) == 0


def test_pull_caches_are_off_under_bsp():
    assert pull_caches(100, [1, 8], [3, 3], True, 2) == [None, None]
    assert pull_caches(0, [1, 8], [3, 3], False, 2) == [None, None]
    caches = pull_caches(100, [1, 8], [3, 2], False, 4)
    assert [c.bound for c in caches] == [12, 8]


def test_compression_settings_per_table(tmp_path):
    """--compress applies to the embedding tables, but not an int8 coding that makes no
    row smaller (LR's one-value rows: 4 bytes either way), [tables.NAME] compress to its
    table (dense ones included); the settings survive a manifest."""
    f = tmp_path / "job.toml"
    f.write_text('compress = "int8"\ncompress-keep = 0.25\n[tables.bias]\ncompress = "fp16"\n'
                 '[tables."mlp0.w"]\ncompress = "topk"\n')
    cfg = load_toml(f)
    assert cfg.compression_of("features", 1000, 17) == Compression(INT8)
    assert cfg.compression_of("weights", 1000, 1) == Compression(RAW)
    assert cfg.compression_of("weights", 1000, 2) == Compression(INT8)
    assert cfg.compression_of("mlp1.b", 1, 64) == Compression(RAW)
    assert cfg.compression_of("bias", 1, 1) == Compression(FP16)
    assert cfg.compression_of("mlp0.w", 1, 4096) == Compression(RAW, 0.25)
    assert cfg.replace(compress="topk+int8").compression_of("weights", 1000, 1) \
        == Compression(RAW, 0.25)
    assert config_of(settings(cfg), "m") == cfg
    f.write_text('[tables.bias]\ncompress = "zstd"\n')
    with pytest.raises(ConfigError, match="tables.bias: compress must be one of"):
        load_toml(f)
    with pytest.raises(ConfigError, match="unknown setting 'table-compress'"):
        from_mapping({"table-compress": [["bias", "fp16"]]})
    for bad in ({"compress_keep": 1.5}, {"residual_rows": 0}, {"link_gbps": -1.0},
                {"pull_cache": -1}, {"pull_codec": "topk"}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


def test_pull_codec_settings_per_table(tmp_path):
    """--pull-codec applies to the embedding tables, [tables.NAME] pull-codec to its table
    (dense ones included); the settings survive a manifest; a bad name is one line naming
    the table."""
    f = tmp_path / "job.toml"
    f.write_text('pull-codec = "int8"\ncompress = "fp16"\n[tables.bias]\npull-codec = "bf16"\n'
                 '[tables.features]\npull-codec = "none"\n')
    cfg = load_toml(f)
    assert cfg.pull_codec_of("weights", 1000, 2) == INT8
    assert cfg.pull_codec_of("weights", 1000, 1) == RAW       # int8: 4 bytes, as float32
    assert cfg.pull_codec_of("features", 1000, 17) == RAW
    assert cfg.pull_codec_of("mlp1.b", 1, 64) == RAW
    assert cfg.pull_codec_of("bias", 1, 1) == BF16
    assert cfg.compression_of("weights", 1000, 1) == Compression(FP16)
    assert config_of(settings(cfg), "m") == cfg
    f.write_text('[tables.bias]\npull-codec = "topk"\n')
    with pytest.raises(ConfigError, match="tables.bias: pull-codec must be one of"):
        load_toml(f)
    f.write_text('[tables.bias]\npull-codec = 8\n')
    with pytest.raises(ConfigError, match="tables.bias: pull-codec must be a string"):
        load_toml(f)


def test_a_coded_mirror_counts_in_a_servers_memory():
    """A table with a pull codec needs its mirror's bytes beside its rows and state."""
    spec, opt = TableSpec("features", 1000, 17), Optimizer("adagrad")
    plain = shard_bytes(spec, 100, opt)
    assert plain == 100 * (17 * 4 * 2 + 4)
    assert shard_bytes(spec, 100, opt, INT8) == plain + 100 * (3 + 17)
    assert shard_bytes(spec, 100, opt, BF16) == plain + 100 * 2 * 17


def test_the_traffic_benchmark_pairs_each_codec_with_none_of_the_same_repeat():
    """A codec's samples/s against none's is the median over repeats of each repeat's
    pair, not a ratio of medians: with none at 300, 100, 200 and lr fp16 at 150, 90, 170
    samples/s the pairs are 0.5, 0.9, 0.85 (median 0.85; the medians' ratio is 0.75).
    Jobs whose codec does not code the rows (LR's int8) are left out."""
    args = argparse.Namespace(rows=2000, servers=1, batch_size=64, embedding_dim=4, keep=0.1,
                              cache_rows=100, repeats=3)
    base = {"push": 10.0, "push_raw": 20.0, "last": 1.0, "keys": 2.0, "keys_raw": 8.0,
            "pull": 10.0, "pull_raw": 20.0, "auc": 0.7}
    runs = {key: [{**base, "samples_per_s": r} for r in (300.0, 100.0, 200.0)]
            for key, _, _ in jobs(args)}
    runs[("codec", "lr", "fp16", 0.0, "none")] = [{**base, "samples_per_s": r}
                                                 for r in (150.0, 90.0, 170.0)]
    rec = table(runs, args, 4)
    assert rec["codec_rate_vs_none"]["lr fp16"] == pytest.approx(0.85)
    assert rec["codec_rate_vs_none"]["fm int8"] == 1.0
    assert "lr int8" not in rec["codec_rate_vs_none"]          # float32 rows: none again
    assert "lr topk+int8" not in rec["codec_rate_vs_none"]     # topk again
    assert rec["slowest_codec_rate_vs_none"] == pytest.approx(0.85)
    assert "lr fp16 0.85" in report(rec)


def test_the_pull_cache_ceiling_counts_what_the_cache_serves():
    """benchmarks/pull_cache_ceiling.py on one key that two workers pull and push in
    turns (bound 6): the cache's rule (own pushes age the row by 3, each push is a
    version) serves every second pull; never aging for own pushes, three of every four."""
    path = Path(__file__).parents[1] / "benchmarks" / "pull_cache_ceiling.py"
    spec = importlib.util.spec_from_file_location("pull_cache_ceiling", path)
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    batches = [[np.array([7], np.int64)] * 8 for _ in range(2)]
    assert ceiling.served_share(batches, 6, 100, own_writes=True) == 0.5
    assert ceiling.served_share(batches, 6, 100, own_writes=False) == 0.75
