"""requant vs a straightforward pure-Python transcription of gemmlowp / TFLite reference functions."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings, strategies as st

from edgert.kernels.requant import (quantize_multiplier, requantize, rounding_divide_by_pot,
                                    sat_rounding_doubling_high_mul)

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def ref_srdhm(a: int, b: int) -> int:
    if a == I32_MIN and b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    t = ab + nudge
    q = abs(t) // (1 << 31)             # C division truncates toward zero
    return q if t >= 0 else -q


def ref_rdbpot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def ref_mbqm(x: int, m0: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    x = min(max(x << left, I32_MIN), I32_MAX)   # edgert saturates where C overflows
    return ref_rdbpot(ref_srdhm(x, m0), right)


def ref_quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = math.floor(q * (1 << 31) + 0.5)   # std::round, q > 0
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def ref_requant(acc: int, m0: int, shift: int, zp: int, qmin: int, qmax: int) -> int:
    acc = min(max(acc, I32_MIN), I32_MAX)
    return min(max(ref_mbqm(acc, m0, shift) + zp, qmin), qmax)


i32 = st.integers(I32_MIN, I32_MAX)
edge_i32 = st.one_of(i32, st.sampled_from([I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX, 1 << 30,
                                           -(1 << 30), (1 << 30) - 1]))


@given(st.lists(st.tuples(edge_i32, edge_i32), min_size=1, max_size=64))
def test_srdhm_bit_exact(pairs):
    a = np.array([p[0] for p in pairs], np.int64)
    b = np.array([p[1] for p in pairs], np.int64)
    got = sat_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [ref_srdhm(int(x), int(y)) for x, y in pairs]


@given(st.lists(st.tuples(edge_i32, st.integers(0, 31)), min_size=1, max_size=64))
def test_rdbpot_bit_exact(pairs):
    x = np.array([p[0] for p in pairs], np.int64)
    e = np.array([p[1] for p in pairs], np.int64)
    assert rounding_divide_by_pot(x, e).tolist() == [ref_rdbpot(int(v), int(k)) for v, k in pairs]


reals = st.one_of(st.floats(1e-12, 4.0), st.sampled_from(
    [0.0, 1e-300, 2.0 ** -32, 2.0 ** -31, 0.5, 1.0, 1.5, 2.0, 1 - 2 ** -33, 0.999999999999, 3e-10]))


@given(st.lists(reals, min_size=1, max_size=32))
def test_quantize_multiplier_matches_tflite(rs):
    m0, shift = quantize_multiplier(np.array(rs))
    assert m0.dtype == np.int32 and shift.dtype == np.int32
    for r, m, s in zip(rs, m0.tolist(), shift.tolist()):
        assert (m, s) == ref_quantize_multiplier(r)
        if m:
            assert (1 << 30) <= m < (1 << 31)
            assert abs(m * 2.0 ** (s - 31) - r) <= r * 2.0 ** -31


def test_quantize_multiplier_rejects_bad():
    import pytest
    for bad in (-1.0, float("nan"), float("inf"), 2.0 ** 40):
        with pytest.raises(ValueError):
            quantize_multiplier(np.array([bad]))


@settings(max_examples=60)
@given(st.lists(edge_i32, min_size=1, max_size=40), st.lists(reals, min_size=1, max_size=3),
       st.integers(-128, 127), st.sampled_from([(-128, 127), (-8, 7), (0, 127)]))
def test_requantize_bit_exact_per_channel(accs, rs, zp, rng):
    qmin, qmax = rng
    c = len(rs)
    acc = np.array(accs * c, np.int64).reshape(c, len(accs))      # channel axis 0
    m0, shift = quantize_multiplier(np.array(rs))
    got = requantize(acc, m0, shift, zp, qmin, qmax, axis=0)
    assert got.dtype == np.int8
    want = [[ref_requant(int(a), int(m0[i]), int(shift[i]), zp, qmin, qmax) for a in accs]
            for i in range(c)]
    assert got.tolist() == want


def test_requantize_ties_and_extremes():
    # M = 0.25: ties (acc ≡ 2 mod 4) round away from zero after TFLite's double rounding
    m0, shift = quantize_multiplier(np.array(0.25))
    acc = np.array([2, -2, 6, -6, 1, -1, 3, -3, I32_MIN, I32_MAX, 0], np.int64)
    got = requantize(acc, m0, shift, 0, -128, 127)
    want = [ref_requant(int(a), int(m0), int(shift), 0, -128, 127) for a in acc]
    assert got.tolist() == want
    assert got[:4].tolist() == [1, -1, 2, -2]
    # per-channel along the last axis, uint8 output
    m0, shift = quantize_multiplier(np.array([0.01, 0.5, 1.7]))
    acc = np.arange(-300, 300, 7, dtype=np.int64).reshape(-1, 1).repeat(3, 1)
    got = requantize(acc, m0, shift, 128, axis=-1, dtype=np.uint8)
    want = [[ref_requant(int(a), int(m0[j]), int(shift[j]), 128, 0, 255) for j in range(3)]
            for a in acc[:, 0]]
    assert got.dtype == np.uint8 and got.tolist() == want
