"""Min: elementwise minimum of one or more inputs with broadcasting
(NaN propagates, as ONNX Runtime)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import Variadic
from edgert.ops._util import variadic
from edgert.ops.base import register


@register
class Min(Variadic):
    def run(self, *xs):
        return (variadic(self, np.minimum, xs),)
