"""Layer-wise rounding reconstruction (AdaRound, with QDrop's activation drop), in numpy.

For a layer with float weight W [K, N] (K = inputs of one output: cin/groups x kh x kw for a conv,
per group) and quantization step s [N] (the converter's scales, kept), the integer weight is

    q = clip(floor(W / s) + h(V), qmin, qmax),   h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)

and V is optimised so that X_mix q s reproduces X W on calibration rows, plus AdaRound's regulariser
lambda * sum(1 - |2h - 1|^beta) with beta annealed from 20 to 2, which drives h to 0 or 1; the final
rounding is floor + (h >= 1/2).  Starting from h = frac(W / s) (plain rounding's neighbourhood).

QDrop: X_mix takes each element from the fake-quantized input (the calibrated activation range at
`abits`) with probability `drop_prob` and from the float input otherwise, so the rounding learns to
absorb activation quantization where it meets it without fitting its noise exactly.  The objective
is quadratic in the weights, so everything the optimisation needs is two K x K matrices per group,

    A = E[x_mix^T x_mix],  B = E[x_mix^T x]     (averaged over `masks` random drop masks)

and one step costs a K x K by K x N product: minutes for a whole PP-OCR model on 2 cores.

What this leaves out of QDrop: it reconstructs one layer at a time against the float layer's
output (AdaRound's granularity), not a residual block against the block's float output, and the
scales are kept (no learned step size); the drop masks are drawn a few times, not per iteration.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class ReconOptions:
    iters: int = 300
    lr: float = 0.01
    reg: float = 0.01                  # AdaRound's lambda (the loss is normalised by the output energy)
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.2                # share of iterations without the regulariser
    drop_prob: float = 0.5             # QDrop; 0 = AdaRound
    masks: int = 4
    max_rows: int = 4096               # calibration rows (output positions) sampled per layer
    seed: int = 0


def _h(v: np.ndarray) -> np.ndarray:
    return np.clip(1.0 / (1.0 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _dh(v: np.ndarray) -> np.ndarray:
    sig = 1.0 / (1.0 + np.exp(-v))
    raw = sig * (ZETA - GAMMA) + GAMMA
    return np.where((raw > 0) & (raw < 1), sig * (1 - sig) * (ZETA - GAMMA), 0.0)


def gram(x: np.ndarray, x_q: np.ndarray | None, drop_prob: float, masks: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A = E[x_mix^T x_mix], B = E[x_mix^T x] over rows, for x [G, R, K] (G groups)."""
    xt = x.transpose(0, 2, 1)
    if x_q is None or drop_prob <= 0:
        a = np.matmul(xt, x) / x.shape[1]
        return a, a
    a = np.zeros((x.shape[0], x.shape[2], x.shape[2]))
    b = np.zeros_like(a)
    for _ in range(masks):
        mix = np.where(rng.random(x.shape) < drop_prob, x_q, x)
        mt = mix.transpose(0, 2, 1)
        a += np.matmul(mt, mix)
        b += np.matmul(mt, x)
    return a / (masks * x.shape[1]), b / (masks * x.shape[1])


def round_layer(w: np.ndarray, s: np.ndarray, qmax: int, a: np.ndarray, b: np.ndarray, opts: ReconOptions,
                ) -> tuple[np.ndarray, dict]:
    """w [G, K, N] float, s [G, 1, N] steps, a / b [G, K, K] -> q [G, K, N] int8 and a small report."""
    w = w.astype(np.float64)
    s = s.astype(np.float64)
    base = np.floor(w / s)
    frac = w / s - base
    p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p / (1 - p))                                      # h(v) = frac at the start
    energy = max(float(np.einsum("gkn,gkn->", w, np.matmul(b, w))), 1e-30)   # ~ ||x W||^2 per row

    a32 = a.astype(np.float32)
    bw = np.matmul(b, w)                                        # constant: B W

    def loss_grad(v):
        q = np.clip(base + _h(v), -qmax, qmax)
        wq = q * s
        aw = np.matmul(a32, wq.astype(np.float32)).astype(np.float64)     # BLAS, the one K x K x N product
        rec = (np.einsum("gkn,gkn->", wq, aw) - 2 * np.einsum("gkn,gkn->", wq, bw)) / energy
        inside = (base + _h(v) > -qmax) & (base + _h(v) < qmax)
        g = 2 * (aw - bw) / energy * s * _dh(v) * inside
        return rec, g

    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    start = int(opts.warmup * opts.iters)
    rec0 = loss_grad(v)[0]
    for it in range(opts.iters):
        rec, g = loss_grad(v)
        if it >= start:
            t = (it - start) / max(1, opts.iters - start)
            beta = opts.beta[0] + (opts.beta[1] - opts.beta[0]) * t
            hv = _h(v)
            u = np.abs(2 * hv - 1)
            # d/dv of reg * sum(1 - u^beta) = -reg * beta * u^(beta-1) * sign(2h-1) * 2 h'(v)
            g = g - opts.reg * beta * np.power(u, beta - 1) * np.sign(2 * hv - 1) * 2 * _dh(v)
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        v -= opts.lr * (m1 / (1 - b1 ** (it + 1))) / (np.sqrt(m2 / (1 - b2 ** (it + 1))) + eps)
    q = np.clip(base + (_h(v) >= 0.5), -qmax, qmax)
    rtn = np.clip(np.rint(w / s), -qmax, qmax)

    def rec_of(qq):
        wq = qq * s
        return float((np.einsum("gkn,gkn->", wq, np.matmul(a, wq)) - 2 * np.einsum("gkn,gkn->", wq, bw)) / energy)
    return q.astype(np.int8), {"rec_rtn": rec_of(rtn) + 1, "rec_start": rec0 + 1, "rec": rec_of(q) + 1,
                               "flipped": float(np.mean(q != rtn))}


def reconstruct_layers(jobs: list, opts: ReconOptions, log: Callable[[str], None] | None = None) -> dict:
    """`jobs`: callables returning (name, w [G,K,N], s [G,1,N], qmax, x [G,R,K], x_q or None, finish)
    one layer at a time (so only one layer's activations are held); `finish(q)` stores the result.
    Returns {layer: report}."""
    rng = np.random.default_rng(opts.seed)
    out = {}
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        name, w, s, qmax, x, x_q, finish = job()
        if x.shape[1] > opts.max_rows:
            rows = rng.choice(x.shape[1], opts.max_rows, replace=False)
            x = x[:, rows]
            x_q = None if x_q is None else x_q[:, rows]
        a, b = gram(x.astype(np.float64), None if x_q is None else x_q.astype(np.float64), opts.drop_prob,
                    opts.masks, rng)
        q, rep = round_layer(w, s, qmax, a, b, opts)
        finish(q)
        out[name] = rep
        if log and (i + 1) % 10 == 0:
            log(f"reconstruction: {i + 1}/{len(jobs)} layers, {time.perf_counter() - t0:.0f} s")
    return out
