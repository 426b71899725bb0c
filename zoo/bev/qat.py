"""Quantization-aware fine-tuning with QD-BEV's view-guided distillation (arXiv 2308.10515, §3.3).

The student is the model with fake quantization: weights W`wbits` per output channel, symmetric
(scale = max |w| / (2^(b-1) - 1)), and every conv input A`abits` per tensor (unsigned after a ReLU,
signed for the images) with ranges calibrated once on the fp32 teacher (max over `calib_batches`)
and then fixed; rounding passes gradients straight through (STE), clipped ranges pass none.

Loss = the training task loss (zoo/bev/train.py) + `feat_weight` x MSE(student image features,
teacher image features) + `bev_weight` x MSE(student BEV, teacher BEV), each MSE divided by the
teacher's mean square so the weights are scale-free.  The teacher is the fp32 model, run on the same
samples with its own carried BEV state.

The result is fp32 weights already on the W`wbits` grid (`snap_weights`), so a converter quantizing
per output channel with max-abs symmetric scales reproduces them exactly; the activation ranges used
in training are returned for the converter's calibration to start from.

Measured (2 CPU cores, from the 20-minute fp32 model, held-out world 9999, 96 samples, simulated
W4A6 in JAX): full fp32 mIoU 0.511, PTQ (calibrated ranges, no fine-tune) 0.496, this QAT after a
3-minute budget (53 steps at lr 3e-4) 0.478; small 0.400 / 0.389 / 0.388.  So a short QAT at this lr
does not beat PTQ yet: the lr is likely too high for a converged model (fp32 training ends at 1e-4);
try lr 5e-5 and a longer budget before relying on it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from edgert.errors import ConversionError
from zoo.bev import model as M
from zoo.bev import train as T


@dataclass
class QatOptions:
    wbits: int = 4
    abits: int = 6
    minutes: float = 5.0              # wall-clock budget: rendering + calibration + optimisation
    steps: int | None = None
    batch: int = 4
    lr: float = 3e-4
    feat_weight: float = 1.0          # view-guided distillation: image features
    bev_weight: float = 1.0           # and BEV features
    calib_batches: int = 4
    pool_samples: int | None = None   # None: as train.TrainOptions
    seed: int = 0
    eval_samples: int = 96
    log_every: int = 10

    def train_options(self, variants: tuple[str, ...]) -> T.TrainOptions:
        return T.TrainOptions(variants=variants, minutes=self.minutes, steps=self.steps, batch=self.batch, lr=self.lr,
                              seed=self.seed, pool_samples=self.pool_samples, eval_samples=self.eval_samples,
                              warmup_steps=5, log_every=self.log_every)


class Quantizer:
    """Fake quantization (model.FakeQuant) with fixed activation ranges {name: (lo, hi)}."""

    def __init__(self, ranges: dict[str, tuple[float, float]], wbits: int, abits: int):
        if not (2 <= wbits <= 8 and 2 <= abits <= 16):
            raise ConversionError(f"fake quantization supports W2..8 and A2..16, got W{wbits}A{abits}")
        self.ranges, self.wbits, self.abits = ranges, wbits, abits

    def weight(self, w):
        import jax
        import jax.numpy as jnp
        qmax = 2 ** (self.wbits - 1) - 1
        s = jax.lax.stop_gradient(jnp.maximum(jnp.abs(w).max(axis=(1, 2, 3), keepdims=True), 1e-8) / qmax)
        return w + jax.lax.stop_gradient(jnp.clip(jnp.round(w / s), -qmax, qmax) * s - w)

    def act(self, name: str, x):
        import jax
        import jax.numpy as jnp
        lo, hi = self.ranges[name]
        if lo < 0:                                  # signed: symmetric
            qmax = 2 ** (self.abits - 1) - 1
            s = max(-lo, hi, 1e-8) / qmax
            lo_q, hi_q = -qmax, qmax
        else:
            s = max(hi, 1e-8) / (2 ** self.abits - 1)
            lo_q, hi_q = 0, 2 ** self.abits - 1
        xc = jnp.clip(x, lo_q * s, hi_q * s)
        return xc + jax.lax.stop_gradient(jnp.round(xc / s) * s - xc)


class _Recorder:
    """A FakeQuant that changes nothing and records every conv input's min and max (while traced)."""

    def __init__(self):
        self.stats: dict = {}

    def weight(self, w):
        return w

    def act(self, name: str, x):
        self.stats[name] = (x.min(), x.max())
        return x


