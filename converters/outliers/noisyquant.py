"""NoisyQuant: a fixed noisy bias added before a linear layer and removed after it (Liu et al.,
"NoisyQuant: Noisy Bias-Enhanced Post-Training Activation Quantization for Vision Transformers",
CVPR 2023).

Where it applies: a MatMul with a constant 2-D weight, a Gemm (transA = 0) or a 1x1 Conv (group 1,
no padding) whose input activation x is heavy-tailed (kurtosis of its calibration values at least
MIN_KURTOSIS).  With N a constant drawn per input channel from U[-D/2, D/2], D the quantization
step of x at `abits` (from its calibrated range):

    y = x W = (x + N) W - N W     -> an Add of N before the layer, an Add of the row -N W after it

exact in float.  Once quantized, the layer computes Q(x + N) W_q, so the removal must use the
integer weight: `refit_noise_bias(qgraph)` recomputes every removal row as -N W_q from the
quantized graph's dequantized weights (the convert pipeline calls it after `quantize_graph`).  With
the activation left in float (weight-only) the quantized layer then equals the one without the pass
to float rounding; with it quantized, the noise changes where x falls on the grid, not what is
subtracted.

Why it can help (the paper's Theorem 1): a value x at a fixed position in a quantization bin has
error x - Q(x); adding noise uniform over one bin makes the expected squared error D^2 / 12 whatever
the position.  A heavy-tailed activation has a wide range (a large D) with its bulk packed into a
few bins; where the bulk sits near bin edges the fixed noise lowers the error, near grid points it
raises it.  So, as the paper, the bias is searched: DRAWS samples, the one with the lowest layer
output error on the calibration rows (fake-quantized at `abits`, the grid recomputed for x + N) is
kept, and only where it beats the layer without noise.

Left out: the paper also searches the noise range per layer (here fixed at one step, AMPLITUDES),
and applies it to the fc2 / post-GELU and post-softmax activations of ViTs specifically; here any
eligible layer whose input is heavy-tailed is a candidate.  The search assumes the grid of the
final calibration; another observer than minmax, or more calibration batches than the pass saw,
move the grid and blur the chosen sample's advantage.  Grouped or padded Convs and Gemm with
transA are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters.passes._util import const, unique_name
from edgert.errors import ConversionError
from edgert.ir import Graph, Node

NOISE_PREFIX = "noisyquant/add_noise/"        # node names: how refit_noise_bias finds the sites
REMOVE_PREFIX = "noisyquant/remove_noise/"
MIN_KURTOSIS = 4.0            # Pearson kurtosis; a Gaussian has 3, a uniform 1.8
DRAWS = 16                    # noise samples searched per layer
AMPLITUDES = (1.0,)           # noise range, in quantization steps
SEED = 0
ERROR_ROWS = 4096             # calibration rows the error search uses (the range uses all)
MIN_GAIN = 0.95               # applied only where the output error drops below this fraction


@dataclass(frozen=True)
class Site:
    node: Node                # MatMul / Gemm / 1x1 Conv with a constant weight
    key: str                  # the layer's name (its first output when it has none)
    channel_axis: int         # axis of the input holding the K input channels
    spatial: int              # Conv: number of spatial dims (the noise is [K, 1, ...]); else 0


def find_sites(graph: Graph) -> list[Site]:
    sites = []
    for node in graph.nodes:
        if node.name.startswith((NOISE_PREFIX, REMOVE_PREFIX)) or len(node.inputs) < 2:
            continue
        x, w = node.inputs[0], const(graph, node.inputs[1])
        if x in graph.initializers or w is None or not np.issubdtype(w.dtype, np.floating):
            continue
        site = _site(node, w)
        if site is not None:
            sites.append(site)
    return sites


def _site(node: Node, w: np.ndarray) -> Site | None:
    key = node.name or node.outputs[0]
    if node.op == "MatMul" and w.ndim == 2:
        return Site(node, key, -1, 0)
    if node.op == "Gemm" and w.ndim == 2 and not int(node.attrs.get("transA", 0)):
        return Site(node, key, -1, 0)
    if node.op == "Conv" and w.ndim >= 3 and all(d == 1 for d in w.shape[2:]) \
            and int(node.attrs.get("group", 1)) == 1 and not any(node.attrs.get("pads", [])):
        return Site(node, key, 1, w.ndim - 2)      # a 1x1 kernel never pads under SAME_* either
    return None


def layer_kn(node: Node, w: np.ndarray) -> np.ndarray:
    """The layer's weight as a [K, N] matrix: y = x W along the channel axis (+ bias)."""
    if node.op == "Gemm":
        wkn = w.T if int(node.attrs.get("transB", 0)) else w
        return float(node.attrs.get("alpha", 1.0)) * wkn
    if node.op == "Conv":
        return w.reshape(w.shape[0], w.shape[1]).T
    return w


