"""Declarations shared by the elementwise ops and other small ops (not an op module: the leading
underscore keeps it out of op discovery).

* dtype-kind helpers: `kind_of(name)` maps a manifest dtype name to its numpy kind ('f', 'i', 'u',
  'b'; None for an unknown or foreign name, which static checks then treat as unknown);
  `check_kind` (static, GraphError) and `need_kind` (run time, InputError) enforce what an op takes.
* `Unary` — one input, same shape and dtype out (Relu, Sqrt, ...).
* `Binary` — two inputs broadcast multidirectionally, including the opset 1-6 `broadcast` / `axis`
  form (B aligned with A's dims from `axis` on); `compute(a, b)` gives the result.
* `Variadic` — Max / Min / Sum-like ops over 1+ inputs.
* `check_alloc` — run-time cap on outputs whose size comes from data (Range, ConstantOfShape).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert import format as F
from edgert.ops._schema import MAX_DIM, Attr, Val, bcast
from edgert.ops._util import broadcast_shape, fail, need, same_dtype
from edgert.ops.base import VARIADIC, Op

KIND: dict[str, str] = {name: np.dtype(code).kind for name, code in F.DTYPES.items()}
FLOAT, INT, SIGNED, NUM, ANY = "f", "iu", "i", "fiu", "fiub"
MAX_RANK = 32           # numpy 1.x's limit on array dims (2.x: 64): a larger rank can never run
_KIND_WORDS = {"f": "float", "i": "signed integer", "u": "unsigned integer", "b": "bool"}


def kind_of(dtype: object) -> str | None:
    """'f' / 'i' / 'u' / 'b' for a known dtype name, else None (unknown: no static check)."""
    return KIND.get(dtype) if isinstance(dtype, str) else None


def _takes(kinds: str) -> str:
    return " or ".join(_KIND_WORDS[k] for k in kinds)


def check_kind(op: Op, v: Val | None, kinds: str, what: str) -> None:
    """GraphError when `v`'s dtype is known and of a kind the op does not take."""
    k = kind_of(None if v is None else v.dtype)
    if k is not None and k not in kinds:
        raise op.bad(f"{what} has dtype {v.dtype}; the op takes {_takes(kinds)}")


def need_kind(op: Op, x: np.ndarray, kinds: str, what: str) -> None:
    """Run-time counterpart of check_kind (InputError)."""
    if x.dtype.kind not in kinds:
        raise fail(op, f"{what} has dtype {x.dtype}; the op takes {_takes(kinds)}")


def need_val(op: Op, ins: list[Val | None], i: int, what: str) -> Val:
    """A required input's Val; an omitted one is a GraphError."""
    v = ins[i] if i < len(ins) else None
    if v is None:
        raise op.bad(f"required input {what!r} is omitted")
    return v


def opt_val(ins: list[Val | None], i: int) -> Val | None:
    return ins[i] if i < len(ins) else None


def common_dtype(op: Op, *vals: Val, what: str = "inputs") -> str | None:
    """The one dtype that `vals` must share (ONNX type constraint T); None while unknown."""
    known = {v.dtype for v in vals if v.dtype is not None}
    if len(known) > 1:
        raise op.bad(f"{what} must share one dtype, got {', '.join(sorted(map(str, known)))}")
    return known.pop() if known else None


def check_alloc(op: Op, dims: list[int], dtype: np.dtype) -> None:
    """Run-time cap for an output whose size comes from data: every dim <= MAX_DIM and the
    whole within the default value budget (InputError, never MemoryError)."""
    if len(dims) > MAX_RANK:
        raise fail(op, f"output rank {len(dims)} is over {MAX_RANK}")
    n = 1
    for d in dims:
        if not 0 <= d <= MAX_DIM:
            raise fail(op, f"output dim {d} is outside [0, {MAX_DIM}]")
        n *= d
    if n * dtype.itemsize > F.DEFAULT_MAX_VALUE_BYTES:
        raise fail(op, f"output of shape {list(dims)} needs {n * dtype.itemsize} bytes, over "
                       f"{F.DEFAULT_MAX_VALUE_BYTES}")


class Unary(Op):
    """One input X, one output of X's shape and dtype.  KINDS: the dtype kinds X may have."""
    KINDS: ClassVar[str] = ANY
    INPUTS = (1, 1)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = need_val(self, ins, 0, "X")
        check_kind(self, x, self.KINDS, "X")
        return [Val(x.dtype, x.shape)]


class Binary(Op):
    """Two inputs A, B broadcast multidirectionally.  SAME_DTYPE: A and B share one dtype;
    OUT_DTYPE: a fixed output dtype (comparisons), else A's.  Opset 1-6 nodes may carry
    broadcast=1 with `axis`: B's dims then line up with A's from `axis` on (B padded with
    trailing 1s), which numpy broadcasting then covers."""
    ATTRS = {"broadcast": Attr("int", choices=(0, 1)),      # opset 1-6
             "axis": Attr("int")}                           # opset 1-6, with broadcast=1
    INPUTS = (2, 2)
    KINDS: ClassVar[str] = ANY          # of A and B
    SAME_DTYPE: ClassVar[bool] = True
    OUT_DTYPE: ClassVar[str | None] = None

    def _legacy_pad(self, ra: int, rb: int, err) -> int:
        """How many trailing 1s B's shape gets under the opset 1-6 axis rule (0 otherwise)."""
        axis = self.attr("axis")
        if not self.attr("broadcast", 0) or axis is None:
            return 0
        if axis < 0:
            axis += ra
        if not 0 <= axis <= ra - rb:
            raise err(f"legacy broadcast axis {self.attr('axis')} does not fit B (rank {rb}) "
                      f"into A (rank {ra})")
        return ra - axis - rb

    def infer(self, ins: list[Val | None]) -> list[Val]:
        a, b = need_val(self, ins, 0, "A"), need_val(self, ins, 1, "B")
        check_kind(self, a, self.KINDS, "A")
        check_kind(self, b, self.KINDS, "B")
        dt = common_dtype(self, a, b) if self.SAME_DTYPE else a.dtype
        bs = b.shape
        if bs is not None and self.attr("broadcast", 0) and self.attr("axis") is not None:
            bs = None if a.shape is None else \
                tuple(bs) + (1,) * self._legacy_pad(len(a.shape), len(bs), self.bad)
        return [Val(self.OUT_DTYPE or dt, bcast(self, a.shape, bs))]

    def operands(self, a, b) -> tuple[np.ndarray, np.ndarray]:
        """Run-time checks of `infer`'s rules; B reshaped for the legacy axis form."""
        a, b = need(self, a, "A"), need(self, b, "B")
        need_kind(self, a, self.KINDS, "A")
        need_kind(self, b, self.KINDS, "B")
        if self.SAME_DTYPE:
            same_dtype(self, a, b)
        pad = self._legacy_pad(a.ndim, b.ndim, lambda m: fail(self, m))
        if pad:
            b = b.reshape(b.shape + (1,) * pad)
        broadcast_shape(self, a.shape, b.shape)
        return a, b

    def compute(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.compute")

    def run(self, a, b):
        return (self.compute(*self.operands(a, b)),)


class Variadic(Op):
    """1+ inputs of one dtype, broadcast together (Max, Min)."""
    IGNORED_ATTRS = frozenset({"consumed_inputs"})          # opset 1
    INPUTS = (1, VARIADIC)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        if not ins:
            raise self.bad("needs at least one input")
        vals = [need_val(self, ins, i, f"data_{i}") for i in range(len(ins))]
        return [Val(common_dtype(self, *vals), bcast(self, *(v.shape for v in vals)))]
