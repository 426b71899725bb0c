"""Constant: a literal from attributes.  The converter folds Constant nodes into initializers, so
this exists only for graphs built by hand.  Attribute forms: value_float (float32 scalar),
value_floats (float32 1-D), value_int (int64 scalar), value_ints (int64 1-D), or `value` as a
plain number / nested list (float -> float32, int -> int64) or {"dtype": name, "data": nested list}.
value_string(s) and sparse_value raise UnsupportedOp."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, unsupported
from edgert.ops.base import Op, register


def literal(op, v) -> np.ndarray:
    """A JSON-style tensor literal -> numpy array (float -> float32, int -> int64, bool -> bool)."""
    if isinstance(v, dict):
        if "dtype" not in v or "data" not in v:
            raise fail(op, "a tensor literal needs 'dtype' and 'data'")
        a = np.array(v["data"], dtype=np.dtype(v["dtype"]))
        if "shape" in v:
            a = a.reshape([int(d) for d in v["shape"]])
        return a
    a = np.array(v)
    if a.dtype == np.float64:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    if a.dtype == np.bool_:
        return a
    raise fail(op, f"cannot make a tensor from {v!r}")


@register
class Constant(Op):
    def __init__(self, node):
        super().__init__(node)
        given = [k for k in self.attrs if k.startswith("value") or k == "sparse_value"]
        if len(given) != 1:
            raise fail(self, f"needs exactly one value attribute, got {given}")
        k = given[0]
        v = self.attrs[k]
        if k == "value_float":
            self.value = np.array(v, dtype=np.float32)
        elif k == "value_floats":
            self.value = np.array(list(v), dtype=np.float32).reshape(-1)
        elif k == "value_int":
            self.value = np.array(v, dtype=np.int64)
        elif k == "value_ints":
            self.value = np.array(list(v), dtype=np.int64).reshape(-1)
        elif k == "value":
            self.value = literal(self, v)
        else:
            raise unsupported(self, f"attribute {k!r} is not supported")

    def run(self):
        return (self.value.copy(),)
