"""Identity: returns its input unchanged."""
from __future__ import annotations

from edgert.ops._elementwise import Unary
from edgert.ops._util import need
from edgert.ops.base import register


@register
class Identity(Unary):
    def run(self, x):
        x = need(self, x, "X")
        return (x,)
