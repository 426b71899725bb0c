"""Axes handling shared by the Reduce* ops (not an op module)."""
from __future__ import annotations

from edgert.ops._util import int_list, need, norm_axes


def reduce_axes(op, x, axes_input):
    """(x, axes tuple) — or (x, None) when the op is a no-op (noop_with_empty_axes=1, no axes)."""
    x = need(op, x, "data")
    ax = int_list(op, axes_input if axes_input is not None else op.attr("axes"), "axes")
    if not ax:
        if int(op.attr("noop_with_empty_axes", 0)):
            return x, None
        return x, tuple(range(x.ndim))
    return x, tuple(norm_axes(op, ax, x.ndim))
