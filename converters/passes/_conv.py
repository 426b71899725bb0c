"""Folding a per-output-channel affine map y' = y * scale + shift into a Conv / ConvTranspose.

Shared by `fold_batchnorm` and `fuse_conv_affine` (not a pass itself)."""
from __future__ import annotations

import numpy as np

from converters.passes._util import const, sole_consumer, unique_name
from edgert.ir import Graph, Node

CONV_OPS = ("Conv", "ConvTranspose")


def conv_out_channels(graph: Graph, conv: Node) -> int | None:
    """C_out of a Conv / ConvTranspose whose weight (and bias, if any) are constants, else None."""
    if conv.op not in CONV_OPS or len(conv.inputs) < 2 or len(conv.outputs) != 1:
        return None
    w = const(graph, conv.inputs[1])
    if w is None or w.ndim < 3 or w.dtype.kind != "f":
        return None
    if len(conv.inputs) > 2 and conv.inputs[2] and const(graph, conv.inputs[2]) is None:
        return None
    group = int(conv.attrs.get("group", 1))
    return int(w.shape[0]) if conv.op == "Conv" else int(w.shape[1]) * group


def producing_conv(graph: Graph, name: str, producers: dict[str, Node],
                   consumers: dict[str, list[Node]]) -> Node | None:
    """The foldable Conv / ConvTranspose that produces `name` and is its only reader's source."""
    conv = producers.get(name)
    if conv is None or conv_out_channels(graph, conv) is None:
        return None
    if sole_consumer(graph, name, consumers) is None:
        return None
    return conv


def fold_scale_shift(graph: Graph, conv: Node, scale: np.ndarray | None,
                     shift: np.ndarray | None, weight_users: int) -> None:
    """Rewrite `conv` in place so that it computes conv(x) * scale + shift (both (C_out,), float64).

    `weight_users`: how many nodes read the weight / bias initializers; a shared one is copied
    under a new name instead of being changed under the other readers."""
    c_out = conv_out_channels(graph, conv)
    assert c_out is not None
    w_name = conv.inputs[1]
    w = graph.initializers[w_name]
    b_name = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else ""
    b = graph.initializers[b_name].astype(np.float64) if b_name else np.zeros(c_out)
    if scale is not None:
        w64 = w.astype(np.float64)
        if conv.op == "Conv":                     # W [C_out, C_in/g, k...]
            w64 = w64 * scale.reshape((c_out,) + (1,) * (w.ndim - 1))
        else:                                     # W [C_in, C_out/g, k...], groups along C_in
            g = int(conv.attrs.get("group", 1))
            cin, cog = w.shape[0], w.shape[1]
            w64 = w64.reshape((g, cin // g, cog) + w.shape[2:])
            w64 = w64 * scale.reshape((g, 1, cog) + (1,) * (w.ndim - 2))
            w64 = w64.reshape(w.shape)
        new_w = w64.astype(w.dtype)
        if weight_users > 1:
            w_name = unique_name(graph, f"{w_name}__folded")
        graph.initializers[w_name] = new_w
        b = b * scale
    if shift is not None:
        b = b + shift
    dtype = graph.initializers[b_name].dtype if b_name else w.dtype
    if not b_name or weight_users > 1:
        b_name = unique_name(graph, f"{conv.name}.bias")
    graph.initializers[b_name] = b.astype(dtype)
    conv.inputs = [conv.inputs[0], w_name, b_name]


def channel_vector(c: np.ndarray, c_out: int, rank: int) -> np.ndarray | None:
    """`c` as a (C_out,) float64 vector when it broadcasts against an [N, C_out, ...] tensor of
    `rank` dims only along the channel axis (scalars included); None otherwise."""
    if c.dtype.kind != "f" or c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, c_out):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (c_out,)).copy()


def weight_users(graph: Graph, conv: Node, consumers: dict[str, list[Node]]) -> int:
    names = [x for x in conv.inputs[1:3] if x]
    outs = {o.name for o in graph.outputs}
    return max(len(consumers.get(x, [])) + (x in outs) for x in names)
