"""Axes handling and the declaration shared by the Reduce* ops (not an op module)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.ops._elementwise import ANY, INT, check_kind, need_kind, need_val, opt_val
from edgert.ops._schema import Attr, Val, fmt, ints_of
from edgert.ops._schema import norm_axes as static_axes
from edgert.ops._util import int_list, need, norm_axes
from edgert.ops.base import Op


def reduce_axes(op, x, axes_input):
    """(x, axes tuple) — or (x, None) when the op is a no-op (noop_with_empty_axes=1, no axes)."""
    x = need(op, x, "data")
    ax = int_list(op, axes_input if axes_input is not None else op.attr("axes"), "axes")
    if not ax:
        if int(op.attr("noop_with_empty_axes", 0)):
            return x, None
        return x, tuple(range(x.ndim))
    return x, tuple(norm_axes(op, ax, x.ndim))


class ReduceOp(Op):
    """Shared declaration and run() of the Reduce* ops: axes from the attribute (older opsets) or
    the optional input 1 (which wins), noop / all-axes rules, keepdims.  Subclasses implement
    `reduce(x, axes, keepdims)`; KINDS: the dtype kinds the data may have."""
    ATTRS = {"axes": Attr("ints"), "keepdims": Attr("int", choices=(0, 1)),
             "noop_with_empty_axes": Attr("int", choices=(0, 1))}
    INPUTS = (1, 2)
    KINDS: ClassVar[str] = ANY

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.reduce")

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = need_val(self, ins, 0, "data")
        check_kind(self, x, self.KINDS, "data")
        keep = bool(self.attr("keepdims", 1))
        noop = bool(self.attr("noop_with_empty_axes", 0))
        a = opt_val(ins, 1)
        if a is None:
            axes = self.attr("axes") or []
        else:
            check_kind(self, a, INT, "axes")
            if a.rank is not None and a.rank > 1:
                raise self.bad(f"axes must be 1-D, got shape {fmt(a.shape)}")
            axes = ints_of(a)
            n = None if a.shape is None else a.shape[0] if a.shape else 1
            if axes is None and n == 0:
                axes = []
            if axes is None:                      # some axes, which ones unknown
                if x.shape is None:
                    return [Val(x.dtype, None)]
                r = len(x.shape)
                if n is not None and n > r:
                    raise self.bad(f"{n} axes for data of rank {r}")
                if keep:
                    return [Val(x.dtype, tuple(1 if d == 1 else None for d in x.shape))]
                return [Val(x.dtype, None if n is None else (None,) * (r - n))]
        if not axes and noop:
            return [Val(x.dtype, x.shape)]
        if x.shape is None:
            return [Val(x.dtype, None)]
        r = len(x.shape)
        if axes and not r:
            raise self.bad(f"axes {list(axes)} given for a scalar")
        red = set(static_axes(self, axes, r)) if axes else set(range(r))
        if keep:
            return [Val(x.dtype, tuple(1 if i in red else d for i, d in enumerate(x.shape)))]
        return [Val(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in red))]

    def run(self, x, axes=None):
        x, ax = reduce_axes(self, x, axes)
        need_kind(self, x, self.KINDS, "data")
        if ax is None:
            return (x.copy(),)
        return (self.reduce(x, ax, bool(self.attr("keepdims", 1))),)
