"""Greater: elementwise a > b (broadcasting) -> bool."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import broadcast_shape, need, same_dtype
from edgert.ops.base import Op, register


@register
class Greater(Op):
    def run(self, a, b):
        a, b = need(self, a, "A"), need(self, b, "B")
        same_dtype(self, a, b)
        broadcast_shape(self, a.shape, b.shape)
        return (np.greater(a, b),)
