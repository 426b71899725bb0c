"""Slice: starts / ends / axes / steps as inputs (opset 10+) or attributes (opset 1, no steps).

Starts / ends are clamped as ONNX specifies (to [0, dim] for positive steps, [-1, dim-1] for
negative ones after adding dim to negatives), so INT64_MAX / INT64_MIN sentinels work."""
from __future__ import annotations

from typing import ClassVar

from edgert.ops._schema import Attr, Val, norm_axes as check_axes
from edgert.ops._shape_ops import inp, int_vals, list_len
from edgert.ops._util import fail, int_list, need, norm_axes
from edgert.ops.base import Op, register


def _clamp(s: int, e: int, k: int, d: int) -> tuple[int, int]:
    """ONNX start / end clamping for a dim of size d and step k != 0: starts to [0, d] (k > 0)
    or [0, d-1] (k < 0), ends to [0, d] or [-1, d-1]."""
    s = s + d if s < 0 else s
    e = e + d if e < 0 else e
    if k > 0:
        return min(max(s, 0), d), min(max(e, 0), d)
    return min(max(s, 0), d - 1), min(max(e, -1), d - 1)


def _count(s: int, e: int, k: int) -> int:
    """Elements the clamped slice s:e:k selects (e = -1 with k < 0: down to element 0)."""
    if k > 0:
        return (e - s + k - 1) // k if e > s else 0
    return (s - e + (-k) - 1) // (-k) if s > e else 0


@register
class Slice(Op):
    # opset 1 form: starts / ends (required then) / axes attributes; inputs since opset 10
    ATTRS: ClassVar[dict[str, Attr]] = {
        "starts": Attr("ints"),
        "ends": Attr("ints"),
        "axes": Attr("ints"),
    }
    INPUTS = (1, 5)

    def _param(self, ins: list[Val | None], i: int, key: str | None
               ) -> tuple[list[int] | None, int | None, bool]:
        """(value, length, given) of parameter input i or its attribute."""
        v = inp(ins, i)
        if v is not None:
            return int_vals(self, v, key or "steps"), list_len(self, v, key or "steps"), True
        if key is not None and self.attr(key) is not None:
            a = [int(t) for t in self.attr(key)]
            return a, len(a), True
        return None, None, False

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = ins[0]
        dtype = None if x is None else x.dtype
        shape = None if x is None else x.shape
        st, n_st, g_st = self._param(ins, 1, "starts")
        en, n_en, g_en = self._param(ins, 2, "ends")
        if not (g_st and g_en):
            raise self.bad("needs starts and ends")
        ax, n_ax, g_ax = self._param(ins, 3, "axes")
        sp, n_sp, g_sp = self._param(ins, 4, None)
        if not g_ax:
            ax = None if st is None else list(range(len(st)))
            n_ax = n_st
        if n_sp == 0:                                 # empty steps: all 1 (as run)
            sp, n_sp, g_sp = None, None, False
        if not g_sp:
            sp = None if st is None else [1] * len(st)
            n_sp = n_st
        lens = {n for n in (n_st, n_en, n_ax, n_sp) if n is not None}
        if len(lens) > 1:
            raise self.bad(f"starts, ends, axes and steps differ in length "
                           f"({n_st}, {n_en}, {n_ax}, {n_sp})")
        if sp is not None and 0 in sp:
            raise self.bad(f"steps {sp} contain 0")
        if shape is None:
            return [Val(dtype, None)]
        r = len(shape)
        if ax is None:
            if n_ax == 0:
                return [Val(dtype, tuple(shape))]
            return [Val(dtype, (None,) * r)]
        if any(not -r <= a < r for a in ax):
            raise self.bad(f"axes {ax} are out of range for rank {r}")
        axs = check_axes(self, ax, r)
        out = list(shape)
        for j, a in enumerate(axs):
            d = shape[a]
            if d is None or st is None or en is None or sp is None:
                out[a] = None
            else:
                out[a] = _count(*_clamp(st[j], en[j], sp[j], d), sp[j])
        return [Val(dtype, tuple(out))]

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
            s, e = _clamp(s, e, k, x.shape[a])
            if _count(s, e, k) == 0:
                index[a] = slice(0, 0)
            else:       # a negative stop would wrap in Python; -1 here means "before element 0"
                index[a] = slice(s, None if e < 0 else e, k)
        return (x[tuple(index)].copy(),)
