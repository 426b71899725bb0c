"""Outlier Suppression+ (OS+): channel-wise shifting and scaling of an activation, migrated exactly into
the layers on both sides of it.

Where it applies: a per-channel affine `y = x * gamma (+ beta)` over the last axis (a LayerNorm's
tail, decomposed or not) whose every consumer is a MatMul with a constant weight W [C, N].  Per
channel c, with calibrated range [lo_c, hi_c]:

    z_c = (hi_c + lo_c) / 2          (shift: centre every channel's range on 0)
    s_c = max(1, (hi_c - lo_c) / 2 / t)   (scale: squeeze channels wider than t down to t)
    y'  = (y - z) / s               -> gamma' = gamma / s, beta' = (beta - z) / s
    y W = y' (s W) + z W            -> W' = diag(s) W, and an Add of the constant row z W after the MatMul

so the float model computes the same function (up to float rounding), while the tensor that will be
quantized per-tensor has no outlier channel.  The threshold t is searched over quantiles of the
channel half-ranges, minimising the output error of the MatMuls with y' fake-quantized at `abits`
(OS+'s search, on the calibration rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters.passes._util import const
from edgert.ir import Graph, Node


@dataclass(frozen=True)
class Site:
    affine: Node                 # the Mul (gamma) or the Add (beta) that ends the affine
    mul: Node
    add: Node | None
    consumers: list[Node]        # MatMuls reading the affine's output


def find_sites(graph: Graph) -> list[Site]:
    cons = graph.consumers()
    producer = {o: n for n in graph.nodes for o in n.outputs}
    outputs = {v.name for v in graph.outputs}
    sites = []
    for node in graph.nodes:
        if node.op != "Add" or len(node.inputs) != 2:
            continue
        beta_i = next((i for i in (0, 1) if const(graph, node.inputs[i]) is not None), None)
        if beta_i is None:
            continue
        mul = producer.get(node.inputs[1 - beta_i])
        if mul is None or mul.op != "Mul" or len(cons.get(mul.outputs[0], [])) != 1:
            continue
        gamma_i = next((i for i in (0, 1) if const(graph, mul.inputs[i]) is not None), None)
        if gamma_i is None:
            continue
        gamma, beta = const(graph, mul.inputs[gamma_i]), const(graph, node.inputs[beta_i])
        if gamma.ndim != 1 or beta.ndim != 1 or gamma.shape != beta.shape:
            continue
        users = cons.get(node.outputs[0], [])
        if not users or node.outputs[0] in outputs:
            continue
        if not all(u.op == "MatMul" and u.inputs[0] == node.outputs[0] and (w := const(graph, u.inputs[1])) is not None
                   and w.ndim == 2 and w.shape[0] == gamma.shape[0] for u in users):
            continue
        sites.append(Site(node, mul, node, users))
    return sites


def _fake_quant(y: np.ndarray, bits: int) -> np.ndarray:
    lo, hi = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
    qmax = (1 << bits) - 1
    scale = max(hi - lo, 1e-12) / qmax
    zp = np.round(-lo / scale)
    return (np.clip(np.round(y / scale) + zp, 0, qmax) - zp) * scale


def choose(y: np.ndarray, ws: list[np.ndarray], bits: int, quantiles=(0.5, 0.75, 0.9, 0.97, 1.0)
           ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """y [rows, C] calibration rows of the activation -> (shift z, scale s, error before, after)."""
    lo, hi = y.min(0), y.max(0)
    z = (hi + lo) / 2
    half = np.maximum((hi - lo) / 2, 1e-12)
    ref = [y @ w for w in ws]

    def err(zz, ss):
        yq = _fake_quant((y - zz) / ss, bits)
        return sum(float(np.mean((yq @ (ss[:, None] * w) + zz @ w - r) ** 2)) / max(float(np.mean(r ** 2)), 1e-30)
                   for w, r in zip(ws, ref))
    before = err(np.zeros_like(z), np.ones_like(z))
    best = (err(z, np.ones_like(z)), np.ones_like(z))
    for q in quantiles:
        t = float(np.quantile(half, q))
        s = np.maximum(1.0, half / max(t, 1e-12))
        e = err(z, s)
        if e < best[0]:
            best = (e, s)
    return z.astype(np.float32), best[1].astype(np.float32), before, best[0]


def apply(graph: Graph, site: Site, z: np.ndarray, s: np.ndarray) -> None:
    """Migrate the shift and scale (exact in float)."""
    mul, add = site.mul, site.add
    gi = next(i for i in (0, 1) if const(graph, mul.inputs[i]) is not None)
    bi = next(i for i in (0, 1) if const(graph, add.inputs[i]) is not None)
    gamma, beta = const(graph, mul.inputs[gi]), const(graph, add.inputs[bi])
    g_name, b_name = f"{mul.inputs[gi]}__osp", f"{add.inputs[bi]}__osp"
    graph.initializers[g_name] = (gamma / s).astype(np.float32)
    graph.initializers[b_name] = ((beta - z) / s).astype(np.float32)
    mul.inputs[gi], add.inputs[bi] = g_name, b_name
    for u in site.consumers:
        w = const(graph, u.inputs[1])
        w_name = f"{u.inputs[1]}__osp"
        graph.initializers[w_name] = (s[:, None] * w).astype(np.float32)
        u.inputs[1] = w_name
        out = u.outputs[0]
        mm = f"{out}__osp_mm"
        bias = f"{out}__osp_shift"
        graph.initializers[bias] = (z.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)
        if not np.any(z):
            continue                     # no shift: nothing to add back
        u.outputs[0] = mm
        pos = graph.nodes.index(u)
        graph.nodes.insert(pos + 1, Node("Add", f"{u.name}__osp_shift", [mm, bias], [out]))
