"""Sub: elementwise a - b with numpy (multidirectional) broadcasting (numeric types, not bool)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import NUM, Binary
from edgert.ops.base import register


@register
class Sub(Binary):
    IGNORED_ATTRS = frozenset({"consumed_inputs"})      # opset 1
    KINDS = NUM

    def compute(self, a, b):
        return np.subtract(a, b)
