"""Block reconstruction (BRECQ's granularity, QDrop's recipe), in JAX on CPU.

The float graph is cut into blocks of a few quantized layers at boundaries where one tensor is live
(a residual block ends there; a block may also end where a few are).  Block by block, in order:

* its input is what the *quantized* network computes there (the blocks before it already carry their
  learned rounding and activation steps), its target what the float network computes (QDrop, sec. 4);
* inside it every quantized layer is simulated as the runtime executes it: input and output
  fake-quantized with the calibrated ranges (a folded Relu / Clip before the output's), weights
  `s * clip(floor(W / s) + h(V), -qmax, qmax)` with AdaRound's rectified sigmoid h and its
  regulariser (beta annealed 20 -> 2), and each activation's step learned as a log-multiplier on the
  calibrated one (LSQ's straight-through gradient);
* QDrop: during the optimisation each fake-quantized activation element is replaced by its float
  value with probability `drop_prob` (fresh per step), so the weights learn to absorb activation
  quantization without fitting its noise;
* the loss is the blocks' relative squared output error, averaged over a random mini-batch of
  calibration samples (vmapped, so every sample keeps its own batch axis).

Afterwards the block's hard-rounded, fake-quantized output on every calibration sample becomes the next
block's input.  The result is per-layer integer weights (`LayerPlan.rounded`) and per-tensor activation
ranges.  What this leaves out of QDrop: the weight scales stay the converter's (only the rounding and
the activation steps are learned), and it runs hundreds of steps per block, not 20k.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from converters.methods import QuantizedWeight, WeightMethod
from converters.observers import qparams_from_range
from converters.options import QuantizeOptions
from converters.quantize import FLOAT, QLINEAR, LayerPlan, QuantPlan, _quantize_layer_weight, abits_range
from converters.recon.jobs import _covered
from edgert.errors import ConversionError
from edgert.ir import Graph, Node

ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class BlockOptions:
    iters: int = 200                 # optimisation steps per block
    batch: int = 4                   # calibration samples per step
    lr: float = 1e-2                 # Adam on the rounding variables
    act_lr: float = 4e-3             # Adam on the activation steps' log-multipliers
    reg: float = 0.01                # AdaRound's lambda, relative to the block's initial loss
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.2              # share of steps without the regulariser
    drop_prob: float = 0.5           # QDrop; 0 = BRECQ-style block AdaRound
    max_layers: int = 4              # quantized layers per block (it ends at the next clean cut)
    seed: int = 0


@dataclass
class _Layer:
    lp: LayerPlan
    qw0: QuantizedWeight
    learn: bool                      # rounding learned (else the converter's rounding, fixed)
    s: np.ndarray                    # the step, broadcast against the weight
    base: np.ndarray                 # floor(w / s)
    v0: np.ndarray                   # V with h(V) = frac(w / s)
    qmax: int


def blocks(graph: Graph, plan: QuantPlan, max_layers: int) -> list[tuple[int, int]]:
    """[start, end) node ranges holding >= max_layers quantized layers each (where the graph allows),
    each ending where the fewest tensors are live within the next max_layers layers (a residual
    block's end; in a U-Net-like graph the skip tensors just pass through the blocks between)."""
    nodes = graph.nodes
    live = live_sizes(graph)
    layer_ids = {id(lp.node) for lp in plan.layers if lp.kind != FLOAT}
    is_layer = [id(n) in layer_ids for n in nodes]
    ahead = []                       # min live size from boundary i to the one after max_layers more layers
    for i in range(len(nodes) + 1):
        j, seen = i, 0
        while j < len(nodes) and seen < max_layers:
            seen += is_layer[j]
            j += 1
        ahead.append(min(live[i: j + 1]))
    out, start, count = [], 0, 0
    for i in range(len(nodes) - 1):
        count += is_layer[i]
        end = i + 1
        if count >= max_layers and live[end] <= ahead[end] and any(is_layer[end:]):
            out.append((start, end))
            start, count = end, 0
    out.append((start, len(nodes)))
    return out


def live_sizes(graph: Graph) -> list[int]:
    """Number of dynamic tensors crossing each boundary (before node i; index len(nodes) = after all)."""
    nodes = graph.nodes
    last: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for t in n.inputs:
            if t and t not in graph.initializers:
                last[t] = i
    for o in graph.outputs:
        last[o.name] = len(nodes)
    born = {vi.name: 0 for vi in graph.inputs}
    for i, n in enumerate(nodes):
        for t in n.outputs:
            if t:
                born.setdefault(t, i + 1)
    return [sum(1 for t, b in born.items() if b <= i and last.get(t, -1) >= i) for i in range(len(nodes) + 1)]


def _live_at(graph: Graph, i: int) -> list[str]:
    nodes = graph.nodes
    born = {vi.name: 0 for vi in graph.inputs}
    for k, n in enumerate(nodes[:i]):
        for t in n.outputs:
            if t:
                born.setdefault(t, k + 1)
    later = {t for n in nodes[i:] for t in n.inputs if t} | {o.name for o in graph.outputs}
    return [t for t in born if t in later]


def _h(v):
    import jax.numpy as jnp
    return jnp.clip(1 / (1 + jnp.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _prepare_layers(graph: Graph, plan: QuantPlan, qopts: QuantizeOptions, method: WeightMethod) -> dict[int, _Layer]:
    out = {}
    for lp in plan.layers:
        if lp.kind == FLOAT:
            continue
        w = np.asarray(lp.weight_kn if lp.weight_kn is not None else graph.initializers[lp.weight], np.float32)
        qw0 = _quantize_layer_weight(w, lp, qopts, method)
        spec = qw0.spec
        s = qw0.scale
        if spec.granularity == "channel":
            shape = [1] * w.ndim
            shape[spec.axis] = -1
            s = s.reshape(shape)
        elif spec.granularity == "group":
            s = np.repeat(s, spec.group_size, axis=spec.axis)
        s = np.broadcast_to(np.asarray(s, np.float32), w.shape)
        learn = _covered(lp, qopts) and not spec.midrise_2bit and lp.op in ("Conv", "MatMul", "Gemm")
        base = np.floor(w / s)
        frac = np.clip((w / s - base - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
        out[id(lp.node)] = _Layer(lp, qw0, learn, s, base.astype(np.float32),
                                  np.log(frac / (1 - frac)).astype(np.float32), qw0.scheme.qmax)
    return out


class _Sim:
    """The quantized network as the runtime runs it, for one block, in JAX."""

    def __init__(self, graph: Graph, layers: dict[int, _Layer], ranges: dict, abits: int | None):
        self.graph, self.layers, self.ranges = graph, layers, ranges
        self.abits = abits
        self.qrange = abits_range(abits) if abits is not None else None
        self.out_fq = {L.lp.output for L in layers.values() if L.lp.kind == QLINEAR}
        self.qparams = {}
        for t, (lo, hi) in ranges.items():
            if self.qrange is not None:
                sc, zp = qparams_from_range(lo, hi, *self.qrange)
                self.qparams[t] = (float(sc), float(zp))

    def weight(self, L: _Layer, params: dict, hard: bool):
        import jax.numpy as jnp
        key = L.lp.name
        if L.learn and key in params["v"]:
            v = params["v"][key]
            r = (v >= 0.0).astype(jnp.float32) if hard == "learned" else _h(v)   # h >= 1/2 <=> v >= 0
            q = jnp.clip(L.base + r, -L.qmax, L.qmax)
            return q * L.s
        return L.qw0.dequantize()

    def fq(self, t: str, x, params: dict, drop):
        """Fake-quantize tensor t (its calibrated step times the learned multiplier); `drop` = (key, p)
        keeps each element float with probability p."""
        import jax
        import jax.numpy as jnp
        if t not in self.qparams:
            return x
        sc, zp = self.qparams[t]
        m = params["a"].get(t)
        step = sc if m is None else sc * jnp.exp(m)
        z = x / step
        z = z + jax.lax.stop_gradient(jnp.round(z) - z)                 # straight-through (LSQ)
        y = (jnp.clip(z + zp, *self.qrange) - zp) * step
        if drop is not None:
            key, p = drop
            k = jax.random.fold_in(key, zlib.crc32(t.encode()) & 0x3FFFFFFF)
            y = jnp.where(jax.random.bernoulli(k, 1.0 - p, jnp.shape(x)), y, x)
        return y

    def run(self, nodes: list[Node], env: dict, params: dict, hard, drop) -> dict:
        """Evaluate the block: hard is "learned" (final rounding), "rtn" (converter's) or False (soft)."""
        import jax.numpy as jnp

        from converters.jaxir import Hooks, run_nodes
        from converters.jaxir.ops import OPS

        layers = self.layers

        def weight(node, i, v):
            L = layers.get(id(node))
            if L is None or L.lp.kind == QLINEAR or node.inputs[i] != L.lp.weight:
                return v
            return self.weight(L, params, hard) if hard != "rtn" else L.qw0.dequantize()

        def node_hook(node, ins):
            L = layers.get(id(node))
            if L is None or L.lp.kind != QLINEAR:
                return None
            x = ins[0]
            if self.abits is not None:
                x = self.fq(L.lp.input, x, params, drop)
            w = self.weight(L, params, hard) if hard != "rtn" else L.qw0.dequantize()
            if node.op == "Conv":
                y = OPS["Conv"](node, [x, w])[0]
                if L.lp.bias is not None:
                    y = y + jnp.reshape(L.lp.bias, (1, -1) + (1,) * (y.ndim - 2))
            else:
                y = jnp.matmul(x, w)
                if L.lp.bias is not None:
                    y = y + L.lp.bias
            return (y,)

        def output(t, v):
            return self.fq(t, v, params, drop) if t in self.out_fq and self.abits is not None else v

        return run_nodes(nodes, env, self.graph.initializers, Hooks(weight=weight, output=output, node=node_hook))


def reconstruct_blocks(graph: Graph, plan: QuantPlan, qopts: QuantizeOptions, method: WeightMethod,
                       batches: list[dict], ranges: dict | None, opts: BlockOptions,
                       log: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Learn every covered layer's rounding (sets `LayerPlan.rounded`) and the activation ranges, block by
    block.  Returns ({block: report}, {tensor: (lo, hi)} learned ranges)."""
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as e:
        raise ConversionError(f"block reconstruction needs JAX and optax (pip install 'edgert[train]'): {e}") from e
    from converters.jaxir import run_nodes, supported

    bad = sorted({n.op for n in graph.nodes if not supported(n)})
    if bad:
        raise ConversionError(f"block reconstruction has no JAX lowering of {', '.join(bad)}")
    shapes = {k: np.shape(v) for k, v in batches[0].items()}
    if any({k: np.shape(v) for k, v in b.items()} != shapes for b in batches):
        raise ConversionError("block reconstruction needs calibration batches of one shape")
    ranges = dict(ranges or {})
    layers = _prepare_layers(graph, plan, qopts, method)
    sim = _Sim(graph, layers, ranges, qopts.abits if any(L.lp.kind == QLINEAR for L in layers.values()) else None)
    consts = graph.initializers
    inputs = {vi.name for vi in graph.inputs}
    fp = {k: jnp.asarray(np.stack([np.asarray(b[k], np.float32) for b in batches])) for k in inputs}
    qp = dict(fp)
    rng = np.random.default_rng(opts.seed)
    key = jax.random.PRNGKey(opts.seed)
    learned_a: dict[str, float] = {}
    reports = {}
    t0 = time.perf_counter()
    cuts = blocks(graph, plan, opts.max_layers)
    n_samples = len(batches)
    for bi, (start, end) in enumerate(cuts):
        nodes = graph.nodes[start:end]
        ins, outs = _live_at(graph, start), _live_at(graph, end)
        made = [t for t in outs if any(t in n.outputs for n in nodes)]
        blk_layers = [layers[id(n)] for n in nodes if id(n) in layers]
        params = {"v": {L.lp.name: jnp.asarray(L.v0) for L in blk_layers if L.learn},
                  "a": {t: jnp.zeros(()) for t in _fq_tensors(nodes, sim) if t not in learned_a}}
        a_fixed = {t: jnp.asarray(m) for t, m in learned_a.items()}

        def fwd_float(env):
            e = run_nodes(nodes, env, consts)
            return {t: e[t] for t in made}

        def fwd_q(p, env, k, hard, drop_p):
            full = {"v": p["v"], "a": {**a_fixed, **p["a"]}}
            e = sim.run(nodes, env, full, hard, None if drop_p is None else (k, drop_p))
            return {t: e[t] for t in made}

        target = _chunked(jax.jit(jax.vmap(fwd_float)), {t: fp[t] for t in ins})

        # each output's error relative to its mean energy per sample over all calibration samples (a
        # mini-batch where a tensor happens to be ~0 must not blow the loss up); all-zero tensors don't count
        energy = {t: float(np.mean(np.sum(np.square(np.asarray(target[t], np.float64)).reshape(n_samples, -1), 1)))
                  for t in made}

        def loss_of(out, tgt):
            n = jax.tree_util.tree_leaves(tgt)[0].shape[0]
            return sum(jnp.sum((out[t] - tgt[t]) ** 2) / (energy[t] * n) for t in made if energy[t] > 0)

        q_in = {t: qp[t] for t in ins}
        if made and (params["v"] or params["a"]):
            loss_rtn = _block_loss(jax, fwd_q, params, q_in, target, loss_of, "rtn")
            labels = {"v": jax.tree_util.tree_map(lambda _: "v", params["v"]),
                      "a": jax.tree_util.tree_map(lambda _: "a", params["a"])}
            tx = optax.multi_transform({"v": optax.adam(opts.lr), "a": optax.adam(opts.act_lr)}, labels)
            state = tx.init(params)
            n_v = max(1, sum(int(np.prod(v.shape)) for v in params["v"].values()))
            reg0 = opts.reg * max(loss_rtn, 1e-12)

            @jax.jit
            def step(p, state, xb, tb, k, beta, reg_on):
                def total(p):
                    keys = jax.random.split(k, jax.tree_util.tree_leaves(xb)[0].shape[0])
                    out = jax.vmap(lambda e, kk: fwd_q(p, e, kk, False, opts.drop_prob))(xb, keys)
                    rec = loss_of(out, tb)
                    reg = sum(jnp.sum(1 - jnp.abs(2 * _h(v) - 1) ** beta) for v in p["v"].values()) / n_v
                    return rec + reg_on * reg0 * reg, rec
                (_, rec), g = jax.value_and_grad(total, has_aux=True)(p)
                upd, state = tx.update(g, state, p)
                return optax.apply_updates(p, upd), state, rec

            warm = int(opts.warmup * opts.iters)
            for it in range(opts.iters):
                idx = rng.choice(n_samples, min(opts.batch, n_samples), replace=False)
                t = max(0, it - warm) / max(1, opts.iters - warm)
                beta = opts.beta[0] + (opts.beta[1] - opts.beta[0]) * t
                key, k = jax.random.split(key)
                params, state, _ = step(params, state, {n: v[idx] for n, v in q_in.items()},
                                        {n: v[idx] for n, v in target.items()}, k, beta, float(it >= warm))
            loss_final = _block_loss(jax, fwd_q, params, q_in, target, loss_of, "learned")
            finite = all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(params))
            kept = finite and np.isfinite(loss_final) and loss_final <= loss_rtn
            if not kept:        # diverged, or no better than plain rounding: this block keeps the converter's
                params = {"v": {}, "a": {t: jnp.zeros(()) for t in params["a"]}}
            reports[f"block{bi}"] = {"nodes": [start, end], "layers": len(blk_layers), "learned": len(params["v"]),
                                     "loss_rtn": loss_rtn, "loss": loss_final if kept else loss_rtn, "kept": kept}
        for t, m in params["a"].items():
            learned_a[t] = float(m)
        # the next block's inputs: quantized path with the final rounding, float path
        a_fixed = {t: jnp.asarray(m) for t, m in learned_a.items()}
        final = "learned" if params["v"] else "rtn"
        qout = _chunked(jax.jit(jax.vmap(lambda e: fwd_q({"v": params["v"], "a": {}}, e, None, final, None))), q_in)
        for t in outs:
            if t in made:
                qp[t], fp[t] = qout[t], target[t]
        for L in blk_layers:
            if L.learn and L.lp.name in params["v"]:
                q = np.clip(L.base + (np.asarray(params["v"][L.lp.name]) >= 0), -L.qmax, L.qmax).astype(np.int8)
                shape = np.shape(L.lp.weight_kn if L.lp.weight_kn is not None else graph.initializers[L.lp.weight])
                L.lp.rounded = QuantizedWeight(q=q.reshape(shape), scale=L.qw0.scale, spec=L.qw0.spec)
        for t in list(fp):
            if t not in outs:
                del fp[t]
                qp.pop(t, None)
        if log and reports.get(f"block{bi}"):
            r = reports[f"block{bi}"]
            log(f"block {bi + 1}/{len(cuts)}: {r['layers']} layers, loss {r['loss_rtn']:.3g} -> {r['loss']:.3g}"
                f"{'' if r['kept'] else ' (learned rounding dropped)'} ({time.perf_counter() - t0:.0f} s)")
    new_ranges = {}
    for t, m in learned_a.items():
        if t in ranges and m != 0.0 and np.isfinite(m):
            lo, hi = ranges[t]
            new_ranges[t] = (lo * float(np.exp(m)), hi * float(np.exp(m)))
    return reports, new_ranges


def crops(batches: list[dict], size: int, per_batch: int, seed: int = 0) -> list[dict]:
    """`per_batch` random size x size crops of every 4-D (NCHW) input of each batch: a fully convolutional
    model fitted on crops of its calibration images at their own scale (PP-OCR det: a block step on four
    320x320 crops costs a quarter of one on 640x640 pages)."""
    rng = np.random.default_rng(seed)
    out = []
    for b in batches:
        for _ in range(per_batch):
            c = {}
            for k, v in b.items():
                v = np.asarray(v)
                if v.ndim != 4 or v.shape[2] < size or v.shape[3] < size:
                    raise ConversionError(f"cannot take {size}x{size} crops of input {k!r} of shape {list(v.shape)}")
                y, x = rng.integers(0, v.shape[2] - size + 1), rng.integers(0, v.shape[3] - size + 1)
                c[k] = np.ascontiguousarray(v[:, :, y: y + size, x: x + size])
            out.append(c)
    return out


def _fq_tensors(nodes: list[Node], sim: _Sim) -> list[str]:
    """Tensors fake-quantized inside the block: QLinear layers' inputs and outputs."""
    out = []
    for n in nodes:
        L = sim.layers.get(id(n))
        if L is not None and L.lp.kind == QLINEAR and sim.abits is not None:
            out += [L.lp.input, L.lp.output]
    return [t for t in dict.fromkeys(out) if t in sim.qparams]


def _chunked(fn, env: dict, chunk: int = 4) -> dict:
    """fn over the sample axis in chunks (bounded memory), concatenated."""
    import jax.numpy as jnp
    n = next(iter(env.values())).shape[0]
    parts = [fn({k: v[i: i + chunk] for k, v in env.items()}) for i in range(0, n, chunk)]
    return {k: jnp.concatenate([p[k] for p in parts]) for k in parts[0]}


def _block_loss(jax, fwd_q, params, q_in, target, loss_of, hard) -> float:
    out = _chunked(jax.jit(jax.vmap(lambda e: fwd_q(params, e, None, hard, None))), q_in)
    return float(loss_of(out, target))
