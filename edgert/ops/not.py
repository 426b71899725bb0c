"""Not: elementwise logical not of a bool tensor."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import Unary
from edgert.ops._util import fail, need
from edgert.ops.base import register


@register
class Not(Unary):
    KINDS = "b"

    def run(self, x):
        x = need(self, x, "X")
        if x.dtype != np.bool_:
            raise fail(self, f"expects bool, got {x.dtype}")
        return (np.logical_not(x),)
