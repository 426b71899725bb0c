"""Transpose: permute axes by `perm` (default: reverse them)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.ops._schema import Attr, Val
from edgert.ops._util import fail, need
from edgert.ops.base import Op, register


@register
class Transpose(Op):
    ONNX_VERSION = 25    # versions 23-25 only added float4e2m1 / float8e8m0 / int2 / uint2,
                         # which edgert does not have
    ATTRS: ClassVar[dict[str, Attr]] = {"perm": Attr("ints", lo=0)}

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = ins[0]
        dtype = None if x is None else x.dtype
        shape = None if x is None else x.shape
        perm = self.attr("perm")
        if perm is None:
            return [Val(dtype, None if shape is None else tuple(reversed(shape)))]
        perm = [int(p) for p in perm]
        if sorted(perm) != list(range(len(perm))):
            raise self.bad(f"perm {perm} is not a permutation")
        if shape is None:
            return [Val(dtype, (None,) * len(perm))]
        if len(perm) != len(shape):
            raise self.bad(f"perm {perm} is not a permutation of {len(shape)} axes")
        return [Val(dtype, tuple(shape[p] for p in perm))]

    def run(self, x):
        x = need(self, x, "data")
        perm = self.attr("perm")
        perm = list(range(x.ndim))[::-1] if perm is None else [int(p) for p in perm]
        if sorted(perm) != list(range(x.ndim)):
            raise fail(self, f"perm {perm} is not a permutation of {x.ndim} axes")
        return (np.transpose(x, perm).copy(order="C"),)     # (ascontiguousarray makes 0-d 1-d)
