"""Transpose: permute axes by `perm` (default: reverse them)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, need
from edgert.ops.base import Op, register


@register
class Transpose(Op):
    def run(self, x):
        x = need(self, x, "data")
        perm = self.attr("perm")
        perm = list(range(x.ndim))[::-1] if perm is None else [int(p) for p in perm]
        if sorted(perm) != list(range(x.ndim)):
            raise fail(self, f"perm {perm} is not a permutation of {x.ndim} axes")
        return (np.ascontiguousarray(np.transpose(x, perm)),)
