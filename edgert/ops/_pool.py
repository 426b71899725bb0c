"""Window bookkeeping shared by AveragePool and MaxPool (not an op module)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from edgert.ops._geometry import (AUTO_PAD, dim, itemsize, lb, need_rank, none_empty, prod_lb,
                                  shape_of, spatial_rank, window_dim, window_dim_lb)
from edgert.ops._schema import Attr, Val, fmt
from edgert.ops._util import fail, need, padded_extent, pool_geometry, rank_at_least, window_slices


@dataclass
class Windows:
    out: list[int]            # output spatial sizes
    pb: list[int]             # begin pads
    pe: list[int]             # end pads (explicit / auto_pad)
    ext: list[int]            # end pads actually applied (covers a ceil_mode overhang)
    kernel: list[int]
    strides: list[int]
    dilations: list[int]

    def taps(self):
        """(kernel offsets, slices into the padded array) for every kernel position."""
        for ks in itertools.product(*(range(k) for k in self.kernel)):
            yield ks, (Ellipsis,) + window_slices(ks, self.dilations, self.strides, self.out)


def windows(op, x) -> tuple[np.ndarray, Windows]:
    x = need(op, x, "X")
    rank_at_least(op, x, 3)
    n = x.ndim - 2
    kernel = op.attr("kernel_shape")
    if kernel is None:
        raise fail(op, "attribute kernel_shape is required")
    kernel = [int(k) for k in kernel]
    if len(kernel) != n:
        raise fail(op, f"kernel_shape {kernel} does not match input shape {x.shape}")
    strides = [int(s) for s in op.attr("strides", [1] * n)]
    dilations = [int(d) for d in op.attr("dilations", [1] * n)]
    pads = op.attr("pads")
    pads = None if pads is None else [int(p) for p in pads]
    spatial = list(x.shape[2:])
    out, pb, pe = pool_geometry(op, spatial, kernel, strides, dilations, pads,
                                str(op.attr("auto_pad", "NOTSET")), bool(op.attr("ceil_mode", 0)))
    if any(o < 1 for o in out):
        raise fail(op, f"output spatial size {out} is empty for input {x.shape}")
    need_end = padded_extent(spatial, kernel, strides, dilations, out, pb)
    ext = [max(a, b) for a, b in zip(pe, need_end)]
    return x, Windows(out, pb, pe, ext, kernel, strides, dilations)


# ---- static shapes ---------------------------------------------------------------------------

POOL_ATTRS: dict[str, Attr] = {
    "auto_pad": AUTO_PAD,
    "ceil_mode": Attr("int", choices=(0, 1)),
    "dilations": Attr("ints", lo=1),
    "kernel_shape": Attr("ints", lo=1, required=True),
    "pads": Attr("ints", lo=0),
    "strides": Attr("ints", lo=1),
}


@dataclass
class PoolGeom:
    out: tuple | None                  # output shape; None = unknown rank
    padded: tuple = ()                 # spatial extent of the padded copy (a lower bound)


def pool_infer(op, x: Val | None) -> PoolGeom:
    """Output shape of a pooling window over partly known X (N, C, *spatial), by the rules of
    `windows` / `_util.pool_geometry` (empty list attributes count, as there)."""
    xs = shape_of(x)
    need_rank(op, xs, 3, None, "X")
    kernel = [int(k) for k in op.attr("kernel_shape") or []]
    strides = op.attr("strides")
    dil = op.attr("dilations")
    pads = op.attr("pads")
    nd = len(xs) - 2 if xs is not None else None
    if nd is not None and len(kernel) != nd:
        raise op.bad(f"kernel_shape {kernel} does not match the {nd} spatial dims of X {fmt(xs)}")
    nd = spatial_rank(op, len(kernel) or None, [("kernel_shape", kernel, 1),
                                                ("strides", strides, 1),
                                                ("dilations", dil, 1), ("pads", pads, 2)])
    if not nd:
        raise op.bad("kernel_shape must have one entry per spatial dim")
    strides = [int(s) for s in strides] if strides is not None else [1] * nd
    dil = [int(d) for d in dil] if dil is not None else [1] * nd
    pads = [int(p) for p in pads] if pads is not None else [0] * (2 * nd)
    auto_pad = str(op.attr("auto_pad", "NOTSET"))
    ceil_mode = bool(op.attr("ceil_mode", 0))
    in_sp = tuple(xs[2:]) if xs is not None else (None,) * nd
    out_sp, padded = [], []
    for a in range(nd):
        i, k, s, d = in_sp[a], kernel[a], strides[a], dil[a]
        o, b, e = window_dim(op, a, i, k, s, d, pads[a], pads[nd + a], auto_pad, ceil_mode)
        if o is not None and o < 1:
            raise op.bad(f"output spatial size {o} on axis {a} is empty (input {i})")
        out_sp.append(o)
        if o is None or i is None or b is None or e is None:
            padded.append(window_dim_lb(i, k, s, d, pads[a], pads[nd + a], auto_pad, ceil_mode)[1])
        else:
            need_end = max((o - 1) * s + (k - 1) * d + 1 - b - i, 0)
            padded.append(b + i + max(e, need_end))
    out = (dim(xs, 0), dim(xs, 1)) + tuple(out_sp)
    return PoolGeom(out, tuple(padded))


def pool_scratch(geom: PoolGeom, dtype: str | None) -> int:
    """The padded copy of X that `run` makes (np.pad always copies)."""
    if geom.out is None or not none_empty(geom.out):
        return 0
    return lb(geom.out[0]) * lb(geom.out[1]) * prod_lb(geom.padded) * itemsize(dtype, 1)
