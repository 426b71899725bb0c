"""im2col and friends, shared by the float and the integer convolutions (any number of spatial dims).

Layout: input NC<spatial>; `im2col` returns rows `(N, group, P, Cg·∏k)` where P = ∏ output spatial, so a
convolution is `rows @ W_g.T` per group with `W_g [Og, Cg·∏k]` (ONNX weight layout, flattened).
Pads follow ONNX order: all begins then all ends (2-D: [t, l, b, r]).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from edgert.errors import UnsupportedOp


def conv_pads(in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
              dilations: Sequence[int], auto_pad: str = "NOTSET",
              pads: Sequence[int] | None = None) -> list[int]:
    """Resolve ONNX Conv `auto_pad`/`pads` to explicit pads [begins..., ends...]."""
    nd = len(in_spatial)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        p = list(pads) if pads else [0] * (2 * nd)
        if len(p) != 2 * nd:
            raise ValueError(f"pads {p} do not match {nd} spatial dims")
        return [int(v) for v in p]
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedOp(f"Conv auto_pad {auto_pad!r}")
    begins, ends = [], []
    for i in range(nd):
        out = -(-in_spatial[i] // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_spatial[i])
        small, big = total // 2, total - total // 2
        # SAME_UPPER puts the odd extra pixel at the end, SAME_LOWER at the beginning (ONNX spec)
        b, e = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        begins.append(b)
        ends.append(e)
    return begins + ends


def conv_out_shape(in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                   pads: Sequence[int], dilations: Sequence[int]) -> list[int]:
    nd = len(in_spatial)
    out = []
    for i in range(nd):
        span = (kernel[i] - 1) * dilations[i] + 1
        o = (in_spatial[i] + pads[i] + pads[nd + i] - span) // strides[i] + 1
        if o <= 0:
            raise ValueError(f"conv output dim {i} is {o} (input {in_spatial}, kernel {kernel}, "
                             f"pads {pads}, strides {strides}, dilations {dilations})")
        out.append(o)
    return out


def pad_spatial(x: np.ndarray, pads: Sequence[int], value=0) -> np.ndarray:
    """Pad the spatial dims (2:) of NC<spatial> `x` with a constant."""
    nd = x.ndim - 2
    if not any(pads):
        return x
    width = [(0, 0), (0, 0)] + [(int(pads[i]), int(pads[nd + i])) for i in range(nd)]
    if any(b < 0 or e < 0 for b, e in width):          # negative pads crop (allowed by ONNX)
        x = x[(slice(None), slice(None)) + tuple(
            slice(max(-b, 0), x.shape[2 + i] - max(-e, 0)) for i, (b, e) in enumerate(width[2:]))]
        width = [(max(b, 0), max(e, 0)) for b, e in width]
    return np.pad(x, width, mode="constant", constant_values=value)


def windows(xp: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
            dilations: Sequence[int], out_spatial: Sequence[int]) -> np.ndarray:
    """Read-only strided view (N, C, *out_spatial, *kernel) of the padded input `xp`."""
    nd = len(kernel)
    sp = xp.strides[2:]
    shape = xp.shape[:2] + tuple(out_spatial) + tuple(kernel)
    strides = xp.strides[:2] + tuple(sp[i] * strides[i] for i in range(nd)) + \
        tuple(sp[i] * dilations[i] for i in range(nd))
    return as_strided(xp, shape=shape, strides=strides, writeable=False)


def im2col(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
           dilations: Sequence[int], pad_value=0, group: int = 1) -> tuple[np.ndarray, list[int]]:
    """Rows for GEMM: returns (cols (N, group, P, Cg·∏k), out_spatial)."""
    n, c = x.shape[:2]
    nd = len(kernel)
    xp = pad_spatial(x, pads, pad_value)
    out_sp = conv_out_shape(x.shape[2:], kernel, strides, pads, dilations)
    # explicit pads already applied
    w = windows(xp, kernel, strides, dilations, out_sp)           # (N, C, *o, *k)
    cg = c // group
    w = w.reshape((n, group, cg) + w.shape[2:])                    # view: C splits cleanly
    # -> (N, g, *o, Cg, *k)
    perm = (0, 1) + tuple(range(3, 3 + nd)) + (2,) + tuple(range(3 + nd, 3 + 2 * nd))
    cols = w.transpose(perm).reshape(n, group, math.prod(out_sp), cg * math.prod(kernel))
    return cols, out_sp


def depthwise_conv(x: np.ndarray, w: np.ndarray, strides: Sequence[int], pads: Sequence[int],
                   dilations: Sequence[int], pad_value=0, acc_dtype=np.float32) -> np.ndarray:
    """Depthwise conv (group == C): `x (N, C, *s)`, `w (O, 1, *k)` with O = C·mult -> (N, O, *o).

    Loops over the ∏k kernel positions with a broadcast multiply-add (no GEMM); accumulates in
    `acc_dtype` (int32/int64 gives exact integer results)."""
    n, c = x.shape[:2]
    o = w.shape[0]
    kernel = w.shape[2:]
    nd = len(kernel)
    if o % c:
        raise ValueError(f"depthwise conv: {o} output channels is not a multiple of {c} inputs")
    xp = pad_spatial(x, pads, pad_value)
    out_sp = conv_out_shape(x.shape[2:], kernel, strides, pads, dilations)
    if o != c:                                      # channel multiplier: out o reads input o // mult
        xp = np.repeat(xp, o // c, axis=1)
    xp = xp.astype(acc_dtype, copy=False)
    wk = w.reshape(o, -1).astype(acc_dtype)          # (O, ∏k)
    win = windows(xp, kernel, strides, dilations, out_sp)  # (N, O, *o, *k)
    out = np.zeros((n, o) + tuple(out_sp), acc_dtype)
    bshape = (1, o) + (1,) * nd
    for j, pos in enumerate(np.ndindex(*kernel)):
        out += win[(Ellipsis,) + pos] * wk[:, j].reshape(bshape)
    return out
