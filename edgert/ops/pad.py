"""Pad: modes constant / reflect / edge / wrap.

Pads (ONNX layout [x1_begin, x2_begin, ..., x1_end, x2_end, ...]) come as the `pads` input
(opset 11+) or attribute (opset 2, with the `value` attribute); the opset-18 `axes` input limits
them to some axes.  Negative pads crop."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, int_list, need, norm_axes
from edgert.ops.base import Op, register

_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@register
class Pad(Op):
    def run(self, x, pads=None, constant_value=None, axes=None):
        x = need(self, x, "data")
        p = int_list(self, pads if pads is not None else self.attr("pads"), "pads")
        if p is None:
            raise fail(self, "needs pads")
        mode = self.attr("mode", "constant")
        if mode not in _MODES:
            raise fail(self, f"unknown mode {mode!r}")
        ax = int_list(self, axes, "axes")
        ax = list(range(x.ndim)) if ax is None else norm_axes(self, ax, x.ndim)
        if len(p) != 2 * len(ax):
            raise fail(self, f"pads {p} must have {2 * len(ax)} entries for shape {x.shape}")
        before, after = [0] * x.ndim, [0] * x.ndim
        for i, a in enumerate(ax):
            before[a], after[a] = p[i], p[i + len(ax)]
        # crop first (negative pads), then pad
        crop = tuple(slice(-b if b < 0 else 0, x.shape[i] + e if e < 0 else None)
                     for i, (b, e) in enumerate(zip(before, after)))
        x = x[crop]
        width = [(max(b, 0), max(e, 0)) for b, e in zip(before, after)]
        if mode == "constant":
            if constant_value is not None and np.asarray(constant_value).size:
                v = np.asarray(constant_value).reshape(-1)[0]
            else:
                v = self.attr("value", 0)
            return (np.pad(x, width, mode="constant", constant_values=x.dtype.type(v)),)
        for i, (b, e) in enumerate(width):
            if (b or e) and x.shape[i] == 0:
                raise fail(self, f"mode {mode!r} cannot pad an empty axis {i}")
            if mode == "reflect" and max(b, e) > x.shape[i] - 1:
                raise fail(self, f"reflect pad {b, e} on axis {i} needs dim > pad "
                                 f"(dim {x.shape[i]})")
        return (np.pad(x, width, mode=_MODES[mode]),)