def snap_weights(params: dict, wbits: int) -> dict:
    """Conv weights rounded onto the per-output-channel symmetric W`wbits` grid (numpy)."""
    qmax = 2 ** (wbits - 1) - 1
    out = {}
    for stage, layers in params.items():
        out[stage] = []
        for layer in layers:
            w = np.asarray(layer["w"], np.float32)
            s = np.maximum(np.abs(w).max(axis=(1, 2, 3), keepdims=True), 1e-8) / qmax
            out[stage].append({"w": (np.clip(np.round(w / s), -qmax, qmax) * s).astype(np.float32),
                               "b": np.asarray(layer["b"], np.float32)})
    return out


@dataclass
class QatReport:
    steps: int
    seconds: float
    step_ms: float
    ranges: dict[str, dict[str, list[float]]]                   # variant -> conv input -> [lo, hi]
    losses: dict[str, list[float]] = field(default_factory=dict)
    heldout_fp32: dict[str, T.EvalReport] = field(default_factory=dict)
    heldout_ptq: dict[str, T.EvalReport] = field(default_factory=dict)   # fake-quant, calibrated, no fine-tune
    heldout_qat: dict[str, T.EvalReport] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("heldout_fp32", "heldout_ptq", "heldout_qat"):
            for r in d[k].values():
                r["iou"] = {c: (None if v != v else v) for c, v in r["iou"].items()}
        return d


def calibrate(teacher: dict, nets: dict[str, M.BevNet], slots: T.Slots, o: T.TrainOptions, n_batches: int) -> dict:
    """{variant: {conv input: (lo, hi)}} over `n_batches` streaming batches of the fp32 model."""
    import jax
    import jax.numpy as jnp

    def stats(params, net, batch, state):
        rec = _Recorder()
        prev = M.warp(state, batch["state_idx"], batch["state_w"]) * batch["keep_state"][:, None, None, None]
        out = M.forward(params, net, T.normalise(batch["a"]["frames"]), batch["a"]["mask"], prev, fq=rec)
        return rec.stats, out["bev"]

    fns = {v: jax.jit(lambda p, b, s, net=net: stats(p, net, b, s)) for v, net in nets.items()}
    grid = next(iter(nets.values())).tables.grid
    states = {v: jnp.zeros((o.batch, n.cfg.bev_ch, grid.size, grid.size)) for v, n in nets.items()}
    ranges: dict = {v: {} for v in nets}
    for _ in range(n_batches):
        batch = slots.batch(o, grid)
        for v in nets:
            st, _ = fns[v](teacher[v], batch, states[v])
            for name, (lo, hi) in st.items():
                plo, phi = ranges[v].get(name, (np.inf, -np.inf))
                ranges[v][name] = (min(plo, float(lo)), max(phi, float(hi)))
        slots.advance()
    return ranges


