"""Reshape: 0 copies the input dim (unless allowzero=1, opset 14), -1 is inferred."""
from __future__ import annotations

from edgert.ops._util import fail, int_list, need, prod
from edgert.ops.base import Op, register


@register
class Reshape(Op):
    def run(self, x, shape=None):
        x = need(self, x, "data")
        dims = int_list(self, shape if shape is not None else self.attr("shape"), "shape")
        if dims is None:
            raise fail(self, "needs a shape input (or the opset-1 shape attribute)")
        allowzero = int(self.attr("allowzero", 0))
        out = list(dims)
        if not allowzero:
            for i, d in enumerate(dims):
                if d == 0:
                    if i >= x.ndim:
                        raise fail(self, f"shape {dims}: 0 at position {i} has no input dim "
                                         f"(input shape {x.shape})")
                    out[i] = x.shape[i]
        if out.count(-1) > 1 or any(d < -1 for d in out):
            raise fail(self, f"bad shape {dims}")
        if -1 in out:
            known = prod([d for d in out if d != -1])
            if known == 0 or x.size % known:
                raise fail(self, f"cannot reshape {x.shape} to {dims}")
            out[out.index(-1)] = x.size // known
        if prod(out) != x.size:
            raise fail(self, f"cannot reshape {x.shape} ({x.size} elements) to {dims}")
        return (x.reshape(out),)
