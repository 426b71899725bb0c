"""Pad: modes constant / reflect / edge / wrap.

Pads (ONNX layout [x1_begin, x2_begin, ..., x1_end, x2_end, ...]) come as the `pads` input
(opset 11+) or attribute (opset 2, with the `value` attribute; `paddings` in opset 1); the
opset-18 `axes` input limits them to some axes.  Negative pads crop (at most the whole dim)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.ops._schema import Attr, Val, fmt, norm_axes as check_axes
from edgert.ops._shape_ops import inp, int_vals, list_len, unknown_dims
from edgert.ops._util import fail, int_list, need, norm_axes
from edgert.ops.base import Op, register

_MODES = ("constant", "reflect", "edge", "wrap")


@register
class Pad(Op):
    ONNX_VERSION = 25    # versions 23-25 only added float4e2m1 / float8e8m0 / int2 / uint2,
                         # which edgert does not have
    ATTRS: ClassVar[dict[str, Attr]] = {
        "mode": Attr("str", choices=_MODES),   # "wrap" since opset 19
        "pads": Attr("ints"),                  # opset 2 (an input since 11)
        "paddings": Attr("ints"),              # opset 1 name of `pads`
        "value": Attr("float"),                # opsets 1-10 (the constant_value input since 11)
    }
    INPUTS = (1, 4)

    def _attr_pads(self) -> list[int] | None:
        p = self.attr("pads", self.attr("paddings"))
        return None if p is None else [int(v) for v in p]

    def _check_axis(self, i: int, d: int, b: int, e: int, mode: str, fail_with) -> int:
        """Output size of axis i (size d, pads b / e); fail_with(msg) when it cannot work."""
        crop = max(-b, 0) + max(-e, 0)
        if crop > d:
            raise fail_with(f"pads {b, e} crop {crop} elements from axis {i} of size {d}")
        kept = d - crop
        pb, pe = max(b, 0), max(e, 0)
        if mode != "constant" and (pb or pe):
            if kept == 0:
                raise fail_with(f"mode {mode!r} cannot pad an empty axis {i}")
            if mode == "reflect" and max(pb, pe) > kept - 1:
                raise fail_with(f"reflect pad {pb, pe} on axis {i} needs dim > pad (dim {kept})")
        return d + b + e

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = ins[0]
        dtype = None if x is None else x.dtype
        shape = None if x is None else x.shape
        pv, av = inp(ins, 1), inp(ins, 3)
        if pv is not None:
            p, n_p = int_vals(self, pv, "pads"), list_len(self, pv, "pads")
        else:
            p = self._attr_pads()
            if p is None:
                raise self.bad("needs pads")
            n_p = len(p)
        mode = self.attr("mode", "constant")
        if n_p is not None and n_p % 2:
            raise self.bad(f"pads has {n_p} entries (an odd count)")
        if av is not None:
            ax, n_ax = int_vals(self, av, "axes"), list_len(self, av, "axes")
        elif shape is not None:
            ax, n_ax = list(range(len(shape))), len(shape)
        else:
            ax, n_ax = None, None if n_p is None else n_p // 2
            shape = unknown_dims(n_ax)       # pads of every axis: the rank is len(pads) / 2
            if shape is not None:
                ax = list(range(n_ax))
        if n_p is not None and n_ax is not None and n_p != 2 * n_ax:
            raise self.bad(f"pads has {n_p} entries, expected {2 * n_ax} "
                           f"(for shape {fmt(shape)})")
        if shape is None:
            return [Val(dtype, None)]
        r = len(shape)
        if ax is None:
            return [Val(dtype, (None,) * r)]
        if any(not -r <= a < r for a in ax):
            raise self.bad(f"axes {ax} are out of range for rank {r}")
        axs = check_axes(self, ax, r)
        out = list(shape)
        for j, a in enumerate(axs):
            if p is None or shape[a] is None:
                out[a] = None
            else:
                out[a] = self._check_axis(a, shape[a], p[j], p[j + len(axs)], mode, self.bad)
        return [Val(dtype, tuple(out))]

    def run(self, x, pads=None, constant_value=None, axes=None):
        x = need(self, x, "data")
        p = int_list(self, pads if pads is not None else self._attr_pads(), "pads")
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
        for i, (b, e) in enumerate(zip(before, after)):
            self._check_axis(i, x.shape[i], b, e, mode, lambda m: fail(self, m))
        # crop first (negative pads), then pad
        crop = tuple(slice(-b if b < 0 else 0, x.shape[i] + e if e < 0 else None)
                     for i, (b, e) in enumerate(zip(before, after)))
        x = x[crop]
        width = [(max(b, 0), max(e, 0)) for b, e in zip(before, after)]
        if not any(b or e for b, e in width):
            return (x.copy(),)
        try:
            if mode == "constant":
                if constant_value is not None and np.asarray(constant_value).size:
                    v = np.asarray(constant_value).reshape(-1)[0]
                else:
                    v = self.attr("value", 0.0)
                with np.errstate(all="ignore"):          # ONNX: the value has x's type
                    fill = np.asarray(v).astype(x.dtype)
                return (np.pad(x, width, mode="constant", constant_values=fill),)
            return (np.pad(x, width, mode=mode),)
        except (TypeError, ValueError) as e:             # an uncastable value, dims past numpy's limits
            raise fail(self, f"cannot pad {x.shape} by {p}: {e}") from None
