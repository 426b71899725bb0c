"""Fold an inference BatchNormalization into the Conv / ConvTranspose that feeds it.

BN(y) = (y - mean) / sqrt(var + eps) * scale + B  =  y * s + (B - mean * s),  s = scale / sqrt(var + eps)
(ONNX BatchNormalization).  Folded when y comes from a Conv / ConvTranspose with constant weights,
y has no other reader, and scale / B / mean / var are constants; other BNs stay as they are."""
from __future__ import annotations

import numpy as np

from converters.passes._conv import (channel_vector, conv_out_channels, fold_scale_shift,
                                     producing_conv, weight_users)
from converters.passes._util import const, output_names
from edgert.ir import Graph, Node


def _bn_params(graph: Graph, bn: Node, c_out: int) -> tuple[np.ndarray, np.ndarray] | None:
    if len(bn.inputs) != 5 or int(bn.attrs.get("training_mode", 0)) != 0:
        return None
    # opset < 14 declares optional running-mean/var outputs; they must be unused
    outs = output_names(graph)
    consumers = graph.consumers()
    if any(o and (o in outs or o in consumers) for o in bn.outputs[1:]):
        return None
    params = [const(graph, x) for x in bn.inputs[1:]]
    if any(p is None for p in params):
        return None
    vecs = [channel_vector(p, c_out, 2) if p.ndim == 1 else None for p in params]
    if any(v is None for v in vecs):
        return None
    scale, bias, mean, var = vecs
    eps = float(bn.attrs.get("epsilon", 1e-5))
    s = scale / np.sqrt(var + eps)
    return s, bias - mean * s


def run(graph: Graph) -> Graph:
    changed = True
    while changed:
        changed = False
        producers, consumers = graph.producers(), graph.consumers()
        for bn in graph.nodes:
            if bn.op != "BatchNormalization" or not bn.inputs:
                continue
            conv = producing_conv(graph, bn.inputs[0], producers, consumers)
            if conv is None:
                continue
            params = _bn_params(graph, bn, conv_out_channels(graph, conv))
            if params is None:
                continue
            fold_scale_shift(graph, conv, params[0], params[1], weight_users(graph, conv, consumers))
            conv.outputs = [bn.outputs[0]]
            graph.nodes.remove(bn)
            changed = True
            break
    return graph