def channel_rows(x: np.ndarray, site: Site) -> np.ndarray:
    """The activation as [rows, K]: one row per position, the input channels last."""
    x = np.asarray(x, np.float32)
    return np.moveaxis(x, site.channel_axis, -1).reshape(-1, x.shape[site.channel_axis])


def kurtosis(rows: np.ndarray) -> float:
    v = rows.astype(np.float64).ravel()
    var = float(v.var())
    return float(np.mean((v - v.mean()) ** 4) / var ** 2) if var > 0 else 0.0


def _grid(lo: float, hi: float, bits: int) -> tuple[float, int, int, int]:
    """(scale, zero point, qmin, qmax): the converter's per-tensor activation grid."""
    from converters.observers.base import qparams_from_range
    from converters.quantize import abits_range
    qmin, qmax = abits_range(bits)
    scale, zp = qparams_from_range(lo, hi, qmin, qmax)
    return float(scale), int(zp), qmin, qmax


def quant_error(x: np.ndarray, lo: float, hi: float, bits: int) -> np.ndarray:
    """Q(x) - x on the grid of [lo, hi] (round half to even, as QuantizeLinear)."""
    scale, zp, qmin, qmax = _grid(lo, hi, bits)
    q = np.clip(np.round(x / np.float32(scale)) + zp, qmin, qmax)
    return (q - zp) * np.float32(scale) - x


def output_error(cmin: np.ndarray, cmax: np.ndarray, sample: np.ndarray, w: np.ndarray, noise: np.ndarray,
                 bits: int) -> float:
    """Relative squared error of `sample @ w` with the input x + noise fake-quantized at `bits` (on
    the grid of the calibration range: channel minima `cmin`, maxima `cmax`, + noise) and the noise
    removed exactly."""
    lo, hi = float((cmin + noise).min()), float((cmax + noise).max())
    e = quant_error(sample + noise, lo, hi, bits).astype(np.float64)
    ref = sample.astype(np.float64) @ w
    return float(np.sum((e @ w) ** 2) / max(float(np.sum(ref ** 2)), 1e-30))


def choose(rows: np.ndarray, w: np.ndarray, bits: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, float, float]:
    """rows [R, K] calibration rows, w [K, N] -> (best noise [K], error without, error with)."""
    sample = rows if len(rows) <= ERROR_ROWS else rows[rng.choice(len(rows), ERROR_ROWS, replace=False)]
    cmin, cmax, w64 = rows.min(0), rows.max(0), w.astype(np.float64)
    zero = np.zeros(rows.shape[1], np.float32)
    before = output_error(cmin, cmax, sample, w64, zero, bits)
    step = _grid(float(cmin.min()), float(cmax.max()), bits)[0]
    best, best_err = zero, before
    for amp in AMPLITUDES:
        for _ in range(DRAWS):
            noise = rng.uniform(-amp * step / 2, amp * step / 2, rows.shape[1]).astype(np.float32)
            err = output_error(cmin, cmax, sample, w64, noise, bits)
            if err < best_err:
                best, best_err = noise, err
    return best, before, best_err


def apply(graph: Graph, site: Site, noise: np.ndarray) -> None:
    """Add `noise` [K] before the layer and its image -N W after it (exact in float)."""
    node = site.node
    w = layer_kn(node, const(graph, node.inputs[1])).astype(np.float64)
    if noise.shape != (w.shape[0],):
        raise ConversionError(f"noisyquant: noise of shape {noise.shape} for layer {site.key!r} "
                              f"with {w.shape[0]} input channels")
    x, out = node.inputs[0], node.outputs[0]
    n_name = unique_name(graph, f"{site.key}__nq_noise")
    graph.initializers[n_name] = noise.astype(np.float32).reshape((-1,) + (1,) * site.spatial)
    r_name = unique_name(graph, f"{site.key}__nq_remove")
    graph.initializers[r_name] = _removal(noise, w, site.spatial)
    xn, mm = unique_name(graph, f"{x}__nq"), unique_name(graph, f"{out}__nq_mm")
    pos = graph.nodes.index(node)
    node.inputs[0], node.outputs[0] = xn, mm
    graph.nodes.insert(pos + 1, Node("Add", REMOVE_PREFIX + site.key, [mm, r_name], [out]))
    graph.nodes.insert(pos, Node("Add", NOISE_PREFIX + site.key, [x, n_name], [xn]))


