"""Gemm: Y = alpha·A'·B' + beta·C, A' = A.T if transA, B' = B.T if transB, C unidirectionally broadcast."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.ops._geometry import (GEMM_TYPES, checked_run, need_dtype, need_rank, same_dtype,
                                  shape_of)
from edgert.ops._schema import Attr, Val, fmt
from edgert.ops.base import Op, register


@register
class Gemm(Op):
    ATTRS: ClassVar[dict[str, Attr]] = {
        "alpha": Attr("float"),
        "beta": Attr("float"),
        "transA": Attr("int", choices=(0, 1)),
        "transB": Attr("int", choices=(0, 1)),
    }
    IGNORED_ATTRS = frozenset({"broadcast"})     # opsets 1-6: C always broadcasts here
    INPUTS = (2, 3)

    def __init__(self, node):
        super().__init__(node)
        self.alpha = float(self.attr("alpha", 1.0))
        self.beta = float(self.attr("beta", 1.0))
        self.trans_a = bool(self.attr("transA", 0))
        self.trans_b = bool(self.attr("transB", 0))

    def infer(self, ins: list[Val | None]) -> list[Val]:
        a, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        for what, v in (("A", a), ("B", b), ("C", c)):
            need_dtype(self, v, GEMM_TYPES, what)
        dt = same_dtype(self, ("A", a), ("B", b), ("C", c))
        sa, sb, sc = shape_of(a), shape_of(b), shape_of(c)
        need_rank(self, sa, 2, 2, "A")
        need_rank(self, sb, 2, 2, "B")
        need_rank(self, sc, 0, 2, "C")
        m, ka = (None, None) if sa is None else ((sa[1], sa[0]) if self.trans_a else sa)
        kb, n = (None, None) if sb is None else ((sb[1], sb[0]) if self.trans_b else sb)
        if ka is not None and kb is not None and ka != kb:
            raise self.bad(f"inner dims of A {fmt(sa)}{'ᵀ' if self.trans_a else ''} and "
                           f"B {fmt(sb)}{'ᵀ' if self.trans_b else ''} do not match ({ka} vs {kb})")
        out = [m, n]
        if sc is not None:                        # C broadcasts to (M, N), never the other way
            for i, cd in zip(range(2 - len(sc), 2), sc):
                if cd is None or cd == 1:
                    continue
                if out[i] is None:
                    out[i] = cd
                elif out[i] != cd:
                    raise self.bad(f"C {fmt(sc)} does not broadcast to the output "
                                   f"{fmt(tuple(out))}")
        return [Val(dt, tuple(out))]

    def run(self, a, b, c=None):
        checked_run(self, [a, b, c])
        a2 = a.T if self.trans_a else a
        b2 = b.T if self.trans_b else b
        y = a2 @ b2
        with np.errstate(over="ignore", invalid="ignore"):   # float16 / int overflow: inf / wrap
            if self.alpha != 1.0:
                y = y * _coef(self.alpha, y.dtype)
            if c is not None and self.beta != 0.0:
                cc = c if self.beta == 1.0 else c * _coef(self.beta, c.dtype)
                y = y + cc
            return (y.astype(a.dtype, copy=False),)


def _coef(v: float, dtype: np.dtype):
    """alpha / beta for a product in `dtype`: of that float type, or a Python float for integer
    tensors (computed in float64 then cast back, as ONNX's reference)."""
    return np.asarray(v, dtype) if dtype.kind == "f" else v
