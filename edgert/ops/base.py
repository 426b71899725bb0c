"""Base class and registry for the numpy reference ops (one op per file in edgert/ops/).

Each op file defines a subclass of `Op` decorated with `@register`; the class parses its
attributes once in `__init__` and implements `run(*inputs) -> tuple[np.ndarray, ...]`.
Omitted optional inputs arrive as None.  Ops are pure functions of their inputs.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

import numpy as np

from edgert.errors import UnsupportedOp
from edgert.ir import Node

_REGISTRY: dict[str, type["Op"]] = {}
_DISCOVERED = False


class Op:
    op_type: ClassVar[str] = ""

    def __init__(self, node: Node):
        self.node = node
        self.attrs: dict[str, Any] = node.attrs

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def run(self, *inputs: np.ndarray | None) -> tuple[np.ndarray, ...]:
        raise NotImplementedError(f"{type(self).__name__}.run")


def register(cls: type[Op]) -> type[Op]:
    name = cls.op_type or cls.__name__
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise RuntimeError(f"op {name} registered twice")
    cls.op_type = name
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import edgert.ops as pkg
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"edgert.ops.{mod.name}")
    _DISCOVERED = True


def known_ops() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_op(node: Node) -> Op:
    """Instantiate the op for `node`; unknown ops raise UnsupportedOp naming the op and the node."""
    _discover()
    cls = _REGISTRY.get(node.op)
    if cls is None:
        raise UnsupportedOp(f"unknown op {node.op!r} in node {node.name!r} "
                            f"(numpy backend knows: {', '.join(sorted(_REGISTRY))})")
    return cls(node)
