"""Static-inference helpers shared by the shape ops (Reshape, Slice, Pad, Resize...); not an op
module: the leading underscore keeps it out of op discovery.

Everything here works on `_schema.Val`s with Python ints (no numpy integer arithmetic, so values
like 2**62 cannot overflow) and never allocates from a size it was given."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from edgert.ops._schema import Val

SAT = 1 << 63          # saturated element count: over any dim cap, so a checked shape is rejected
MAX_RANK = 64          # numpy's most dims; a longer shape of unknown dims is reported as unknown rank


def kind_of(dtype: str | None) -> str | None:
    """numpy dtype kind ('f', 'i', 'u', 'b', ...) of a dtype name; None when unknown / not a dtype."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype).kind
    except (TypeError, ValueError):
        return None


def inp(ins: Sequence[Val | None], i: int) -> Val | None:
    """Input i, or None when the node has fewer inputs or it is omitted."""
    return ins[i] if i < len(ins) else None


def dprod(dims: Sequence[int | None]) -> int | None:
    """Product of partly known dims: 0 when a known dim is 0, None when another is unknown,
    saturated at SAT (so huge shapes stay huge without giant integers)."""
    if any(d == 0 for d in dims):
        return 0
    if any(d is None for d in dims):
        return None
    n = 1
    for d in dims:
        n *= d
        if n >= SAT:
            return SAT
    return n


def unknown_dims(n: int | None) -> tuple | None:
    """n unknown dims; None (unknown rank) when n is unknown or past MAX_RANK (a length taken from
    a parameter tensor's shape can be anything; never build a giant tuple from it)."""
    return None if n is None or n > MAX_RANK else (None,) * n


def list_len(op: Any, v: Val | None, what: str) -> int | None:
    """Known entry count of a 1-D (or scalar) parameter tensor, None when unknown; GraphError when
    its rank is known to be over 1 (the ops read such inputs with `_util.int_list`, which needs
    rank <= 1)."""
    if v is None:
        return None
    if v.value is not None:
        return int(np.asarray(v.value).size)
    if v.shape is None:
        return None
    if len(v.shape) > 1:
        raise op.bad(f"{what} must be 1-D, got shape {tuple(v.shape)}")
    return 1 if len(v.shape) == 0 else v.shape[0]


def int_vals(op: Any, v: Val | None, what: str) -> list[int] | None:
    """The known value of a 1-D (or scalar) integer parameter tensor as Python ints; None when not
    known.  GraphError when it can never be valid: rank > 1, or a non-empty tensor that is not an
    integer type (what `_util.int_list` rejects at run time)."""
    n = list_len(op, v, what)
    if v is None:
        return None
    if v.value is None:
        k = kind_of(v.dtype)
        if n and k is not None and k not in "iu":
            raise op.bad(f"{what} must be integers, got dtype {v.dtype}")
        return None
    a = np.asarray(v.value)
    if a.ndim > 1:
        raise op.bad(f"{what} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        return []
    if a.dtype.kind not in "iu":
        raise op.bad(f"{what} must be integers, got dtype {a.dtype}")
    return [int(x) for x in a.reshape(-1).tolist()]


def axes_of(op: Any, av: Val | None) -> tuple[list[int] | None, int | None]:
    """The `axes` parameter of Squeeze / Unsqueeze: from the input when given, else from the
    (opset <= 11) attribute, as (values or None while unknown, count or None while unknown)."""
    if av is not None:
        return int_vals(op, av, "axes"), list_len(op, av, "axes")
    a = op.attr("axes")
    return (None, None) if a is None else ([int(x) for x in a], len(a))


def floor_mul(s: float, d: int, add: float = 0.0) -> int:
    """floor(s * d + add) as a Python int; SAT when it is not finite or past SAT."""
    try:
        v = s * d + add
    except OverflowError:            # d too big for a float
        return SAT
    if not math.isfinite(v):
        return SAT if v > 0 or math.isnan(v) else 0
    if v >= SAT:
        return SAT
    return int(math.floor(v))


def same_dtype(op: Any, vals: Sequence[Val | None], what: str = "inputs") -> str | None:
    """The one known dtype of `vals` (None when none is known); GraphError when two differ."""
    dts = {v.dtype for v in vals if v is not None and v.dtype is not None}
    if len(dts) > 1:
        raise op.bad(f"{what} must share one dtype, got {', '.join(sorted(dts))}")
    return dts.pop() if dts else None