def _removal(noise: np.ndarray, w_kn: np.ndarray, spatial: int) -> np.ndarray:
    row = -(noise.astype(np.float64).reshape(-1) @ w_kn.astype(np.float64))
    return row.astype(np.float32).reshape((-1,) + (1,) * spatial)


def run(graph: Graph, batches: list[dict], abits: int, capture) -> dict:
    """Search and add the noisy bias on every heavy-tailed site where it lowers the layer output
    error; returns {layer: {"kurtosis", "before", "after", "applied"}}."""
    rng = np.random.default_rng(SEED)
    sites = find_sites(graph)
    names = {s.node.inputs[0] for s in sites}
    caps = [capture(b, names - set(b)) | {k: v for k, v in b.items() if k in names} for b in batches]
    report = {}
    for site in sites:
        x = site.node.inputs[0]
        rows = np.concatenate([channel_rows(c[x], site) for c in caps], 0)
        entry = {"kurtosis": kurtosis(rows), "applied": False}
        report[site.key] = entry
        if entry["kurtosis"] < MIN_KURTOSIS:
            continue
        w = layer_kn(site.node, const(graph, site.node.inputs[1]))
        noise, entry["before"], entry["after"] = choose(rows, w, abits, rng)
        if entry["after"] < MIN_GAIN * entry["before"]:
            apply(graph, site, noise)
            entry["applied"] = True
    return report


# ---------------------------------------------------------------------------- after quantization

def refit_noise_bias(qgraph: Graph) -> int:
    """Recompute every noise-removal row as -N W_q from the quantized layer's integer weight (so the
    noise cancels exactly in the quantized graph); returns the number of sites refitted."""
    producers = qgraph.producers()
    by_name = {n.name: n for n in qgraph.nodes}
    count = 0
    for node in qgraph.nodes:
        if not node.name.startswith(REMOVE_PREFIX):
            continue
        key = node.name[len(REMOVE_PREFIX):]
        add = by_name.get(NOISE_PREFIX + key)
        noise = const(qgraph, add.inputs[1]) if add is not None else None
        old = const(qgraph, node.inputs[1])
        if noise is None or old is None:
            raise ConversionError(f"noisyquant site {key!r}: the noise or its removal row is no constant")
        w_kn = _quantized_kn(qgraph, producers, producers.get(node.inputs[0]), key)
        qgraph.initializers[node.inputs[1]] = _removal(noise, w_kn, old.ndim - 1)
        count += 1
    return count


def _quantized_kn(qgraph: Graph, producers: dict[str, Node], layer: Node | None, key: str) -> np.ndarray:
    """The [K, N] weight the quantized layer multiplies by (dequantized from its integers)."""
    if layer is not None and layer.op == "DequantizeLinear" and "axis" not in layer.attrs:
        layer = producers.get(layer.inputs[0])         # QLinear layer -> its output's DequantizeLinear
    if layer is not None and layer.op in ("QLinearMatMul", "QLinearConv"):
        axis = 1 if layer.op == "QLinearMatMul" else 0
        w = _dequantize(qgraph, layer.inputs[3:6], {"axis": axis}, key)
        return w if layer.op == "QLinearMatMul" else w.reshape(w.shape[0], w.shape[1]).T
    if layer is not None and layer.op in ("MatMul", "Gemm", "Conv"):
        w = const(qgraph, layer.inputs[1])
        dq = producers.get(layer.inputs[1])
        if w is None and dq is not None and dq.op == "DequantizeLinear":
            w = _dequantize(qgraph, dq.inputs, dq.attrs, key)
        if w is not None:
            return layer_kn(layer, w)
    raise ConversionError(f"noisyquant site {key!r}: the removal Add does not follow a layer with a "
                          f"constant or dequantized weight")


def _dequantize(qgraph: Graph, inputs: list[str], attrs: dict, key: str) -> np.ndarray:
    """DequantizeLinear on constant inputs, with the oracle op itself (the runtime's semantics)."""
    from edgert.ops import get_op
    args = [const(qgraph, i) if i else None for i in inputs]
    if args[0] is None or args[1] is None or any(a is None for i, a in zip(inputs, args) if i):
        raise ConversionError(f"noisyquant site {key!r}: the layer's weight or scale is no constant")
    op = get_op(Node("DequantizeLinear", f"{key}__refit", list(inputs), [f"{key}__refit_w"], dict(attrs)))
    return np.asarray(op.run(*args)[0], np.float64)
