"""Add: elementwise a + b with numpy (multidirectional) broadcasting."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import Binary
from edgert.ops.base import register


@register
class Add(Binary):
    IGNORED_ATTRS = frozenset({"consumed_inputs"})      # opset 1

    def compute(self, a, b):
        return np.add(a, b)
