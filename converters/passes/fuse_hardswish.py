"""Rewrite hard-swish subgraphs into one `HardSwish` node (ONNX opset-14 semantics:
y = x * max(0, min(1, x / 6 + 0.5))).

Patterns, as found in the PP-OCR exports (paddle2onnx) and other converters:
  A  Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)     (Div by 6 or Mul by 1/6; operands either order)
  B  Mul(x, Div(Clip(Add(x, 3), 0, 6), 6))
  C  Mul(x, HardSigmoid(x, alpha=1/6, beta=0.5))
The constants are checked (3, 0, 6, 1/6, alpha, beta within float32 precision): the PP-OCR models
also contain `Mul(a, HardSigmoid(b, alpha=0.2))` squeeze-excitation gates, which are not hard-swish.
Every intermediate tensor must have no reader outside the pattern."""
from __future__ import annotations

import numpy as np

from converters.passes._util import (all_equal, attr_or_input_const, const, sole_consumer,
                                     unique_name)
from edgert.ir import Graph, Node

_TOL = 1e-6   # float32 has ~7 significant digits; exporters write 1/6 as 0.16666667 or 0.1666667


def _other(node: Node, name: str) -> str | None:
    """The other input of a binary node that reads `name` once."""
    if len(node.inputs) != 2 or node.inputs.count(name) != 1:
        return None
    return node.inputs[1] if node.inputs[0] == name else node.inputs[0]


def _is_div6(graph: Graph, node: Node, x: str) -> bool:
    """node computes x / 6 (Div(x, 6) or Mul(x, 1/6) / Mul(1/6, x))."""
    if node.op == "Div":
        return node.inputs[:1] == [x] and len(node.inputs) == 2 and \
            all_equal(const(graph, node.inputs[1]), 6.0, rtol=_TOL)
    if node.op == "Mul":
        o = _other(node, x)
        return o is not None and all_equal(const(graph, o), 1.0 / 6.0, rtol=_TOL)
    return False


def _clip_ok(graph: Graph, clip: Node) -> bool:
    try:
        lo = attr_or_input_const(graph, clip, "min", 1)
        hi = attr_or_input_const(graph, clip, "max", 2)
    except LookupError:
        return False
    if lo is None or hi is None:
        return False
    return all_equal(np.asarray(lo), 0.0) and all_equal(np.asarray(hi), 6.0, rtol=_TOL)


def _match_clip(graph: Graph, clip: Node, consumers) -> tuple[str, list[Node], str] | None:
    """From a Clip, find (x, nodes of the pattern, output name) for patterns A / B."""
    producers = graph.producers()
    add = producers.get(clip.inputs[0]) if clip.inputs else None
    if add is None or add.op != "Add" or not _clip_ok(graph, clip):
        return None
    if sole_consumer(graph, add.outputs[0], consumers) is not clip:
        return None
    x = None
    for cand in add.inputs:
        o = _other(add, cand)
        if o is not None and const(graph, cand) is None and all_equal(const(graph, o), 3.0, rtol=_TOL):
            x = cand
    if x is None:
        return None
    nxt = sole_consumer(graph, clip.outputs[0], consumers)
    if nxt is None:
        return None
    if nxt.op == "Mul" and _other(nxt, clip.outputs[0]) == x:            # pattern A
        last = sole_consumer(graph, nxt.outputs[0], consumers)
        if last is not None and _is_div6(graph, last, nxt.outputs[0]):
            return x, [add, clip, nxt, last], last.outputs[0]
    elif _is_div6(graph, nxt, clip.outputs[0]):                           # pattern B
        last = sole_consumer(graph, nxt.outputs[0], consumers)
        if last is not None and last.op == "Mul" and _other(last, nxt.outputs[0]) == x:
            return x, [add, clip, nxt, last], last.outputs[0]
    return None


def _match_hardsigmoid(graph: Graph, hs: Node, consumers) -> tuple[str, list[Node], str] | None:
    if not hs.inputs or not hs.inputs[0]:
        return None
    alpha = float(hs.attrs.get("alpha", 0.2))
    beta = float(hs.attrs.get("beta", 0.5))
    if abs(alpha - 1.0 / 6.0) > _TOL or abs(beta - 0.5) > _TOL:
        return None
    x = hs.inputs[0]
    mul = sole_consumer(graph, hs.outputs[0], consumers)
    if mul is None or mul.op != "Mul" or _other(mul, hs.outputs[0]) != x:
        return None
    return x, [hs, mul], mul.outputs[0]


def run(graph: Graph) -> Graph:
    changed = True
    while changed:
        changed = False
        consumers = graph.consumers()
        for node in graph.nodes:
            if node.op == "Clip":
                m = _match_clip(graph, node, consumers)
            elif node.op == "HardSigmoid":
                m = _match_hardsigmoid(graph, node, consumers)
            else:
                continue
            if m is None:
                continue
            x, pattern, y = m
            last = pattern[-1]
            fused = Node(op="HardSwish", name=unique_name(graph, f"{last.name}__hardswish"),
                         inputs=[x], outputs=[y])
            # at the last node's place: x exists before the pattern, y's readers come after it
            graph.nodes[graph.nodes.index(last)] = fused
            drop = {id(n) for n in pattern[:-1]}
            graph.nodes = [n for n in graph.nodes if id(n) not in drop]
            changed = True
            break
    return graph
