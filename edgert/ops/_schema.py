"""What an op declares about itself, so one check serves the numpy oracle, the ORT lowering and any
later backend (not an op module: the leading underscore keeps it out of op discovery).

* `Attr` — the type, range, choices and list length of one attribute.  `check_attrs` applies an
  op's table to a node before anything parses it: unknown names, wrong JSON types, ints outside
  int64, non-finite or float32-overflowing floats and out-of-range values all raise GraphError
  naming the node and the attribute.
* `Val` — what static shape inference knows about a value: dtype, shape (a dim may be None =
  unknown; the shape itself None = unknown rank) and, for small constants, the value itself.
  Each op's `infer(ins) -> list[Val]` (see base.Op) maps input Vals to output Vals and raises
  GraphError when the node cannot be valid for any input the graph admits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgert.errors import GraphError

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_ATTR_LIST = 4096            # longest list attribute accepted (perm, pads, shapes are far shorter)
MAX_ATTR_STR = 256
MAX_DIM = (1 << 31) - 1         # largest dim shape inference accepts (ONNX dims are int64; ORT int64)

_KINDS = ("int", "float", "str", "ints", "floats", "strs", "json")


@dataclass(frozen=True)
class Attr:
    """One attribute of an op.  kind: int | float | str | ints | floats | strs | json (any JSON value
    the op parses itself, e.g. Constant's literal), or a tuple of those (either is accepted)."""
    kind: str | tuple[str, ...]
    lo: float | None = None          # every (element) value >= lo
    hi: float | None = None          # every (element) value <= hi
    choices: tuple[Any, ...] | None = None
    max_len: int = MAX_ATTR_LIST     # for list kinds
    required: bool = False

    def kinds(self) -> tuple[str, ...]:
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar_problem(kind: str, v: Any, a: Attr) -> str | None:
    if kind == "int":
        if not _is_int(v):
            return f"must be an int, got {type(v).__name__}"
        if not INT64_MIN <= v <= INT64_MAX:
            return f"{v} is outside int64"
    elif kind == "float":
        if not _is_num(v):
            return f"must be a number, got {type(v).__name__}"
        if not math.isfinite(v) or abs(v) > FLOAT32_MAX:
            return f"{v!r} is not a finite float32"
    elif kind == "str":
        if not isinstance(v, str):
            return f"must be a string, got {type(v).__name__}"
        if len(v) > MAX_ATTR_STR:
            return f"is a string of {len(v)} characters (at most {MAX_ATTR_STR})"
    if a.choices is not None and v not in a.choices:
        return f"{v!r} is not one of {', '.join(map(repr, a.choices))}"
    if kind in ("int", "float"):
        if a.lo is not None and v < a.lo:
            return f"{v} is below {a.lo:g}"
        if a.hi is not None and v > a.hi:
            return f"{v} is above {a.hi:g}"
    return None


def _problem(kind: str, v: Any, a: Attr) -> str | None:
    if kind == "json":
        return None
    if kind in ("ints", "floats", "strs"):
        if not isinstance(v, list):
            return f"must be a list, got {type(v).__name__}"
        if len(v) > a.max_len:
            return f"has {len(v)} entries (at most {a.max_len})"
        for i, x in enumerate(v):
            p = _scalar_problem(kind[:-1], x, a)
            if p:
                return f"[{i}] {p}"
        return None
    return _scalar_problem(kind, v, a)


def check_attrs(node, table: dict[str, Attr], ignored: frozenset[str] = frozenset()) -> None:
    """Raise GraphError unless every attribute of `node` is declared in `table` (or `ignored`) and
    valid, and every required one is present."""
    attrs = node.attrs
    if not isinstance(attrs, dict):
        raise GraphError(f"node {node.name!r} ({node.op}): attrs must be an object")
    for key, v in attrs.items():
        if key in ignored:
            continue
        a = table.get(key)
        if a is None:
            known = ", ".join(sorted(table)) or "none"
            raise GraphError(f"node {node.name!r} ({node.op}): unknown attribute {key!r} "
                             f"(known: {known})")
        problems = [_problem(k, v, a) for k in a.kinds()]
        if all(problems):
            raise GraphError(f"node {node.name!r} ({node.op}): attribute {key!r} "
                             f"{problems[0]}")
    for key, a in table.items():
        if a.required and key not in attrs:
            raise GraphError(f"node {node.name!r} ({node.op}): attribute {key!r} is required")


# ---------------------------------------------------------------------------------------------
# Static shape inference values
# ---------------------------------------------------------------------------------------------
Shape = tuple  # of int | None


@dataclass
class Val:
    dtype: str | None                    # numpy dtype name; None = unknown
    shape: Shape | None                  # None = unknown rank; a dim None = unknown size
    value: np.ndarray | None = None      # the value itself, for constants / folded shape math

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def known(self) -> bool:
        """Every dim is known."""
        return self.shape is not None and all(d is not None for d in self.shape)

    def min_elements(self) -> int:
        """A lower bound on the element count (unknown dims count as 1)."""
        n = 1
        for d in self.shape or ():
            n *= 1 if d is None else d
        return n

    def min_bytes(self) -> int:
        return self.min_elements() * itemsize(self.dtype)


def itemsize(dtype: str | None) -> int:
    """Bytes per element of a dtype name; 1 when unknown (a lower bound)."""
    try:
        return np.dtype(dtype).itemsize if dtype else 1
    except TypeError:
        return 1


def of_array(a: np.ndarray) -> Val:
    a = np.asarray(a)
    return Val(a.dtype.name, tuple(int(d) for d in a.shape), a)


def unknown(dtype: str | None = None, rank: int | None = None) -> Val:
    return Val(dtype, None if rank is None else (None,) * rank)


def ints_of(v: Val | None) -> list[int] | None:
    """The known value of a 1-D (or scalar) integer tensor as a list, else None."""
    if v is None or v.value is None:
        return None
    a = np.asarray(v.value)
    if a.ndim > 1 or (a.size and a.dtype.kind not in "iu"):
        return None
    return [int(x) for x in a.reshape(-1)]


def bcast(op, *shapes: Shape | None) -> Shape | None:
    """Multidirectional broadcasting of partly known shapes; GraphError when two known dims clash."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out: list[int | None] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise op.bad(f"shapes {', '.join(fmt(s) for s in shapes)} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def fmt(shape: Shape | None) -> str:
    if shape is None:
        return "[?...]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def norm_axis(op, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise op.bad(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def norm_axes(op, axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    out = [norm_axis(op, a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise op.bad(f"{what} {list(axes)} repeat an axis")
    return out


def check_dims(op, shape: Sequence[int | None], what: str = "output") -> tuple:
    """A computed shape: every known dim must be in [0, MAX_DIM]."""
    for d in shape:
        if d is not None and not 0 <= d <= MAX_DIM:
            raise op.bad(f"{what} shape {fmt(tuple(shape))} has a dim outside [0, {MAX_DIM}]")
    return tuple(shape)


def coerce_attrs(table: dict[str, Attr], attrs: dict[str, Any]) -> dict[str, Any]:
    """Checked attrs with JSON ints made floats where the op declares a float kind (JSON writes
    1.0 as 1; ONNX, and so the ORT lowering, types attributes strictly)."""
    out = dict(attrs)
    for key, v in attrs.items():
        a = table.get(key)
        if a is None or len(a.kinds()) != 1:
            continue
        if a.kind == "float" and _is_int(v):
            out[key] = float(v)
        elif a.kind == "floats" and isinstance(v, list):
            out[key] = [float(x) for x in v]
    return out
