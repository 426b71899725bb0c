"""Slice: starts / ends / axes / steps as inputs (opset 10+) or attributes (opset 1, no steps).

Starts / ends are clamped as ONNX specifies (to [0, dim] for positive steps, [-1, dim-1] for
negative ones after adding dim to negatives), so INT64_MAX / INT64_MIN sentinels work."""
from __future__ import annotations

from edgert.ops._util import fail, int_list, need, norm_axes
from edgert.ops.base import Op, register


@register
class Slice(Op):
    def run(self, x, starts=None, ends=None, axes=None, steps=None):
        x = need(self, x, "data")
        st = int_list(self, starts if starts is not None else self.attr("starts"), "starts")
        en = int_list(self, ends if ends is not None else self.attr("ends"), "ends")
        if st is None or en is None:
            raise fail(self, "needs starts and ends")
        ax = int_list(self, axes if axes is not None else self.attr("axes"), "axes")
        ax = list(range(len(st))) if ax is None else ax
        sp = int_list(self, steps, "steps") or [1] * len(st)
        if not len(st) == len(en) == len(ax) == len(sp):
            raise fail(self, f"starts {st}, ends {en}, axes {ax}, steps {sp} differ in length")
        ax = norm_axes(self, ax, x.ndim)
        index = [slice(None)] * x.ndim
        for a, s, e, k in zip(ax, st, en, sp):
            if k == 0:
                raise fail(self, f"step 0 on axis {a}")
            d = x.shape[a]
            s = s + d if s < 0 else s
            e = e + d if e < 0 else e
            if k > 0:
                s, e = min(max(s, 0), d), min(max(e, 0), d)
            else:
                s, e = min(max(s, -1), d - 1), min(max(e, -1), d - 1)
            # a negative stop would wrap in Python; -1 here means "before element 0"
            index[a] = slice(s, None if e < 0 else e, k)
        return (x[tuple(index)].copy(),)
