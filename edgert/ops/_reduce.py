"""Axes handling shared by the Reduce* ops (not an op module)."""
from __future__ import annotations

import numpy as np

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
    """Shared run() of the Reduce* ops: axes from attr or input, noop / all-axes rules, keepdims.
    Subclasses implement `reduce(x, axes, keepdims)`."""

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.reduce")

    def run(self, x, axes=None):
        x, ax = reduce_axes(self, x, axes)
        if ax is None:
            return (x.copy(),)
        return (self.reduce(x, ax, bool(self.attr("keepdims", 1))),)
