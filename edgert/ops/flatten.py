"""Flatten: to 2-D [prod(shape[:axis]), prod(shape[axis:])]; axis in [-r, r], default 1."""
from __future__ import annotations

from typing import ClassVar

from edgert.ops._schema import Attr, Val
from edgert.ops._shape_ops import dprod
from edgert.ops._util import fail, need, prod
from edgert.ops.base import Op, register


@register
class Flatten(Op):
    ONNX_VERSION = 25    # versions 23-25 only added float4e2m1 / float8e8m0 / int2 / uint2,
                         # which edgert does not have
    ATTRS: ClassVar[dict[str, Attr]] = {"axis": Attr("int")}     # [0, r] before opset 11, [-r, r] since

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = ins[0]
        if x is None or x.shape is None:
            return [Val(None if x is None else x.dtype, (None, None))]
        r = len(x.shape)
        axis = int(self.attr("axis", 1))
        if not -r <= axis <= r:
            raise self.bad(f"axis {axis} is out of range for rank {r}")
        if axis < 0:
            axis += r
        return [Val(x.dtype, (dprod(x.shape[:axis]), dprod(x.shape[axis:])))]

    def run(self, x):
        x = need(self, x, "input")
        r = x.ndim
        axis = int(self.attr("axis", 1))
        if not -r <= axis <= r:
            raise fail(self, f"axis {axis} is out of range for rank {r}")
        if axis < 0:
            axis += r
        return (x.reshape(prod(x.shape[:axis]), prod(x.shape[axis:])),)
