"""Small graph helpers the passes share (not a pass: no `run`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgert.ir import Dim, Graph, Node


def output_names(graph: Graph) -> set[str]:
    return {o.name for o in graph.outputs}


def const(graph: Graph, name: str) -> np.ndarray | None:
    """The initializer called `name`, or None (also for the omitted-input name "")."""
    return graph.initializers.get(name) if name else None


def sole_consumer(graph: Graph, name: str, consumers: dict[str, list[Node]]) -> Node | None:
    """The one node reading `name` (once), when `name` is not also a graph output."""
    users = consumers.get(name, [])
    if len(users) != 1 or name in output_names(graph) or users[0].inputs.count(name) != 1:
        return None
    return users[0]


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Point every node input reading `old` at `new` (graph outputs are the caller's business)."""
    for n in graph.nodes:
        if old in n.inputs:
            n.inputs = [new if x == old else x for x in n.inputs]


def value_shape(graph: Graph, name: str) -> list[Dim] | None:
    if name in graph.initializers:
        return list(graph.initializers[name].shape)
    for vi in graph.inputs:
        if vi.name == name:
            return list(vi.shape)
    shapes = graph.metadata.get("value_shapes") or {}
    if name in shapes:
        return list(shapes[name])
    for vi in graph.outputs:
        if vi.name == name:
            return list(vi.shape)
    return None


def static_shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    s = value_shape(graph, name)
    if s is None or not all(isinstance(d, int) for d in s):
        return None
    return tuple(int(d) for d in s)


def value_dtype(graph: Graph, name: str) -> str | None:
    if name in graph.initializers:
        return graph.initializers[name].dtype.name
    for vi in graph.inputs + graph.outputs:
        if vi.name == name:
            return vi.dtype
    return (graph.metadata.get("value_dtypes") or {}).get(name)


def unique_name(graph: Graph, base: str) -> str:
    taken = set(graph.initializers) | {x for n in graph.nodes for x in n.inputs + n.outputs}
    taken |= {vi.name for vi in graph.inputs + graph.outputs}
    if base not in taken:
        return base
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def all_equal(arr: np.ndarray | None, value: float, rtol: float = 0.0, atol: float = 0.0) -> bool:
    """True when `arr` is a non-empty float/int tensor whose every element is `value` (within tol)."""
    if arr is None or arr.size == 0 or arr.dtype.kind not in "fiu":
        return False
    return bool(np.allclose(arr.astype(np.float64), value, rtol=rtol, atol=atol))


def attr_or_input_const(graph: Graph, node: Node, attr: str, index: int) -> Any:
    """A parameter that is an attribute in old opsets and an input in new ones (Clip min/max, ...).

    Returns the attribute value, else the constant input as an array, else None when the input is
    omitted; raises LookupError when the input is present but not a constant."""
    if attr in node.attrs:
        return node.attrs[attr]
    if index >= len(node.inputs) or not node.inputs[index]:
        return None
    c = const(graph, node.inputs[index])
    if c is None:
        raise LookupError(node.inputs[index])
    return c
