"""TFLite fixed-point requantization, vectorised in int64.

A real multiplier M = in_scale·w_scale/out_scale is stored as a Q0.31 integer m0 ∈ [2^30, 2^31) and
a power-of-two exponent: M = m0 · 2^(shift − 31) (TFLite `QuantizeMultiplier`, quantization_util.cc).
An int32 accumulator is scaled by TFLite's `MultiplyByQuantizedMultiplier`:
    RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc · 2^max(shift, 0), m0), max(−shift, 0))
with gemmlowp's fixedpoint.h definitions of the two helpers.  One deliberate difference: where the
C code's `acc · 2^left_shift` would overflow int32 (undefined behaviour), we saturate to int32.
"""
from __future__ import annotations

import numpy as np

from edgert.errors import InputError

_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """real (any shape, >= 0, float64 recommended) -> (m0 int32, shift int32) of the same shape.

    real == 0 and reals below ~2^-32 (every bit would be shifted out) give m0 = 0, shift = 0."""
    r = np.asarray(real, dtype=np.float64)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"quantize_multiplier: multipliers must be finite and >= 0, got {r}")
    q, e = np.frexp(r)                                  # r = q·2^e, q ∈ [0.5, 1)
    # TfLiteRound = std::round: half away from zero (q >= 0 here, so floor(x + 0.5) is exact enough:
    # q·2^31 has at most 53 significant bits and adding 0.5 is exact below 2^52).
    q_fixed = np.floor(q * float(1 << 31) + 0.5).astype(np.int64)
    e = e.astype(np.int64)
    carry = q_fixed == (1 << 31)                        # rounding reached 1.0: renormalise
    q_fixed = np.where(carry, q_fixed // 2, q_fixed)
    e = np.where(carry, e + 1, e)
    tiny = (e < -31) | (r == 0)
    q_fixed = np.where(tiny, 0, q_fixed)
    e = np.where(tiny, 0, e)
    if np.any(e > 31):
        raise ValueError(f"quantize_multiplier: multiplier too large (>= 2^31): {r.max()}")
    return q_fixed.astype(np.int32), e.astype(np.int32)


def sat_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values held in int64 arrays."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b                                          # |ab| <= 2^62: fits int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    t = ab + nudge
    # C integer division truncates toward zero; >> floors, so divide |t| and restore the sign.
    high = np.where(t >= 0, t >> 31, -((-t) >> 31))
    overflow = (a == _I32_MIN) & (b == _I32_MIN)
    return np.where(overflow, _I32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT (round half away from zero) on int64 arrays, 0 <= exponent <= 31."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _along(v: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim == 0 or axis is None:
        return v
    axis = axis % ndim
    return v.reshape((-1,) + (1,) * (ndim - 1 - axis))


def requantize(acc: np.ndarray, m0, shift, zp, qmin: int | None = None, qmax: int | None = None,
               axis: int | None = None, dtype=np.int8) -> np.ndarray:
    """clamp(zp + MultiplyByQuantizedMultiplier(acc, m0, shift), qmin, qmax) as `dtype` (int8).

    `m0`/`shift` are scalars or 1-D per-channel arrays laid along `axis` of `acc`; `zp` is a scalar.
    qmin/qmax default to the range of `dtype`."""
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    qmin = info.min if qmin is None else int(qmin)
    qmax = info.max if qmax is None else int(qmax)
    acc = np.asarray(acc)
    nd = max(acc.ndim, 1)
    m0 = _along(np.asarray(m0, np.int64), nd, axis)
    shift = _along(np.asarray(shift, np.int64), nd, axis)
    x = np.clip(acc.astype(np.int64), _I32_MIN, _I32_MAX)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = np.clip(x << left, _I32_MIN, _I32_MAX)         # C wraps here (UB); we saturate
    y = rounding_divide_by_pot(sat_rounding_doubling_high_mul(x, m0), right)
    y = y + int(np.asarray(zp).reshape(()))
    return np.clip(y, qmin, qmax).astype(dtype)


def requant_multipliers(in_scale, w_scale, out_scale) -> tuple[np.ndarray, np.ndarray]:
    """(m0, shift) for M = in_scale·w_scale/out_scale computed in float64 (w_scale may be per-channel).

    Scales that are not finite and > 0, or a multiplier of 2^31 or more (e.g. scale ratios of
    1e38), raise InputError: the fixed-point path cannot represent them."""
    s_in = np.asarray(in_scale, np.float64)
    s_w = np.asarray(w_scale, np.float64).reshape(-1)
    s_out = np.asarray(out_scale, np.float64)
    for what, s in (("input scale", s_in), ("weight scale", s_w), ("output scale", s_out)):
        ok = np.isfinite(s) & (s > 0)
        if not np.all(ok):
            raise InputError(f"requantization: {what} must be finite and > 0, got "
                             f"{float(s[~ok].reshape(-1)[0])!r}")
    if s_in.size != 1 or s_out.size != 1:
        raise InputError(f"requantization: input / output scales must be per-tensor, got shapes "
                         f"{s_in.shape} and {s_out.shape}")
    with np.errstate(all="ignore"):
        m = s_in.reshape(()) * s_w / s_out.reshape(())
    if not np.all(np.isfinite(m)) or np.any(m >= float(1 << 31)):
        big = float(np.nanmax(np.where(np.isfinite(m), m, np.inf)))
        raise InputError(f"requantization multiplier in·w/out = {big:g} is too large for the "
                         f"fixed-point path (must be < 2^31)")
    try:
        return quantize_multiplier(m)
    except ValueError as e:               # rounding carried a multiplier just below 2^31 over
        raise InputError(f"requantization: {e}") from None
