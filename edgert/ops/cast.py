"""Cast: convert to the element type `to` (an onnx.TensorProto.DataType int, or a numpy
dtype name).

Float -> integer truncates toward zero (as C and ONNX Runtime); NaN / out-of-range values are
undefined in ONNX and left to numpy.  string, bfloat16, float8 and 4-bit types raise
UnsupportedOp."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, need, unsupported
from edgert.ops.base import Op, register

# onnx.TensorProto.DataType values (onnx/onnx.proto3, enum DataType)
ONNX_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8), 4: np.dtype(np.uint16),
    5: np.dtype(np.int16), 6: np.dtype(np.int32), 7: np.dtype(np.int64), 9: np.dtype(np.bool_),
    10: np.dtype(np.float16), 11: np.dtype(np.float64), 12: np.dtype(np.uint32),
    13: np.dtype(np.uint64),
}
_UNSUPPORTED = {0: "UNDEFINED", 8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16",
                17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ",
                21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1"}


def onnx_dtype(op, to) -> np.dtype:
    if isinstance(to, str):
        try:
            dt = np.dtype(to)
        except TypeError:
            raise fail(op, f"unknown dtype name {to!r}") from None
        if dt not in ONNX_DTYPES.values():
            raise unsupported(op, f"dtype {to!r} is not supported")
        return dt
    to = int(to)
    if to in ONNX_DTYPES:
        return ONNX_DTYPES[to]
    raise unsupported(op, f"element type {_UNSUPPORTED.get(to, to)} is not supported")


@register
class Cast(Op):
    def __init__(self, node):
        super().__init__(node)
        if self.attr("to") is None:
            raise fail(self, "attribute 'to' is required")
        self.to = onnx_dtype(self, self.attr("to"))

    def run(self, x):
        x = need(self, x, "input")
        if x.dtype == self.to:
            return (x.copy(),)
        if np.issubdtype(x.dtype, np.floating) and np.issubdtype(self.to, np.integer):
            with np.errstate(invalid="ignore"):
                return (np.trunc(x).astype(self.to),)
        return (x.astype(self.to),)
