"""Less: elementwise a < b (broadcasting) -> bool."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import Binary
from edgert.ops.base import register


@register
class Less(Binary):
    OUT_DTYPE = "bool"

    def compute(self, a, b):
        return np.less(a, b)
