"""Gemm: Y = alpha·A'·B' + beta·C, A' = A.T if transA, B' = B.T if transB, C unidirectionally broadcast."""
from __future__ import annotations

import numpy as np

from edgert.ops.base import Op, register


@register
class Gemm(Op):
    def __init__(self, node):
        super().__init__(node)
        self.alpha = float(self.attr("alpha", 1.0))
        self.beta = float(self.attr("beta", 1.0))
        self.trans_a = bool(self.attr("transA", 0))
        self.trans_b = bool(self.attr("transB", 0))

    def run(self, a, b, c=None):
        a2 = a.T if self.trans_a else a
        b2 = b.T if self.trans_b else b
        y = a2 @ b2
        if self.alpha != 1.0:
            y = y * np.asarray(self.alpha, y.dtype)
        if c is not None and self.beta != 0.0:
            cc = c if self.beta == 1.0 else c * np.asarray(self.beta, c.dtype)
            y = y + cc
        return (y.astype(a.dtype, copy=False),)
