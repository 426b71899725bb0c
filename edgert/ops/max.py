"""Max: elementwise maximum of one or more inputs with broadcasting
(NaN propagates, as ONNX Runtime)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import variadic
from edgert.ops.base import Op, register


@register
class Max(Op):
    def run(self, *xs):
        return (variadic(self, np.maximum, xs),)
