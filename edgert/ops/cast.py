"""Cast: convert to the element type `to` (an onnx.TensorProto.DataType int, a numpy dtype name,
or an opset-1 type name such as "FLOAT").

Float -> integer truncates toward zero (as C and ONNX Runtime); NaN / out-of-range values are
undefined in ONNX and left to numpy.  string, bfloat16, float8, float6, 4-bit and 2-bit types raise
UnsupportedOp; a `to` that names no type at all is a GraphError."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import kind_of, need_val
from edgert.ops._schema import Attr, Val
from edgert.ops._util import need, unsupported
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
                21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2",
                26: "INT2", 27: "FLOAT6E2M3", 28: "FLOAT6E3M2"}
# Cast-1 `to` strings (TensorProto.DataType names) and numpy names -> the enum value
_ONNX_NAMES = {"FLOAT": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6, "INT64": 7,
               "BOOL": 9, "FLOAT16": 10, "DOUBLE": 11, "UINT32": 12, "UINT64": 13}
_NAMES = {**{v: k for k, v in _UNSUPPORTED.items() if k},
          **{v.lower(): k for k, v in _UNSUPPORTED.items() if k},
          **_ONNX_NAMES, **{dt.name: k for k, dt in ONNX_DTYPES.items()}}


def onnx_dtype(op, to) -> np.dtype:
    """`to` (enum int or name) -> numpy dtype; UnsupportedOp for a type edgert lacks, GraphError
    for a value that names no type."""
    code = _NAMES.get(to) if isinstance(to, str) else to
    if isinstance(code, int) and not isinstance(code, bool):
        if code in ONNX_DTYPES:
            return ONNX_DTYPES[code]
        if code in _UNSUPPORTED and code:
            raise unsupported(op, f"element type {_UNSUPPORTED[code]} is not supported")
    raise op.bad(f"'to' {to!r} is not an ONNX element type")


@register
class Cast(Op):
    # Versions 23-28 added only types edgert does not have (float4/6/8e8m0, int2/uint2) and, in 24,
    # `round_mode`, which applies to float8e8m0 targets only.
    ONNX_VERSION = 28
    ATTRS = {"to": Attr(("int", "str"), lo=1, hi=28, required=True),
             "saturate": Attr("int", choices=(0, 1)),      # opset 19+, float8 targets only
             "round_mode": Attr("str", choices=("up", "down", "nearest"))}   # opset 24+, e8m0 only

    def __init__(self, node):
        super().__init__(node)
        self.to = onnx_dtype(self, self.attr("to"))

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = need_val(self, ins, 0, "input")
        return [Val(self.to.name, x.shape)]

    def scratch(self, ins, outs):
        x = ins[0]       # float -> int truncates a copy of X first
        if x is None or kind_of(x.dtype) != "f" or self.to.kind not in "iu":
            return 0
        return x.min_elements() * np.dtype(x.dtype).itemsize

    def run(self, x):
        x = need(self, x, "input")
        if x.dtype == self.to:
            return (x.copy(),)
        if np.issubdtype(x.dtype, np.floating) and np.issubdtype(self.to, np.integer):
            with np.errstate(invalid="ignore"):
                return (np.trunc(x).astype(self.to),)
        with np.errstate(invalid="ignore", over="ignore"):
            return (x.astype(self.to),)
