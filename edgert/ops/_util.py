"""Helpers shared by the numpy reference ops (not an op module: the leading underscore keeps it
out of op discovery).  Every check raises InputError naming the node, per docs/design.md."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import numpy as np

from edgert.errors import InputError, UnsupportedOp


def fail(op: Any, msg: str) -> InputError:
    """An InputError naming the node and op; `raise fail(self, "...")`."""
    return InputError(f"node {op.node.name!r} ({op.node.op}): {msg}")


def unsupported(op: Any, msg: str) -> UnsupportedOp:
    return UnsupportedOp(f"node {op.node.name!r} ({op.node.op}): {msg}")


def need(op: Any, x: np.ndarray | None, what: str) -> np.ndarray:
    """A required input: None (an omitted input) is an error."""
    if x is None:
        raise fail(op, f"required input {what!r} is missing")
    return np.asarray(x)


def int_list(op: Any, v: Any, what: str) -> list[int] | None:
    """An int-list parameter given as an attribute (list) or as a 1-D int tensor input."""
    if v is None:
        return None
    a = np.asarray(v)
    if a.ndim > 1:
        raise fail(op, f"{what} must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise fail(op, f"{what} must be integers, got dtype {a.dtype}")
    return [int(i) for i in a.reshape(-1)]


def norm_axis(op: Any, axis: int, rank: int, what: str = "axis") -> int:
    """Normalise one axis in [-rank, rank-1] to [0, rank-1]."""
    axis = int(axis)
    if not -rank <= axis < rank:
        raise fail(op, f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def norm_axes(op: Any, axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    out = [norm_axis(op, a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise fail(op, f"{what} {list(axes)} repeat an axis")
    return out


def same_dtype(op: Any, *arrays: np.ndarray) -> None:
    """ONNX type constraint T: all these inputs share one element type (no silent upcasts)."""
    dts = {a.dtype for a in arrays}
    if len(dts) > 1:
        got = ", ".join(str(a.dtype) for a in arrays)
        raise fail(op, f"inputs must share one dtype, got {got}")


def broadcast_shape(op: Any, *shapes: Sequence[int]) -> tuple[int, ...]:
    try:
        return np.broadcast_shapes(*[tuple(s) for s in shapes])
    except ValueError:
        got = ", ".join(str(tuple(s)) for s in shapes)
        raise fail(op, f"shapes {got} do not broadcast") from None


def need_float(op: Any, x: np.ndarray) -> None:
    if not np.issubdtype(x.dtype, np.floating):
        raise fail(op, f"expects a float tensor, got dtype {x.dtype}")


def rank_at_least(op: Any, x: np.ndarray, r: int, what: str = "X") -> None:
    if x.ndim < r:
        raise fail(op, f"{what} must have rank >= {r}, got shape {x.shape}")


# ---- pooling windows -------------------------------------------------------------------------

def pool_geometry(op: Any, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int], pads: Sequence[int] | None, auto_pad: str,
                  ceil_mode: bool) -> tuple[list[int], list[int], list[int]]:
    """Output sizes and begin/end pads of an N-D pooling window (ONNX pooling rules).

    Returns (out_sizes, pads_begin, pads_end).  With ceil_mode the last window may run past the
    end pad; the caller pads that overhang with a value that never wins / never counts."""
    n = len(spatial)
    if len(kernel) != n or len(strides) != n or len(dilations) != n:
        raise fail(op, f"kernel_shape {list(kernel)}, strides {list(strides)} and dilations "
                       f"{list(dilations)} must each have {n} entries (the spatial rank)")
    if any(k < 1 for k in kernel) or any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        raise fail(op, "kernel_shape, strides and dilations must be positive")
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(spatial, strides)]
        total = [max((o - 1) * s + e - i, 0) for o, s, e, i in zip(out, strides, eff, spatial)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        pb, pe = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return out, pb, pe
    if auto_pad == "VALID":
        pb, pe = [0] * n, [0] * n
    elif auto_pad in ("NOTSET", ""):
        p = [0] * (2 * n) if pads is None else list(pads)
        if len(p) != 2 * n:
            raise fail(op, f"pads {p} must have {2 * n} entries")
        if any(v < 0 for v in p):
            raise fail(op, f"pads {p} must be non-negative")
        pb, pe = p[:n], p[n:]
    else:
        raise fail(op, f"unknown auto_pad {auto_pad!r}")
    out = []
    for i, s, e, b, en in zip(spatial, strides, eff, pb, pe):
        span = i + b + en - e
        if span < 0:
            raise fail(op, f"window {e} is larger than the padded input {i + b + en}")
        o = (-(-span // s) if ceil_mode else span // s) + 1
        # A window that would start inside the end pad (only possible with ceil_mode) is dropped
        # (ONNX >= 1.15 pooling rule, as PyTorch/ORT).
        if ceil_mode and (o - 1) * s >= i + b:
            o -= 1
        out.append(o)
    return out, pb, pe


def window_slices(ks: Sequence[int], dilations: Sequence[int], strides: Sequence[int],
                  out: Sequence[int]) -> tuple[slice, ...]:
    """Strided slices over the spatial dims of the padded input picking kernel tap `ks`."""
    return tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                 for k, d, s, o in zip(ks, dilations, strides, out))


def padded_extent(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int], out: Sequence[int], pb: Sequence[int]) -> list[int]:
    """End padding so that every window (incl. a ceil_mode overhang) lies inside the array."""
    return [max((o - 1) * s + (k - 1) * d + 1 - b - i, 0)
            for i, k, s, d, o, b in zip(spatial, kernel, strides, dilations, out, pb)]


def prod(xs: Sequence[int]) -> int:
    return math.prod(int(x) for x in xs)


def variadic(op: Any, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], xs: Sequence) -> np.ndarray:
    """Fold a binary elementwise numpy function over 1+ inputs with broadcasting (Max, Min, Sum...)."""
    if not xs or any(x is None for x in xs):
        raise fail(op, "needs at least one input and no omitted inputs")
    arrays = [np.asarray(x) for x in xs]
    same_dtype(op, *arrays)
    shape = broadcast_shape(op, *(a.shape for a in arrays))
    return np.array(np.broadcast_to(functools.reduce(fn, arrays), shape))
