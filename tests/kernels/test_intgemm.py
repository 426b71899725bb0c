"""int_matmul is bit-exact against an int64 reference for all shapes, dtypes and extreme values."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgert.kernels.intgemm import PackedB, _plan, int_matmul

RANGES = {np.int8: (-128, 127), np.uint8: (0, 255), np.int16: (-32768, 32767)}


def _fill(rng, shape, dtype, mode):
    lo, hi = RANGES[dtype]
    if mode == "random":
        return rng.integers(lo, hi + 1, shape).astype(dtype)
    if mode == "min":
        return np.full(shape, lo, dtype)
    if mode == "max":
        return np.full(shape, hi, dtype)
    return rng.choice(np.array([lo, hi], dtype), shape)      # extremes of both signs


dtypes = st.sampled_from([np.int8, np.uint8, np.int16])
modes = st.sampled_from(["random", "min", "max", "extremes"])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5000), st.integers(1, 6), dtypes, dtypes, modes, modes,
       st.integers(0, 2 ** 32 - 1))
def test_int_matmul_exact(m, k, n, da, db, ma, mb, seed):
    rng = np.random.default_rng(seed)
    a = _fill(rng, (m, k), da, ma)
    b = _fill(rng, (k, n), db, mb)
    got = int_matmul(a, b)
    want = a.astype(np.int64) @ b.astype(np.int64)
    assert got.dtype in (np.int32, np.int64)
    if np.abs(want).max(initial=0) >= 2 ** 31:
        assert got.dtype == np.int64
    np.testing.assert_array_equal(got.astype(np.int64), want)


def test_int8_worst_case_multi_block():
    # K = 3000 > 1024: three float32 blocks, every product -128·-128
    a = np.full((3, 3000), -128, np.int8)
    b = np.full((3000, 2), -128, np.int8)
    assert _plan(3000, 128, 128) == (np.float32, 1024)
    got = int_matmul(a, b)
    assert got.dtype == np.int32 and (got == 3000 * 16384).all()


def test_batch_dims_packed_and_1d():
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (2, 3, 4, 70)).astype(np.int8)
    b = rng.integers(-127, 128, (70, 5)).astype(np.int8)
    pb = PackedB(b)
    want = a.astype(np.int64) @ b.astype(np.int64)
    np.testing.assert_array_equal(int_matmul(a, pb), want)
    np.testing.assert_array_equal(int_matmul(a[0, 0, 0], pb), want[0, 0, 0])
    assert int_matmul(np.zeros((2, 70), np.int8), pb).tolist() == [[0] * 5] * 2


def test_int16_uses_float64_and_int64():
    a = np.full((2, 5000), -32768, np.int16)
    b = np.full((5000, 3), -32768, np.int16)
    assert _plan(5000, 32768, 32768)[0] is np.float64
    got = int_matmul(a, b)
    assert got.dtype == np.int64 and (got == 5000 * 2 ** 30).all()


def test_rejects_bad_inputs():
    with pytest.raises(ValueError):
        int_matmul(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.int8))
    with pytest.raises(ValueError):
        int_matmul(np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8))
    with pytest.raises(ValueError):
        int_matmul(np.zeros((2, 3), np.int8), np.zeros((3, 2), np.int32))