def qat(params: dict[str, dict], options: QatOptions = QatOptions(), sources: list | None = None,
        eval_source=None, log: Callable[[str], None] | None = None) -> tuple[dict, QatReport]:
    """Fine-tune fp32 params {variant: params} with fake quantization and view-guided distillation;
    returns ({variant: params snapped to the weight grid}, report)."""
    jax, jnp, optax = T._jax()
    q = options
    o = q.train_options(tuple(params))
    o.validate()
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    if sources is None:
        sources = T.default_sources(q.seed + 17, o.worlds)   # other worlds than the fp32 training's
    rig = sources[0].rig
    nets = {v: M.build(M.variant(v), rig) for v in params}
    grid = next(iter(nets.values())).tables.grid
    pool = T.render_pool(sources, o.pool_size(), o.clip_len, q.seed)
    cw = jnp.asarray(T.class_weights(pool.grids))
    rng = np.random.default_rng(q.seed + 1)
    slots = T.Slots(pool, q.batch, rng)
    teacher = {v: M.to_jax(p) for v, p in params.items()}
    ranges = calibrate(teacher, nets, slots, o, q.calib_batches)
    fqs = {v: Quantizer(ranges[v], q.wbits, q.abits) for v in nets}
    say(f"calibrated {sum(len(r) for r in ranges.values())} activation ranges in {time.perf_counter() - t0:.0f} s")

    def variant_loss(p, v, batch, s_state, t_state):
        net, fq = nets[v], fqs[v]
        a, b = batch["a"], batch["b"]
        keep = batch["keep_state"][:, None, None, None]
        outs = {}
        for who, prm, f, state in (("s", p, fq, s_state), ("t", teacher[v], None, t_state)):
            prev_a = M.warp(jax.lax.stop_gradient(state), batch["state_idx"], batch["state_w"]) * keep
            oa = M.forward(prm, net, T.normalise(a["frames"]), a["mask"], prev_a, heat_logits=True, fq=f)
            prev_b = M.warp(oa["bev"], batch["warp_idx"], batch["warp_w"])
            ob = M.forward(prm, net, T.normalise(b["frames"]), b["mask"], prev_b, heat_logits=True, fq=f)
            outs[who] = (oa, ob)
        (sa, sb), (ta, tb) = outs["s"], jax.lax.stop_gradient(outs["t"])
        parts = [sum(x) / 2 for x in zip(T.sample_losses(sa, a, cw), T.sample_losses(sb, b, cw))]
        task = parts[0] + o.heat_weight * parts[1] + o.box_weight * parts[2]

        def nmse(s, t):
            return ((s - t) ** 2).mean() / ((t ** 2).mean() + 1e-6)

        d_feat = (nmse(sa["feat"], ta["feat"]) + nmse(sb["feat"], tb["feat"])) / 2
        d_bev = (nmse(sa["bev"], ta["bev"]) + nmse(sb["bev"], tb["bev"])) / 2
        total = task + q.feat_weight * d_feat + q.bev_weight * d_bev
        return total, (jnp.stack([total, task, d_feat, d_bev]), sb["bev"], tb["bev"])

    opt = optax.inject_hyperparams(optax.adam)(learning_rate=q.lr)

    def loss(p, batch, s_states, t_states):
        res = {v: variant_loss(p[v], v, batch, s_states[v], t_states[v]) for v in nets}
        return sum(r[0] for r in res.values()), {v: r[1] for v, r in res.items()}

    @jax.jit
    def step(p, opt_state, batch, s_states, t_states, lr):
        opt_state.hyperparams["learning_rate"] = lr
        (_, aux), g = jax.value_and_grad(loss, has_aux=True)(p, batch, s_states, t_states)
        updates, opt_state = opt.update(g, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state, {v: a[0] for v, a in aux.items()},
                {v: a[1] for v, a in aux.items()}, {v: a[2] for v, a in aux.items()})

    student = {v: M.to_jax(p) for v, p in params.items()}
    opt_state = opt.init(student)
    zeros = {v: jnp.zeros((q.batch, n.cfg.bev_ch, grid.size, grid.size)) for v, n in nets.items()}
    s_states, t_states = dict(zeros), dict(zeros)
    budget_s = q.minutes * 60
    t_loop = time.perf_counter()
    times, losses, acc, n = [], {v: [] for v in nets}, {v: [] for v in nets}, 0
    while True:
        if (q.steps is not None and n >= q.steps) or (time.perf_counter() - t0 >= budget_s and n > 0):
            break
        frac = (time.perf_counter() - t_loop) / max(budget_s - (t_loop - t0), 1e-3)
        if q.steps is not None:
            frac = max(frac, n / q.steps)
        batch = slots.batch(o, grid)
        ts = time.perf_counter()
        student, opt_state, parts, s_states, t_states = step(student, opt_state, batch, s_states, t_states,
                                                             T._lr(o, n, frac))
        parts = {v: np.asarray(x) for v, x in parts.items()}
        times.append(time.perf_counter() - ts)
        slots.advance()
        for v in nets:
            acc[v].append(parts[v])
        n += 1
        if n % q.log_every == 0:
            for v in nets:
                losses[v].append(float(np.mean([x[0] for x in acc[v]])))
            say(f"qat step {n} " + " ".join(f"{v}: {np.mean(acc[v], 0).round(4).tolist()}" for v in nets))
            acc = {v: [] for v in nets}
    out = {v: snap_weights(M.to_numpy(student[v]), q.wbits) for v in nets}
    report = QatReport(steps=n, seconds=time.perf_counter() - t0,
                       step_ms=float(np.median(times[1:] if len(times) > 1 else times) * 1e3),
                       ranges={v: {k: [lo, hi] for k, (lo, hi) in r.items()} for v, r in ranges.items()},
                       losses=losses)
    if q.eval_samples > 0:
        if eval_source is None:
            from edgert.bev.world import World, WorldOptions
            eval_source = World(rig, WorldOptions(seed=o.eval_seed))
        for v in nets:
            report.heldout_fp32[v] = T.evaluate(params[v], nets[v], eval_source, q.eval_samples)
            report.heldout_ptq[v] = T.evaluate(params[v], nets[v], eval_source, q.eval_samples, fq=fqs[v])
            report.heldout_qat[v] = T.evaluate(out[v], nets[v], eval_source, q.eval_samples, fq=fqs[v])
            say(f"held-out {v}: fp32 {report.heldout_fp32[v].miou:.3f}  W{q.wbits}A{q.abits} PTQ "
                f"{report.heldout_ptq[v].miou:.3f}  QAT {report.heldout_qat[v].miou:.3f}")
    return out, report
