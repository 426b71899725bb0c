"""Probe, allocate, report: `plan_mixed_precision` turns a budget into per-layer widths.

The budget covers the model's stored weights: the allocatable layers' codes and scales, plus what is
fixed (every other initializer at its stored size: biases, layers kept float by the user, shared
weights).  `--avg-bits B` is B bits per allocatable weight, scales included.  The allocator may also
keep a layer in float (32 bits per weight, error 0) when the budget has room.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from converters.methods import WeightMethod
from converters.mixed.allocate import allocate
from converters.mixed.budget import FLOAT, SizeBudget, layer_bytes
from converters.mixed.sensitivity import Prober, activation_errors, allocatable, dequantized_weight, probe
from converters.options import QuantizeOptions
from converters.quantize import LayerPlan, QuantPlan
from edgert.errors import ConversionError
from edgert.ir import Graph

DEFAULT_WIDTHS = (2, 3, 4, 5, 6, 8)


@dataclass(frozen=True)
class MixedOptions:
    budget: SizeBudget
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    allow_float: bool = True
    batches: int = 4                      # calibration batches the probes run on
    sensitivity: str = "probe"            # "probe": measured output errors; "hutchinson": Hessian traces (JAX)
    hutchinson_samples: int = 16

    def __post_init__(self) -> None:
        if self.sensitivity not in ("probe", "hutchinson"):
            raise ConversionError(f"unknown sensitivity {self.sensitivity!r} (known: probe, hutchinson)")
        if not self.widths or any(not 1 <= b <= 8 for b in self.widths):
            raise ConversionError(f"candidate widths must be 1..8 bits, got {self.widths}")
        if self.batches < 1:
            raise ConversionError(f"sensitivity batches must be >= 1, got {self.batches}")


@dataclass
class MixedReport:
    budget: str
    budget_bytes: int                     # for the allocatable layers (total budget minus fixed bytes)
    fixed_bytes: int
    allocated_bytes: int
    params: int
    bits: dict[str, int]                  # layer -> chosen width (32 = float)
    probe_error: dict[str, float]         # layer -> its probed error at the chosen width
    predicted_error: float                # sum of the chosen probe errors
    measured_error: float                 # all chosen widths at once, weight-only (float activations)
    probe_runs: int
    probe_s: float
    backend: str
    package_error: float | None = None    # the quantized graph (activations too), set by the converter

    @property
    def avg_bits(self) -> float:
        return 8 * self.allocated_bytes / max(1, self.params)

    def summary(self) -> str:
        hist: dict[int, int] = {}
        for b in self.bits.values():
            hist[b] = hist.get(b, 0) + 1
        widths = ", ".join(f"{'float' if b == FLOAT else f'{b}-bit'}×{n}" for b, n in sorted(hist.items()))
        pkg = f", quantized graph {_db(self.package_error)}" if self.package_error is not None else ""
        return (f"mixed precision for {self.budget}: {self.avg_bits:.2f} bits/weight over {self.params:,} "
                f"weights ({widths}); output error predicted {_db(self.predicted_error)}, measured "
                f"{_db(self.measured_error)} (weights only){pkg}; {self.probe_runs} probe runs in {self.probe_s:.1f} s")

    def to_json(self) -> dict:
        return {"budget": self.budget, "budget_bytes": self.budget_bytes, "fixed_bytes": self.fixed_bytes,
                "allocated_bytes": self.allocated_bytes, "avg_bits": round(self.avg_bits, 4),
                "predicted_error": self.predicted_error, "measured_error": self.measured_error,
                "package_error": self.package_error, "probe_runs": self.probe_runs,
                "probe_s": round(self.probe_s, 2), "bits": self.bits}


def _db(err: float | None) -> str:
    """Relative squared error as an output SQNR in dB."""
    if err is None:
        return "-"
    return "inf dB" if err <= 0 else f"{-10 * np.log10(err):.1f} dB SQNR"


def _rows(lp: LayerPlan, w: np.ndarray) -> int:
    if lp.granularity == "tensor":
        return 1
    if lp.granularity == "group":
        return w.size // max(1, lp.group_size or 1)
    return w.shape[lp.axis] if lp.weight_kn is None else lp.weight_kn.shape[lp.axis]


def plan_mixed_precision(graph: Graph, plan: QuantPlan, qopts: QuantizeOptions, method: WeightMethod,
                         batches: list, options: MixedOptions, backend: str = "auto",
                         log: Callable[[str], None] | None = None,
                         ranges: dict[str, tuple[float, float]] | None = None) -> MixedReport:
    """Per-layer widths for `plan`'s allocatable layers within the budget.  With `ranges` (calibrated
    activation ranges) and activation quantization on, each QLinear layer's quantized options also
    carry the error of quantizing its input activation (probed alone, added to the weight error),
    so the allocator keeps a layer float where its activations, not its weights, are what hurts."""
    t0 = time.perf_counter()
    layers = allocatable(plan)
    if not layers:
        raise ConversionError("mixed precision: the model has no quantizable layer to allocate bits to")
    names = {lp.weight for lp in layers}
    fixed = sum(int(a.nbytes) for n, a in graph.initializers.items() if n not in names)
    params = sum(int(graph.initializers[lp.weight].size) for lp in layers)
    budget = options.budget.bytes_for(params)
    if options.budget.size_bytes is not None:
        budget -= fixed
        if budget <= 0:
            raise ConversionError(f"size budget {options.budget.describe()} is below the model's fixed "
                                  f"weights alone ({fixed:,} B of biases and float tensors)")
    scale_bytes = 2 if qopts.scale_dtype == "fp16" else 4
    prober = Prober(graph, layers, batches, backend)
    if options.sensitivity == "hutchinson":
        from converters.mixed.hessian import hutchinson
        sens = hutchinson(graph, layers, batches, list(options.widths), qopts, method, options.hutchinson_samples,
                          log=log)
    else:
        sens = probe(prober, list(options.widths), qopts, method, log)
    act: dict[str, float] = {}
    if ranges is not None and qopts.abits is not None:
        act, runs = activation_errors(graph, layers, batches, ranges, qopts.abits, backend)
        prober.runs += runs
    cands: list[list[tuple[int, int, float]]] = []          # per layer: (bits, bytes, error)
    for lp in layers:
        w = graph.initializers[lp.weight]
        rows = _rows(lp, w)
        a = act.get(lp.name, 0.0)
        opts = [(b, layer_bytes(w.size, rows, b, scale_bytes), sens.error[lp.name][b] + a) for b in options.widths]
        if options.allow_float:
            opts.append((FLOAT, layer_bytes(w.size, rows, FLOAT), 0.0))
        cands.append(opts)
    alloc = allocate([[(nb, e) for _, nb, e in c] for c in cands], budget)
    bits = {lp.name: cands[i][k][0] for i, (lp, k) in enumerate(zip(layers, alloc.choice))}
    swap = {lp.weight: dequantized_weight(graph, lp, bits[lp.name], qopts, method)
            for lp in layers if bits[lp.name] != FLOAT}
    measured = prober.error(swap)
    return MixedReport(options.budget.describe(), budget, fixed, alloc.bytes, params, bits,
                       {lp.name: (sens.error[lp.name][bits[lp.name]] + act.get(lp.name, 0.0)
                                  if bits[lp.name] != FLOAT else 0.0) for lp in layers},
                       alloc.error, measured, prober.runs, time.perf_counter() - t0, prober.backend)
