"""ArgMax: int64 index of the maximum along `axis` (default 0), keepdims (default 1),
first occurrence unless select_last_index=1."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import need, norm_axis
from edgert.ops.base import Op, register


@register
class ArgMax(Op):
    def run(self, x):
        x = need(self, x, "data")
        axis = norm_axis(self, self.attr("axis", 0), max(x.ndim, 1))
        keep = bool(self.attr("keepdims", 1))
        if int(self.attr("select_last_index", 0)):
            n = x.shape[axis]
            idx = n - 1 - np.argmax(np.flip(x, axis=axis), axis=axis, keepdims=keep)
        else:
            idx = np.argmax(x, axis=axis, keepdims=keep)
        return (idx.astype(np.int64),)
