"""``python -m mpips.kernels``: compile every kernel once into numba's on-disk cache.

Run once before starting many ranks: ranks compiling cold at the same moment each take
seconds, while loading from the cache takes a fraction of that.
"""
import time

import numpy as np

from ..data.criteo import CriteoFormat
from ..data.csvdata import CsvFormat, CsvSchema
from ..data.libsvm import LibSVMFormat
from ..data.parse import parse_bytes
from .fm import add_field_grads, field_inputs, fm_grad, fm_logits
from .init import normal_rows
from .keymap import warm_up as warm_residuals
from .lr import lr_grad, lr_logits
from .optim import adagrad_rows, adam_rows, ftrl_rows, sgd_rows
from .quant import half_code, half_decode, int8_code, int8_decode
from .sparse import (accumulate_rows, add_partition_counts, gather_rows, gather_scatter_rows,
                     release_slots, scatter_rows, segment_sum, unique_inverse)

t0 = time.perf_counter()
keys = np.array([3, 1, 3], dtype=np.int64)
uniq, inv = unique_inverse(keys)
rows = np.ones((3, 1), dtype=np.float32)
summed = segment_sum(inv, rows, uniq.size)
slot = np.zeros(4, dtype=np.int32)
touched = np.empty(3, dtype=np.int64)
n = accumulate_rows(slot, keys, rows, touched, np.empty((3, 1), dtype=np.float32), 0)
release_slots(slot, touched[:n])
add_partition_counts(np.zeros(8), keys, 3, 8, 2.0)
table = np.zeros((4, 1), dtype=np.float32)
out = np.empty((2, 1), dtype=np.float32)
gather_rows(table, uniq, out)
scatter_rows(out, np.arange(2, dtype=np.int64), out.copy())
gather_scatter_rows(table, uniq, np.arange(2, dtype=np.int64), out)
rates = np.full(table.shape[1], 0.1)
sgd_rows(table, uniq, summed, rates, 0.0)
adagrad_rows(table, np.zeros_like(table), uniq, summed, rates, 0.0, 1e-10)
adam_rows(table, np.zeros_like(table), np.zeros_like(table), uniq, summed, rates, 0.0, 0.9,
          0.999, 1e-8, 1)
ftrl_rows(table, np.zeros_like(table), np.zeros_like(table), uniq, summed, rates, 1.0, 0.0,
          0.0)
inv2 = inv[:2].reshape(1, 2)
vals = np.ones((1, 2), dtype=np.float32)
lr_logits(out, 0.0, inv2, vals)
lr_grad(out, 0.0, inv2, vals, np.ones(1, dtype=np.float32), 1.0)
fm_rows = np.zeros((4, 3), dtype=np.float32)
normal_rows(fm_rows, uniq, 1, 0.01, np.uint64(1))
fm_grad(fm_rows, 0.0, inv2, vals, np.ones(1, dtype=np.float32), 1.0)
fm_logits(fm_rows, 0.0, inv2, vals)
add_field_grads(field_inputs(fm_rows, inv2, vals), inv2, vals, np.zeros_like(fm_rows))
row = "\t".join(["1", *["-5"] * 13, *["a1"] * 26]) + "\n"
parse_bytes(CriteoFormat(), row.encode(), 0, "warm-up", 1)
parse_bytes(LibSVMFormat(2, ffm=True), b"1 0:2:1.123456789012345678 1:3:1\n", 0, "warm-up", 1)
parse_bytes(CsvFormat(CsvSchema("y", ("a",), ("b",)), ["y", "a", "b"]),
            b"1,2.123456789012345678,x\n", 0, "warm-up", 1)
warm_residuals()
coded = np.empty((2, 4), np.uint8)
int8_code(out.copy(), coded, True, np.arange(2))
int8_decode(coded, out.copy())
for brain in (False, True):
    half_code(out.copy(), coded[:, :2].copy().view(np.uint16), True, brain, np.arange(2))
half_decode(np.zeros((2, 1), np.uint16), out.copy())
print(f"mpips: numba kernels ready in {time.perf_counter() - t0:.1f}s")
