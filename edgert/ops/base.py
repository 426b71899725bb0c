"""Base class and registry for the numpy reference ops (one op per file in edgert/ops/).

Each op file defines a subclass of `Op` decorated with `@register`; the class parses its
attributes once in `__init__` and implements `run(*inputs) -> tuple[np.ndarray, ...]`.
Omitted optional inputs arrive as None.  Ops are pure functions of their inputs.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edgert.errors import UnsupportedOp
from edgert.ir import Node
from edgert.registry import Registry



class Op:
    op_type: ClassVar[str] = ""

    def __init__(self, node: Node):
        self.node = node
        self.attrs: dict[str, Any] = node.attrs

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def run(self, *inputs: np.ndarray | None) -> tuple[np.ndarray, ...]:
        raise NotImplementedError(f"{type(self).__name__}.run")


_OPS = Registry("op", "edgert.ops", UnsupportedOp)


def register(cls: type[Op]) -> type[Op]:
    cls.op_type = cls.op_type or cls.__name__
    return _OPS.register(cls.op_type, cls)


def known_ops() -> list[str]:
    return _OPS.known()


def get_op(node: Node) -> Op:
    """Instantiate the op for `node`; unknown ops raise UnsupportedOp naming the op and the node."""
    return _OPS.lookup(node.op, f" in node {node.name!r} (numpy backend)")(node)
