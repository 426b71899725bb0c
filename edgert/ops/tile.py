"""Tile: repeat the input `repeats[i]` times along axis i (repeats: 1-D int64, one per axis)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, int_list, need
from edgert.ops.base import Op, register


@register
class Tile(Op):
    def run(self, x, repeats):
        x = need(self, x, "input")
        reps = int_list(self, need(self, repeats, "repeats"), "repeats")
        if len(reps) != x.ndim or any(r < 0 for r in reps):
            raise fail(self, f"repeats {reps} must be {x.ndim} non-negative ints "
                             f"for shape {x.shape}")
        return (np.tile(x, reps),)
