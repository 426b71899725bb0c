"""Neg: elementwise -x (numeric types, not bool)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import NUM, Unary, need_kind
from edgert.ops._util import need
from edgert.ops.base import register


@register
class Neg(Unary):
    KINDS = NUM
    IGNORED_ATTRS = frozenset({"consumed_inputs"})      # opset 1

    def run(self, x):
        x = need(self, x, "X")
        need_kind(self, x, NUM, "X")
        return (np.negative(x),)
