"""Reshape: 0 copies the input dim (unless allowzero=1, opset 14), -1 is inferred.

The target shape is the `shape` input (opset 5+) or the opset-1 `shape` attribute."""
from __future__ import annotations

from typing import ClassVar

from edgert.ops._schema import Attr, Val, fmt
from edgert.ops._shape_ops import SAT, dprod, inp, int_vals, list_len, unknown_dims
from edgert.ops._util import fail, int_list, need, prod
from edgert.ops.base import Op, register


@register
class Reshape(Op):
    ONNX_VERSION = 25    # versions 23-25 only added float4e2m1 / float8e8m0 / int2 / uint2,
                         # which edgert does not have
    ATTRS: ClassVar[dict[str, Attr]] = {
        "shape": Attr("ints", lo=-1),          # opset 1 (an input since opset 5)
        "allowzero": Attr("int", lo=0, hi=1),  # opset 14
    }
    IGNORED_ATTRS = frozenset({"consumed_inputs"})    # opset 1, legacy optimisation hint
    INPUTS = (1, 2)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, sv = ins[0], inp(ins, 1)
        dtype = None if x is None else x.dtype
        xshape = None if x is None else x.shape
        if sv is not None:
            dims = int_vals(self, sv, "shape")
        elif self.attr("shape") is not None:
            dims = [int(d) for d in self.attr("shape")]
        else:
            raise self.bad("needs a shape input (or the opset-1 shape attribute)")
        if dims is None:
            n = list_len(self, sv, "shape")
            return [Val(dtype, unknown_dims(n))]
        if dims.count(-1) > 1 or any(d < -1 for d in dims):
            raise self.bad(f"bad shape {dims}")
        allowzero = int(self.attr("allowzero", 0))
        out: list[int | None] = list(dims)
        if not allowzero:
            for i, d in enumerate(dims):
                if d == 0:
                    if xshape is None:
                        out[i] = None
                    elif i >= len(xshape):
                        raise self.bad(f"shape {dims}: 0 at position {i} has no input dim "
                                       f"(input shape {fmt(xshape)})")
                    else:
                        out[i] = xshape[i]
        size = None if xshape is None else dprod(xshape)
        if -1 in out:
            j = out.index(-1)
            rest = dprod([d for k, d in enumerate(out) if k != j])
            if rest == 0:
                raise self.bad(f"shape {dims}: -1 cannot be inferred next to a 0 dim")
            out[j] = None
            if rest is not None and size is not None and rest < SAT and size < SAT:
                if size % rest:
                    raise self.bad(f"cannot reshape {fmt(xshape)} to {dims}")
                out[j] = size // rest
        else:
            total = dprod(out)
            if total is not None and size is not None and total < SAT and size < SAT \
                    and total != size:
                raise self.bad(f"cannot reshape {fmt(xshape)} ({size} elements) to {dims}")
        return [Val(dtype, tuple(out))]

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
        try:
            return (x.reshape(out),)
        except ValueError as e:          # a 0-element shape with dims past numpy's limits
            raise fail(self, f"cannot reshape {x.shape} to {dims}: {e}") from None
