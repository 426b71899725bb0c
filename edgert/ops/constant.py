"""Constant: a literal from attributes.  The converter folds Constant nodes into initializers, so
this exists only for graphs built by hand.  Attribute forms: value_float (float32 scalar),
value_floats (float32 1-D), value_int (int64 scalar), value_ints (int64 1-D), or `value` as a
plain number / nested list (float -> float32, int -> int64, bool -> bool) or
{"dtype": name, "data": nested list or number, "shape": [dims] (optional)} with a manifest dtype
name.  value_string(s) and sparse_value raise UnsupportedOp; a malformed literal is a GraphError."""
from __future__ import annotations

import math

import numpy as np

from edgert import format as F
from edgert.ops._schema import Attr, Val, of_array
from edgert.ops._util import unsupported
from edgert.ops.base import Op, register

MAX_LITERAL = 1 << 20          # elements in one attribute literal (the manifest bounds it anyway)


def _numbers(op, data) -> np.ndarray:
    """A JSON number / bool / nested list of them -> array of kind b, i, u or f, else GraphError."""
    try:
        a = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        raise op.bad("a tensor literal must be a number or a rectangular nested list of numbers") \
            from None
    if a.dtype.kind not in "biuf" or a.ndim > F.MAX_TENSOR_RANK:
        raise op.bad(f"a tensor literal must be a number or a rectangular nested list of numbers "
                     f"(rank <= {F.MAX_TENSOR_RANK}), got {a.dtype} of rank {a.ndim}")
    if a.size > MAX_LITERAL:
        raise op.bad(f"a tensor literal has {a.size} elements (at most {MAX_LITERAL})")
    return a


def _to(op, a: np.ndarray, dt: np.dtype) -> np.ndarray:
    """Cast a parsed literal to `dt` without silent loss: integer (and bool) tensors get whole
    numbers in their range, float tensors finite numbers that stay finite."""
    if dt.kind in "iub":
        if a.dtype.kind == "f" and not np.all(np.isfinite(a) & (a == np.trunc(a))):
            raise op.bad(f"a tensor literal of dtype {dt.name} holds non-integer numbers")
        if a.size:
            lo, hi = int(a.min()), int(a.max())
            low, high = (0, 1) if dt.kind == "b" else (int(np.iinfo(dt).min), int(np.iinfo(dt).max))
            if lo < low or hi > high:
                raise op.bad(f"a tensor literal of dtype {dt.name} holds "
                             f"{lo if lo < low else hi}, outside [{low}, {high}]")
        return a.astype(dt)
    with np.errstate(over="ignore"):
        out = a.astype(dt)
    if a.size and not np.array_equal(np.isfinite(out), np.isfinite(a)):
        raise op.bad(f"a tensor literal of dtype {dt.name} holds numbers beyond its range")
    return out


def literal(op, v) -> np.ndarray:
    """A JSON-style tensor literal -> numpy array (float -> float32, int -> int64, bool -> bool);
    GraphError (naming the node) for anything else."""
    if isinstance(v, dict):
        if "dtype" not in v or "data" not in v or set(v) - {"dtype", "data", "shape"}:
            raise op.bad("a tensor literal is {'dtype', 'data'[, 'shape']}")
        dt = v["dtype"]
        if not isinstance(dt, str) or dt not in F.DTYPES:
            raise op.bad(f"tensor literal dtype {dt!r} is not one of {', '.join(F.DTYPES)}")
        a = _to(op, _numbers(op, v["data"]), np.dtype(dt))
        if "shape" in v:
            shape = v["shape"]
            if not (isinstance(shape, list) and len(shape) <= F.MAX_TENSOR_RANK and all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
                raise op.bad(f"tensor literal shape {shape!r} must be a list of at most "
                             f"{F.MAX_TENSOR_RANK} non-negative ints")
            if math.prod(shape) != a.size:
                raise op.bad(f"tensor literal shape {shape} does not hold its {a.size} elements")
            a = a.reshape(shape)
        return a
    a = _numbers(op, v)
    if a.dtype.kind == "f":
        return _to(op, a, np.dtype(np.float32))
    if a.dtype.kind in "iu":
        return _to(op, a, np.dtype(np.int64))
    return a


@register
class Constant(Op):
    ONNX_VERSION = 25    # versions 23-25 only added float4e2m1 / float8e8m0 / int2 / uint2,
                         # which edgert does not have
    ATTRS = {"value": Attr("json"),
             "value_float": Attr("float"), "value_floats": Attr("floats", max_len=MAX_LITERAL),
             "value_int": Attr("int"), "value_ints": Attr("ints", max_len=MAX_LITERAL),
             "value_string": Attr("str"), "value_strings": Attr("strs"),
             "sparse_value": Attr("json")}
    INPUTS = (0, 0)

    def __init__(self, node):
        super().__init__(node)
        given = [k for k in self.ATTRS if k in self.attrs]
        if len(given) != 1:
            raise self.bad(f"needs exactly one value attribute, got {given}")
        k = given[0]
        v = self.attrs[k]
        if k == "value_float":
            self.value = np.array(v, dtype=np.float32)
        elif k == "value_floats":
            self.value = np.array(v, dtype=np.float32).reshape(-1)
        elif k == "value_int":
            self.value = np.array(v, dtype=np.int64)
        elif k == "value_ints":
            self.value = np.array(v, dtype=np.int64).reshape(-1)
        elif k == "value":
            self.value = literal(self, v)
        else:
            raise unsupported(self, f"attribute {k!r} is not supported")

    def infer(self, ins: list[Val | None]) -> list[Val]:
        return [of_array(self.value)]

    def run(self):
        return (self.value.copy(),)
