"""Per-layer sensitivity from the Hessian trace, estimated with Hutchinson's method (HAWQ-V2), in JAX.

The loss is the relative squared output error against the float model on the calibration batches,

    L(W) = sum_batches ||f(W) - f(W0)||^2 / sum_batches ||f(W0)||^2      (outputs as the probes compare
                                                                           them: logits before a Softmax)

At the float weights the residual is zero, so its Hessian is exactly the Gauss-Newton matrix
H = J^T J / ||f0||^2, and Hutchinson's estimator of each layer's diagonal block trace is

    tr(H_ll) = E_v[ v_l . (H v)_l ],   v Rademacher over all weights,   H v = J^T (J v)

(one forward-mode and one reverse-mode pass per sample give every layer's estimate at once).  A width
b then costs, to second order and with H_ll taken as isotropic (HAWQ-V2's assumption),

    err_l(b) = tr(H_ll) / n_l * ||Q_b(W_l) - W_l||^2

in the same unit as the output-error probes (sensitivity.py), so the allocator takes either.  Cheaper
than probing every width on every layer (samples x 2 passes instead of layers x widths runs), but blind
to what a second-order model misses: layers whose output moves discontinuously (saturations, the
chaotic depthwise convs of PP-OCRv4 rec) are underestimated.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from converters.methods import WeightMethod
from converters.mixed.sensitivity import Sensitivity, dequantized_weight, monotone, probe_outputs
from converters.options import QuantizeOptions
from converters.quantize import LayerPlan
from edgert.errors import ConversionError
from edgert.ir import Graph


def hessian_traces(graph: Graph, layers: list[LayerPlan], batches: list[dict], samples: int = 16,
                   seed: int = 0) -> dict[str, float]:
    """{weight initializer: tr(H_ll) estimate} for the layers' weights (see the module docstring)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:
        raise ConversionError(f"Hutchinson sensitivities need JAX (pip install 'edgert[train]'): {e}") from e
    from converters.jaxir import run_nodes

    names = list(dict.fromkeys(lp.weight for lp in layers))
    outs = probe_outputs(graph)
    w0 = {n: jnp.asarray(graph.initializers[n], jnp.float32) for n in names}
    consts = {k: v for k, v in graph.initializers.items() if k not in w0}

    def f(ws, feeds):
        env = run_nodes(graph.nodes, {**feeds, **ws}, consts)
        return [env[o] for o in outs]

    @jax.jit
    def hv(ws, feeds, v):
        _, jv = jax.jvp(lambda w: f(w, feeds), (ws,), (v,))
        _, pull = jax.vjp(lambda w: f(w, feeds), ws)
        return pull(jv)[0]

    energy = sum(float(np.sum(np.square(np.asarray(y, np.float64))))
                 for b in batches for y in jax.jit(f)(w0, _feeds(b)))
    rng = np.random.default_rng(seed)
    acc = {n: 0.0 for n in names}
    for _ in range(samples):
        v = {n: jnp.asarray(rng.choice(np.array([-1.0, 1.0], np.float32), size=np.shape(w0[n]))) for n in names}
        for b in batches:
            h = hv(w0, _feeds(b), v)
            for n in names:
                acc[n] += float(jnp.vdot(v[n], h[n]))
    return {n: max(acc[n], 0.0) / samples / max(energy, 1e-30) for n in names}


def _feeds(batch: dict) -> dict:
    return {k: np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v) for k, v in batch.items()}


def hutchinson(graph: Graph, layers: list[LayerPlan], batches: list[dict], widths: list[int],
               options: QuantizeOptions, method: WeightMethod, samples: int = 16, seed: int = 0,
               log: Callable[[str], None] | None = None) -> Sensitivity:
    """Per layer and width, the second-order estimate of the relative output error (monotone in width)."""
    t0 = time.perf_counter()
    traces = hessian_traces(graph, layers, batches, samples, seed)
    err: dict[str, dict[int, float]] = {}
    for lp in layers:
        w = graph.initializers[lp.weight]
        per = traces[lp.weight] / max(1, w.size)
        err[lp.name] = monotone({b: per * float(np.sum((dequantized_weight(graph, lp, b, options, method)
                                                          .astype(np.float64) - w) ** 2)) for b in widths})
    secs = time.perf_counter() - t0
    if log:
        log(f"sensitivity: Hessian traces of {len(layers)} layers, {samples} Hutchinson samples x {len(batches)} "
            f"batches in {secs:.0f} s")
    return Sensitivity([lp.name for lp in layers], list(widths), err, runs=2 * samples * len(batches),
                       seconds=secs, backend="jax", extra={"trace": {lp.name: traces[lp.weight] for lp in layers}})
