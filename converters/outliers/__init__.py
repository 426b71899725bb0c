"""Activation-outlier passes: graph rewrites, exact in float (qllm-assemble: nearly), that make
activations easier to quantize.
They run on the float graph before calibration (`edgert convert --pass NAME`).

    os+       Outlier Suppression+: channel-wise shift and scale of a per-channel affine's output (a
              LayerNorm tail) migrated into the affine and the MatMuls that read it (os_plus.py)
    os-gamma  Outlier Suppression's gamma migration: the LayerNorm's gamma moved into those MatMuls
    qllm      QLLM's channel disassembly: outlier channels of that affine's output split into sub-channels
              (a Gather) and the MatMuls' weight rows duplicated (qllm.py); qllm-assemble also merges
              similar channel pairs back to the original width (approximate in float)
    noisyquant  NoisyQuant: a searched fixed noisy bias added before a heavy-tailed layer input and
              removed after the layer (noisyquant.py; refit_noise_bias after quantize_graph)
    ptq4sam-bimodal  PTQ4SAM's bimodal integration: sign flips of bimodal key channels and of the query
              channels they meet in the attention scores (ptq4sam.py)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from converters.outliers import noisyquant, ptq4sam, qllm
from edgert.errors import ConversionError
from edgert.ir import Graph

MAX_ROWS = 8192


def run_os_plus(graph: Graph, batches: list[dict], abits: int, capture) -> dict:
    """Apply OS+ where it lowers the quantized MatMul outputs' error on the calibration rows; returns
    {site: {"before": err, "after": err}} for the sites considered."""
    import converters.outliers.os_plus as O

    rng = np.random.default_rng(0)
    report = {}
    for site in O.find_sites(graph):
        name = site.affine.outputs[0]
        rows = np.concatenate([np.asarray(capture(b, {name})[name], np.float32).reshape(-1, np.shape(
            graph.initializers[site.consumers[0].inputs[1]])[0]) for b in batches], 0)
        if len(rows) > MAX_ROWS:
            rows = rows[rng.choice(len(rows), MAX_ROWS, replace=False)]
        ws = [np.asarray(graph.initializers[u.inputs[1]], np.float32) for u in site.consumers]
        z, s, before, after = O.choose(rows, ws, abits)
        applied = after < 0.95 * before
        if applied:
            O.apply(graph, site, z, s)
        report[name] = {"before": before, "after": after, "applied": applied, "max_scale": float(s.max())}
    return report


def run_gamma_migration(graph: Graph, batches: list[dict], abits: int, capture) -> dict:
    """Outlier Suppression's gamma migration: the affine's gamma moves into the MatMuls that read it
    (y' = x + beta / gamma, W' = diag(gamma) W), so the quantized tensor no longer carries the
    per-channel amplification that LayerNorm's gamma concentrates in a few channels.  Data-free;
    channels with gamma = 0 keep their scale."""
    import converters.outliers.os_plus as O

    report = {}
    for site in O.find_sites(graph):
        gi = next(i for i in (0, 1) if O.const(graph, site.mul.inputs[i]) is not None)
        gamma = O.const(graph, site.mul.inputs[gi]).astype(np.float32)
        s = np.where(gamma != 0, gamma, 1.0).astype(np.float32)
        O.apply(graph, site, np.zeros_like(s), s)
        report[site.affine.outputs[0]] = {"applied": True, "max_scale": float(np.abs(s).max())}
    return report


OutlierPass = Callable[[Graph, list, int, Callable], dict]
PASSES: dict[str, OutlierPass] = {"os+": run_os_plus, "os-gamma": run_gamma_migration, "qllm": qllm.run,
                                  "qllm-assemble": qllm.run_assemble, "noisyquant": noisyquant.run,
                                  "ptq4sam-bimodal": ptq4sam.run}


def known_outlier_passes() -> list[str]:
    return sorted(PASSES)


def get_outlier_pass(name: str) -> OutlierPass:
    if name not in PASSES:
        raise ConversionError(f"unknown outlier pass {name!r} (known: {', '.join(PASSES)})")
    return PASSES[name]
