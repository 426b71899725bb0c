"""Identity: returns its input unchanged."""
from __future__ import annotations

from edgert.ops._util import need
from edgert.ops.base import Op, register


@register
class Identity(Op):
    def run(self, x):
        x = need(self, x, "X")
        return (x,)
