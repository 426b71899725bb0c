"""Per-layer sensitivity to weight quantization: output-error probes on calibration batches.

For each quantizable layer l and candidate width b, the float model runs with only l's weight
replaced by its b-bit quantize-dequantize (the converter's own method and granularity, so the probe
sees exactly the weight the package will hold), and the error is

    err(l, b) = sum over batches and outputs of ||y - y_float||^2 / sum of ||y_float||^2

the relative squared output error (1 / output SQNR).  For the loss ||f(x; W) - f(x; W_float)||^2 this
is the Gauss-Newton quadratic form dW^T J^T J dW of the layer's actual quantization error: what
HAWQ's Hutchinson trace estimates for an average perturbation, measured here for the real one
(cheaper than a trace on CPU: no backward pass, one forward per probe).

The probes run on one backend session: the probed weights become graph inputs of a copy of the float
graph, so each probe is one run with one feed swapped, not a session per probe.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from converters.methods import WeightMethod
from converters.quantize import FLOAT as FLOAT_KIND
from converters.quantize import LayerPlan, QuantPlan, _quantize_layer_weight
from converters.options import QuantizeOptions
from edgert.errors import CalibrationError, EdgertError
from edgert.ir import Graph, Node, ValueInfo

Feeds = dict[str, np.ndarray]


@dataclass
class Sensitivity:
    layers: list[str]                                   # layer names, plan order
    widths: list[int]                                   # candidate widths probed
    error: dict[str, dict[int, float]]                  # layer -> width -> relative output error
    runs: int = 0
    seconds: float = 0.0
    backend: str = ""
    extra: dict = field(default_factory=dict)


def allocatable(plan: QuantPlan) -> list[LayerPlan]:
    """Layers whose width the allocator chooses: quantized ones (not kept float by the user, not
    shared weights, not unsupported shapes)."""
    return [lp for lp in plan.layers if lp.kind != FLOAT_KIND and lp.wbits is not None]


def dequantized_weight(graph: Graph, lp: LayerPlan, bits: int, options: QuantizeOptions,
                       method: WeightMethod) -> np.ndarray:
    """The layer's weight after quantize -> dequantize at `bits`, in the graph's own layout."""
    probe = copy.copy(lp)
    probe.wbits = bits
    w = graph.initializers[lp.weight]
    if lp.weight_kn is None:
        return _quantize_layer_weight(w, probe, options, method).dequantize().astype(np.float32)
    deq = _quantize_layer_weight(lp.weight_kn, probe, options, method).dequantize()
    if lp.node.op == "Gemm":          # weight_kn = alpha * (W^T if transB else W)
        alpha = float(lp.node.attrs.get("alpha", 1.0))
        deq = deq / alpha
        if int(lp.node.attrs.get("transB", 0)):
            deq = deq.T
    return np.ascontiguousarray(deq.reshape(w.shape), np.float32)


def weights_as_inputs(graph: Graph, names: list[str]) -> Graph:
    """A copy of the graph whose named initializers are graph inputs instead."""
    inits = dict(graph.initializers)
    extra = []
    for n in names:
        a = inits.pop(n)
        extra.append(ValueInfo(n, str(a.dtype), list(a.shape)))
    return Graph(name=graph.name, inputs=copy.deepcopy(graph.inputs) + extra, outputs=copy.deepcopy(graph.outputs),
                 nodes=graph.nodes, initializers=inits, encodings=dict(graph.encodings),
                 preprocess=graph.preprocess, metadata=dict(graph.metadata))


def make_runner(graph: Graph, backend: str) -> tuple[str, Callable[[Feeds], dict[str, np.ndarray]]]:
    from edgert.backends.base import BackendOptions, get_backend
    errors = []
    for name in (["ort", "numpy"] if backend == "auto" else [backend]):
        try:
            exe = get_backend(name).prepare(graph, BackendOptions())
        except EdgertError as e:
            errors.append(f"{name}: {e}")
            continue
        return name, exe.run
    raise CalibrationError("no backend can run the float graph for the sensitivity probes: " + "; ".join(errors))


def relative_error(outs: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]]) -> float:
    num = sum(float(np.sum((o[k].astype(np.float64) - r[k]) ** 2)) for o, r in zip(outs, ref) for k in r)
    den = sum(float(np.sum(r[k].astype(np.float64) ** 2)) for r in ref for k in r)
    return num / max(den, 1e-30)


def probe_outputs(graph: Graph) -> list[str]:
    """The tensors the probes compare: the graph outputs, except that an output made by a Softmax is
    compared before it (on logits).  A saturated softmax hides most of a perturbation and turns the
    rest into jumps where a near-tie flips, so probability errors are not monotone in the width
    (PP-OCRv4 rec: a depthwise layer at 6 bits "worse" than at 3); logit errors are."""
    producer = {o: n for n in graph.nodes for o in n.outputs}
    out = []
    for vi in graph.outputs:
        n = producer.get(vi.name)
        out.append(n.inputs[0] if n is not None and n.op == "Softmax" else vi.name)
    return out


class Prober:
    """The float graph with every allocatable weight as an input, ready to run with any of them swapped."""

    def __init__(self, graph: Graph, layers: list[LayerPlan], batches: list[Feeds], backend: str = "auto"):
        if not batches:
            raise CalibrationError("sensitivity probes need calibration data (--calib DIR or --calib-random N)")
        self.graph, self.layers, self.batches = graph, layers, batches
        names = list(dict.fromkeys(lp.weight for lp in layers))
        probed = weights_as_inputs(graph, names)
        targets = probe_outputs(graph)
        if targets != [vi.name for vi in graph.outputs]:
            probed.outputs = [ValueInfo(t, "float32", None) for t in targets]
        self.backend, self._run = make_runner(probed, backend)
        self.base = {n: np.ascontiguousarray(graph.initializers[n], np.float32) for n in names}
        self.ref = [self._run({**b, **self.base}) for b in batches]
        self.runs = len(batches)

    def error(self, swap: dict[str, np.ndarray]) -> float:
        """Relative output error with the given weights swapped in (all others float)."""
        feeds = {**self.base, **swap}
        outs = [self._run({**b, **feeds}) for b in self.batches]
        self.runs += len(self.batches)
        return relative_error(outs, self.ref)


def probe(prober: Prober, widths: list[int], options: QuantizeOptions, method: WeightMethod,
          log: Callable[[str], None] | None = None) -> Sensitivity:
    t0 = time.perf_counter()
    err: dict[str, dict[int, float]] = {}
    raw: dict[str, dict[int, float]] = {}
    for i, lp in enumerate(prober.layers):
        raw[lp.name] = {b: prober.error({lp.weight: dequantized_weight(prober.graph, lp, b, options, method)})
                        for b in widths}
        err[lp.name] = monotone(raw[lp.name])
        if log and (i + 1) % 10 == 0:
            log(f"sensitivity: {i + 1}/{len(prober.layers)} layers, {time.perf_counter() - t0:.0f} s")
    return Sensitivity([lp.name for lp in prober.layers], list(widths), err, prober.runs,
                       time.perf_counter() - t0, prober.backend, {"raw_error": raw})


def monotone(err: dict[int, float]) -> dict[int, float]:
    """A narrower width never counts as better than a wider one: err(b) = max of the measured errors
    at b and above.  Some layers respond chaotically -- PP-OCRv4 rec's first depthwise conv moves the
    logits by ~20% for a 1e-4 relative weight change and about as much at 8 as at 2 bits -- and a raw
    probe would rank a lucky narrow width above a wide one; what such a layer needs is float."""
    out, worst = {}, 0.0
    for b in sorted(err, reverse=True):
        worst = max(worst, err[b])
        out[b] = worst
    return out


def activation_probe_graph(graph: Graph, layers: list[LayerPlan], ranges: dict[str, tuple[float, float]],
                           abits: int) -> tuple[Graph, dict[str, str]]:
    """A copy of the float graph where each QLinear layer's input goes through a switchable fake
    quantization at `abits` (the calibrated range, as the converter will quantize it):

        t' = t + m * (DequantizeLinear(QuantizeLinear(t)) - t)

    with m a scalar graph input per layer (0 = float, 1 = quantized).  Returns the graph and
    {layer name: its switch input}."""
    from converters.observers import qparams_from_range
    from converters.quantize import QLINEAR, abits_range

    qmin, qmax = abits_range(abits)
    rattrs = {} if abits == 8 else {"qmin": qmin, "qmax": qmax}
    by_node = {id(lp.node): lp for lp in layers if lp.kind == QLINEAR and lp.input in ranges}
    inits = dict(graph.initializers)
    nodes: list = []
    switches: dict[str, str] = {}
    extra_inputs: list[ValueInfo] = []
    for node in graph.nodes:
        lp = by_node.get(id(node))
        if lp is None:
            nodes.append(node)
            continue
        t, k = lp.input, len(switches)
        scale, zp = qparams_from_range(*ranges[t], qmin, qmax)
        s_name, z_name, m_name = f"__aprobe{k}_scale", f"__aprobe{k}_zp", f"__aprobe{k}_on"
        inits[s_name], inits[z_name] = np.asarray(scale, np.float32), np.asarray(zp, np.int8)
        extra_inputs.append(ValueInfo(m_name, "float32", []))
        p = f"__aprobe{k}_"
        nodes += [Node("QuantizeLinear", p + "q", [t, s_name, z_name], [p + "q"], dict(rattrs)),
                  Node("DequantizeLinear", p + "dq", [p + "q", s_name, z_name], [p + "dq"]),
                  Node("Sub", p + "d", [p + "dq", t], [p + "d"]),
                  Node("Mul", p + "md", [p + "d", m_name], [p + "md"]),
                  Node("Add", p + "t", [t, p + "md"], [p + "t"])]
        nodes.append(Node(node.op, node.name, [p + "t" if i == t else i for i in node.inputs], list(node.outputs),
                          dict(node.attrs)))
        switches[lp.name] = m_name
    out = Graph(name=graph.name, inputs=copy.deepcopy(graph.inputs) + extra_inputs,
                outputs=[ValueInfo(o, "float32", None) for o in probe_outputs(graph)], nodes=nodes,
                initializers=inits, encodings=dict(graph.encodings), preprocess=graph.preprocess,
                metadata=dict(graph.metadata))
    return out, switches


def activation_errors(graph: Graph, layers: list[LayerPlan], batches: list[Feeds],
                      ranges: dict[str, tuple[float, float]], abits: int, backend: str = "auto") -> tuple[dict[str, float], int]:
    """Per QLinear layer, the relative output error of quantizing its input activation alone."""
    g, switches = activation_probe_graph(graph, layers, ranges, abits)
    if not switches:
        return {}, 0
    _, run = make_runner(g, backend)
    off = {m: np.zeros((), np.float32) for m in switches.values()}
    ref = [run({**b, **off}) for b in batches]
    errs, runs = {}, len(batches)
    on = np.ones((), np.float32)
    prefix: dict[str, np.ndarray] = {}
    before = 0.0
    for name, m in switches.items():             # graph order
        alone = relative_error([run({**b, **off, m: on}) for b in batches], ref)
        prefix[m] = on
        upto = relative_error([run({**b, **off, **prefix}) for b in batches], ref)
        # quantization noise compounds through a chaotic stretch of layers (PP-OCRv4 rec's first
        # convs: each alone costs little, together they wreck the output), so a layer is charged
        # the larger of its own error and what it adds on top of every earlier layer's
        errs[name] = max(alone, upto - before)
        before = upto
        runs += 2 * len(batches)
    return errs, runs
