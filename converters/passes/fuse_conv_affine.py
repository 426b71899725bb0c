"""Fold per-channel constant Mul / Add / Sub / Div after a Conv / ConvTranspose into its weights.

PaddlePaddle exports keep a conv's bias as a separate `Add(conv, Reshape(b, [1, C, 1, 1]))` (the
PP-OCR cls model) and PP-LCNetV3's learnable affine blocks as `Mul(s, conv)` + `Add(., b)` with
scalar s, b (the PP-OCRv4 det / rec models).  Folding them gives the quantizer one layer with a
bias instead of three tensors to quantize, and saves two elementwise passes per layer.
Only `y * c`, `c * y`, `y + c`, `c + y`, `y - c` and `y / c` are folded, with c broadcasting along
the channel axis only and y read by nothing else."""
from __future__ import annotations

import numpy as np

from converters.passes._conv import (channel_vector, conv_out_channels, fold_scale_shift,
                                     producing_conv, weight_users)
from converters.passes._util import const
from edgert.ir import Graph, Node

_OPS = ("Mul", "Add", "Sub", "Div")


def _affine(graph: Graph, node: Node, y: str, c_out: int, rank: int
            ) -> tuple[np.ndarray | None, np.ndarray | None] | None:
    if len(node.inputs) != 2 or len(node.outputs) != 1:
        return None
    other_idx = 1 if node.inputs[0] == y else 0
    if node.op in ("Sub", "Div") and other_idx != 1:
        return None
    c = const(graph, node.inputs[other_idx])
    if c is None:
        return None
    v = channel_vector(c, c_out, rank)
    if v is None:
        return None
    if node.op == "Mul":
        return v, None
    if node.op == "Add":
        return None, v
    if node.op == "Sub":
        return None, -v
    if np.any(v == 0):
        return None
    return 1.0 / v, None


def run(graph: Graph) -> Graph:
    changed = True
    while changed:
        changed = False
        producers, consumers = graph.producers(), graph.consumers()
        for node in graph.nodes:
            if node.op not in _OPS or len(node.inputs) != 2:
                continue
            for y in node.inputs:
                conv = producing_conv(graph, y, producers, consumers) if y else None
                if conv is None:
                    continue
                rank = graph.initializers[conv.inputs[1]].ndim
                aff = _affine(graph, node, y, conv_out_channels(graph, conv), rank)
                if aff is None:
                    continue
                fold_scale_shift(graph, conv, aff[0], aff[1], weight_users(graph, conv, consumers))
                conv.outputs = [node.outputs[0]]
                graph.nodes.remove(node)
                changed = True
                break
            if changed:
                break
    return graph
