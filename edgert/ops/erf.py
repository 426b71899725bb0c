"""Erf: the error function, elementwise, without scipy.

|x| < 0.5: Maclaurin series (13 terms; the remainder is < 1e-17).  Otherwise 1 - erfc(|x|) with
the Chebyshev fit of erfc from Numerical Recipes (2nd ed., sec. 6.2, fractional error < 1.2e-7),
which is below float32 resolution of erf there (erf >= 0.52).  Evaluated in float64."""
from __future__ import annotations

import math

import numpy as np

from edgert.ops._elementwise import FLOAT, Unary
from edgert.ops._util import need, need_float
from edgert.ops.base import register

_SERIES = [(-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(13)]
_ERFC = [-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
         0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277]


def _erf(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    ax = np.abs(x)
    # series part
    x2 = x * x
    s = np.zeros_like(x)
    for c in reversed(_SERIES):
        s = s * x2 + c
    small = (2.0 / math.sqrt(math.pi)) * x * s
    # erfc part (Horner in t)
    t = 1.0 / (1.0 + 0.5 * ax)
    p = np.zeros_like(x)
    for c in reversed(_ERFC):
        p = p * t + c
    erfc = t * np.exp(-ax * ax + p)
    large = np.sign(x) * (1.0 - erfc)
    return np.where(ax < 0.5, small, large)


@register
class Erf(Unary):
    KINDS = FLOAT

    def scratch(self, ins, outs):
        return outs[0].min_elements() * 8            # float64 temporaries of X's size

    def run(self, x):
        x = need(self, x, "input")
        need_float(self, x)
        return (_erf(x).astype(x.dtype),)
