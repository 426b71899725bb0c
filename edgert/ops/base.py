"""Base class and registry for the numpy reference ops (one op per file in edgert/ops/).

Each op file defines a subclass of `Op` decorated with `@register` that declares its contract —
`ATTRS` (a table of `_schema.Attr`), `INPUTS` / `OUTPUTS` (count ranges), `OPTIONAL_INPUTS`
(positions below the minimum that may still be omitted with "") and `infer(ins) -> list[Val]`
(static shape / dtype inference) — parses its attributes once in `__init__` and implements
`run(*inputs) -> tuple[np.ndarray, ...]`.  Omitted optional inputs arrive as None.  Ops are pure
functions of their inputs.  `edgert.graphcheck` applies the declarations to a whole graph before
any backend sees it; `Op.__init__` checks the attribute table, so a node that constructs is valid.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edgert.errors import GraphError, UnsupportedOp
from edgert.ir import Node
from edgert.ops._schema import Attr, Val, check_attrs
from edgert.registry import Registry

VARIADIC = 1 << 12            # most inputs a variadic op (Concat, Max, Min) accepts


class Op:
    op_type: ClassVar[str] = ""
    ATTRS: ClassVar[dict[str, Attr]] = {}
    IGNORED_ATTRS: ClassVar[frozenset[str]] = frozenset()    # legacy attributes the op ignores
    INPUTS: ClassVar[tuple[int, int]] = (1, 1)               # (min, max) count, "" included
    OPTIONAL_INPUTS: ClassVar[frozenset[int]] = frozenset()  # positions < min that may be ""
    OUTPUTS: ClassVar[tuple[int, int]] = (1, 1)              # outputs past the first may be ""
    # Newest ONNX version of the op (`since_version` in onnx.defs) whose semantics `run` follows.
    # Every op implements opsets 11-21; one whose later versions only added element types edgert
    # does not have raises it.  The importer refuses a node whose schema at the model's opset is
    # newer (converters/onnx_import.py).
    ONNX_VERSION: ClassVar[int] = 21

    def __init__(self, node: Node):
        self.node = node
        check_attrs(node, self.ATTRS, self.IGNORED_ATTRS)
        self.attrs: dict[str, Any] = node.attrs

    def bad(self, msg: str) -> GraphError:
        """A GraphError naming this node: `raise self.bad("...")` from `infer`."""
        return GraphError(f"node {self.node.name!r} ({self.node.op}): {msg}")

    def infer(self, ins: list[Val | None]) -> list[Val]:
        """Output Vals from input Vals (None = omitted input).  Raise `self.bad(...)` when no
        input the graph admits can make the node valid; leave to `run` what depends on data."""
        raise NotImplementedError(f"{type(self).__name__}.infer")

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        """A lower bound on the bytes of temporary buffers `run` allocates beyond its outputs
        (im2col columns, padded copies) for these shapes; checked against the same budget."""
        return 0

    def run(self, *inputs: np.ndarray | None) -> tuple[np.ndarray, ...]:
        raise NotImplementedError(f"{type(self).__name__}.run")


_OPS = Registry("op", "edgert.ops", UnsupportedOp)


def register(cls: type[Op]) -> type[Op]:
    cls.op_type = cls.op_type or cls.__name__
    return _OPS.register(cls.op_type, cls)


def known_ops() -> list[str]:
    return _OPS.known()


def op_class(name: str) -> type[Op]:
    """The registered class of op `name` (UnsupportedOp listing the known ones)."""
    return _OPS.lookup(name)


def get_op(node: Node) -> Op:
    """Instantiate the op for `node`; unknown ops raise UnsupportedOp naming the op and the node."""
    return _OPS.lookup(node.op, f" in node {node.name!r} (numpy backend)")(node)
