"""Constant folding: nodes whose inputs are all constants become initializers.

Each such node is evaluated with the numpy reference op (`edgert.ops.get_op(node).run`), the same
code the oracle backend runs, so folding cannot change the model's numerics.  `Shape` (and `Size`)
of a tensor whose shape is fully static (graph input or ONNX shape inference) is folded too; with
pinned input shapes this removes the Shape -> Slice -> Concat -> Reshape chains exporters emit.

Skipped: random ops, results larger than MAX_FOLD_BYTES (a folded Expand / Tile would bloat the
package), nodes that produce graph outputs, ops the numpy backend does not know (yet)."""
from __future__ import annotations

import numpy as np

from converters.passes._shapes import refresh_shapes
from converters.passes._util import const, output_names, static_shape
from edgert.errors import EdgertError, UnsupportedOp
from edgert.ir import Graph, Node
from edgert.ops import get_op

MAX_FOLD_BYTES = 64 * 1024 * 1024
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}


def _fold_shape(graph: Graph, node: Node) -> np.ndarray | None:
    if not node.inputs or not node.inputs[0]:
        return None
    shape = static_shape(graph, node.inputs[0])
    if shape is None:
        return None
    if node.op == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    # opset 15 start / end attrs (clamped like Python slicing, as in the ONNX spec)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", None)
    return np.array(shape[start:end], dtype=np.int64)


def _evaluate(graph: Graph, node: Node) -> tuple[np.ndarray, ...] | None:
    if node.op in _NONDETERMINISTIC:
        return None
    if any(x and const(graph, x) is None for x in node.inputs):
        return None
    try:
        op = get_op(node)
        outs = op.run(*[const(graph, x) if x else None for x in node.inputs])
    except UnsupportedOp:
        return None
    except (EdgertError, ValueError, TypeError, IndexError, NotImplementedError):
        return None   # leave the node to fail (with context) at run time, as it would unfolded
    return tuple(np.asarray(o) for o in outs)


MAX_ROUNDS = 8


def run(graph: Graph) -> Graph:
    """Fold; after each round that removed nodes, re-infer shapes (sharper shapes for the
    quantizer, and Shape nodes that became static fold in the next round)."""
    for _ in range(MAX_ROUNDS):
        if not _fold_once(graph) or not refresh_shapes(graph):
            break
        if not any(n.op in ("Shape", "Size") and n.inputs and static_shape(graph, n.inputs[0])
                   for n in graph.nodes):
            break
    return graph


def _fold_once(graph: Graph) -> bool:
    outs = output_names(graph)
    kept: list[Node] = []
    for node in graph.nodes:
        live = [o for o in node.outputs if o]
        if not live or any(o in outs for o in live):
            kept.append(node)
            continue
        if node.op in ("Shape", "Size"):
            v = _fold_shape(graph, node)
            values = None if v is None else (v,)
        else:
            values = _evaluate(graph, node)
        if values is None or len(values) < len(node.outputs) or \
                sum(v.nbytes for v in values) > MAX_FOLD_BYTES:
            kept.append(node)
            continue
        for name, v in zip(node.outputs, values):
            if name:
                graph.initializers[name] = np.ascontiguousarray(v)
    changed = len(kept) != len(graph.nodes)
    graph.nodes = kept
    return changed
