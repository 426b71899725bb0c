"""Window bookkeeping shared by AveragePool and MaxPool (not an op module)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

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
