"""Remove nodes that pass their input through unchanged.

`Identity`; `Dropout` in inference (mask output unused, training_mode absent or constant false);
`Cast` to the dtype the input already has; `Reshape` whose target equals the input's static shape.  The removed node's output name is rewired to its input, except when it is a
graph output: then the producer of the input is renamed instead (graph output names are API)."""
from __future__ import annotations

import numpy as np

from converters.passes._util import const, output_names, replace_uses, static_shape, value_dtype
from edgert.ir import Graph, Node


def _onnx_dtype_name(to: int) -> str | None:
    try:
        import onnx
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(to))).name
    except Exception:
        return None


def _reshape_target(shape: tuple[int, ...], target: np.ndarray, allowzero: bool) -> tuple | None:
    dims = [int(d) for d in target.reshape(-1)]
    out = []
    for i, d in enumerate(dims):
        if d == 0 and not allowzero:
            if i >= len(shape):
                return None
            out.append(shape[i])
        else:
            out.append(d)
    if out.count(-1) > 1:
        return None
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        total = int(np.prod(shape, dtype=np.int64))
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return tuple(out)


def _is_noop(graph: Graph, node: Node, consumers: dict[str, list[Node]]) -> bool:
    if not node.inputs or not node.inputs[0] or not node.outputs or not node.outputs[0]:
        return False
    x = node.inputs[0]
    if node.op == "Identity":
        return True
    if node.op == "Dropout":
        extra = [o for o in node.outputs[1:] if o]
        if any(o in consumers or o in output_names(graph) for o in extra):
            return False
        if len(node.inputs) > 2 and node.inputs[2]:
            t = const(graph, node.inputs[2])
            return t is not None and not bool(np.asarray(t).any())
        return True
    if node.op == "Cast":
        src, dst = value_dtype(graph, x), _onnx_dtype_name(node.attrs.get("to", -1))
        return src is not None and src == dst
    if node.op == "Reshape" and len(node.inputs) >= 2:
        shape, target = static_shape(graph, x), const(graph, node.inputs[1])
        if shape is None or target is None:
            return False
        return _reshape_target(shape, target, bool(node.attrs.get("allowzero", 0))) == shape
    return False


def run(graph: Graph) -> Graph:
    outs = output_names(graph)
    inputs = {vi.name for vi in graph.inputs}
    consumers = graph.consumers()
    producers = graph.producers()
    removed: set[int] = set()
    for node in graph.nodes:
        if not _is_noop(graph, node, consumers):
            continue
        x, y = node.inputs[0], node.outputs[0]
        if y in outs:
            # keep the graph output's name: rename x to y, if x is an ordinary intermediate
            p = producers.get(x)
            if p is None or x in outs or x in inputs:
                continue
            p.outputs = [y if o == x else o for o in p.outputs]
            replace_uses(graph, x, y)
            producers[y] = p
        else:
            replace_uses(graph, y, x)
        removed.add(id(node))
        consumers = graph.consumers()
    graph.nodes = [n for n in graph.nodes if id(n) not in removed]
    return graph
