"""From a quantization plan to reconstruction jobs: each layer's float input captured on calibration
batches and unfolded into rows (im2col for convolutions), its weight in [groups, K, N] form with the
converter's scales, and a `finish` that stores the chosen integer weights where the rewrite picks
them up (`QuantizeOptions.rounded`).

Layers left to plain rounding: float ones, group-wise scales (their step varies along K), 1-bit
(midrise) weights, sparse weights, and convolutions with auto_pad or a layout this unfolding does
not cover."""
from __future__ import annotations

from typing import Callable

import numpy as np

from converters.methods import QuantizedWeight, WeightMethod
from converters.observers import qparams_from_range
from converters.options import QuantizeOptions
from converters.quantize import FLOAT, QLINEAR, LayerPlan, QuantPlan, _quantize_layer_weight, abits_range
from edgert.ir import Graph

Capture = Callable[[dict, set], dict]


def im2col(x: np.ndarray, kh: int, kw: int, strides, pads, dilations, groups: int) -> np.ndarray:
    """x [B, C, H, W] -> [groups, B * Ho * Wo, (C / groups) * kh * kw], K ordered (c, i, j) like a
    conv weight [O, C / groups, kh, kw] flattened."""
    b, c, h, w = x.shape
    sh, sw = strides
    dh, dw = dilations
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((b, c, kh, kw, ho, wo), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
    cg = c // groups
    cols = cols.reshape(b, groups, cg * kh * kw, ho * wo)
    return cols.transpose(1, 0, 3, 2).reshape(groups, b * ho * wo, cg * kh * kw)


def _covered(lp: LayerPlan, qopts: QuantizeOptions) -> bool:
    return (lp.kind != FLOAT and lp.wbits is not None and lp.wbits >= 2 and lp.granularity in ("channel", "tensor")
            and not qopts.sparsity and qopts.nm is None and lp.op in ("Conv", "MatMul", "Gemm"))


def layer_jobs(graph: Graph, plan: QuantPlan, qopts: QuantizeOptions, method: WeightMethod, batches: list[dict],
               capture: Capture, ranges: dict[str, tuple[float, float]] | None) -> list[Callable]:
    """One job per covered layer (see converters.recon.reconstruct.reconstruct_layers)."""
    inputs = {vi.name for vi in graph.inputs}
    jobs = []
    for lp in plan.layers:
        if not _covered(lp, qopts):
            continue
        jobs.append(_job(graph, lp, qopts, method, batches, capture, ranges, inputs))
    return jobs


def _job(graph, lp, qopts, method, batches, capture, ranges, inputs):
    def run():
        w_used = lp.weight_kn if lp.weight_kn is not None else graph.initializers[lp.weight]
        qw0 = _quantize_layer_weight(w_used, lp, qopts, method)
        xs = [b[lp.input] if lp.input in inputs else capture(b, {lp.input})[lp.input] for b in batches]
        x = np.concatenate([np.asarray(v, np.float32) for v in xs], 0)
        node = lp.node
        if node.op == "Conv":
            wt = graph.initializers[lp.weight]
            o, cg, kh, kw = wt.shape
            g = int(node.attrs.get("group", 1))
            pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
            pads = [pads[0], pads[1], pads[2], pads[3]] if len(pads) == 4 else [0, 0, 0, 0]
            rows = im2col(x, kh, kw, node.attrs.get("strides", [1, 1]), pads, node.attrs.get("dilations", [1, 1]), g)
            wk = wt.reshape(g, o // g, cg * kh * kw).transpose(0, 2, 1)           # [G, K, Og]
            s = np.broadcast_to(np.asarray(qw0.scale, np.float32).reshape(-1), (o,)).reshape(g, 1, o // g)
        else:
            rows = x.reshape(1, -1, x.shape[-1])
            wk = np.asarray(w_used, np.float32)[None]                                # [1, K, N]
            n_out = wk.shape[2]
            s = np.broadcast_to(np.asarray(qw0.scale, np.float32).reshape(-1), (n_out,)).reshape(1, 1, n_out)
        rows_q = None
        if ranges is not None and lp.kind == QLINEAR and qopts.abits is not None and lp.input in ranges:
            qmin, qmax = abits_range(qopts.abits)
            scale, zp = qparams_from_range(*ranges[lp.input], qmin, qmax)
            rows_q = (np.clip(np.rint(rows / scale) + zp, qmin, qmax) - zp) * scale
        qmax_w = qw0.scheme.qmax

        def finish(q):
            if node.op == "Conv":
                qq = q.transpose(0, 2, 1).reshape(graph.initializers[lp.weight].shape)
            else:
                qq = q[0].reshape(np.shape(w_used))
            lp.rounded = QuantizedWeight(q=qq.astype(np.int8), scale=qw0.scale, spec=qw0.spec)
        return lp.name, wk, s, qmax_w, rows, rows_q, finish
    return run
