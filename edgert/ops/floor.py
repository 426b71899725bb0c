"""Floor: elementwise floor."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import FLOAT, Unary
from edgert.ops._util import need, need_float
from edgert.ops.base import register


@register
class Floor(Unary):
    KINDS = FLOAT
    IGNORED_ATTRS = frozenset({"consumed_inputs"})      # opset 1

    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        return (np.floor(x),)
