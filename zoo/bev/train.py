"""Train the BEV model (both variants at once) on the synthetic world with JAX + optax on CPU.

Data: clips of `clip_len` consecutive samples rendered once into a pool (rendering stays outside the
jitted step: ~60 ms a sample on one core), drawn from `worlds` world seeds at random times.

Temporal training is streaming, as the model runs: each of the `batch` slots walks through a clip two
samples (a, b) per step and carries its BEV state from step to step (no gradient through the carried
state).  a fuses the carried state warped into its ego frame, b fuses a's BEV warped by the true ego
motion (decode.warp_tables as a differentiable gather), so one step of back-propagation through time
teaches the fusion to use and to produce a useful prev_bev, and the state the model sees is the
steady-state one it will see at run time (training on isolated pairs from a reset makes the
recurrence drift at run time: measured, held-out mIoU fell from 0.36 without to 0.15 with the
previous BEV).  A slot starts every clip from a reset (zeros), and `reset_p` of the other steps reset
too; `drop_cam_p` of the samples lose one camera (mask 0, image zeros) so that the renormalised view
transform is trained for the scheduler's camera drops.

Loss per sample: class-weighted cross-entropy on the 100x100 grid (weights (freq / freq_max) ** -0.5
from the pool, clipped to [1, 10]), CenterNet's penalty-reduced focal loss on the centre heatmap
(alpha 2, beta 4), and L1 on the box fields at centre cells (CenterPoint's weight 0.25, velocity
channels 0.2).  AdamW, linear warmup then a cosine decay over the wall-clock budget.

Held-out evaluation runs the model as the runtime does -- sample after sample with the warped
previous BEV -- on a world seed never trained on.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import numpy as np

from edgert.bev.rig import Rig
from edgert.bev.schema import CLASSES, Pose, RigSample
from edgert.errors import ConversionError
from zoo.bev import model as M
from zoo.bev.decode import IMAGE_MEAN, IMAGE_STD, decode_boxes, warp_bev, warp_tables
from zoo.bev.metrics import confusion, iou_per_class, miou
from zoo.bev.targets import object_targets

BOX_CODE_WEIGHTS = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0.2, 0.2], np.float32)   # CenterPoint's code weights
ROUTE_SECONDS = 3000.0          # clip starts are drawn from the first this-many seconds of a world


class SampleSource(Protocol):
    """What training reads: a world (edgert.bev.world.World) or a recorded sequence player."""
    rig: Rig

    def sample(self, i: int) -> RigSample: ...


@dataclass
class TrainOptions:
    variants: tuple[str, ...] = ("full", "small")
    minutes: float = 25.0             # wall-clock budget: rendering the pool + optimisation
    steps: int | None = None          # stop after this many steps even if time is left
    batch: int = 4                    # slots (pairs of consecutive samples) per step
    lr: float = 2e-3
    warmup_steps: int = 30
    weight_decay: float = 1e-4
    seed: int = 0
    worlds: int = 3                   # training world seeds: 1000 * seed + k, k < worlds
    pool_samples: int | None = None   # rendered samples; None: about 12% of the budget, at most 1200
    clip_len: int = 12                # samples per rendered clip (1 s at 12 Hz); even
    reset_p: float = 0.05
    drop_cam_p: float = 0.2
    heat_weight: float = 1.0
    box_weight: float = 0.25
    eval_seed: int = 9999             # the held-out world
    eval_samples: int = 96            # consecutive held-out samples (8 s at 12 Hz); 0: no evaluation
    log_every: int = 10

    def validate(self) -> None:
        for v in self.variants:
            M.variant(v)
        if not self.variants:
            raise ConversionError("train at least one variant")
        if not self.minutes > 0 or self.batch < 1 or not self.lr > 0 or self.clip_len < 2 or self.worlds < 1 \
                or self.clip_len % 2:
            raise ConversionError("minutes, batch, lr and worlds must be positive and clip_len even, >= 2")
        if self.steps is not None and self.steps < 1:
            raise ConversionError(f"steps must be >= 1, got {self.steps}")

    def pool_size(self) -> int:
        if self.pool_samples is not None:
            return max(self.pool_samples, self.clip_len)
        n = int(self.minutes * 60 * 0.12 / 0.065)
        return max(self.clip_len * self.batch, min(1200, n)) // self.clip_len * self.clip_len


@dataclass
class EvalReport:
    samples: int
    miou: float                        # mean IoU over the classes that occur, temporal model as run
    iou: dict[str, float]              # per class (NaN -> None when absent)
    miou_no_temporal: float            # every sample with prev_bev = 0
    det_recall: float                  # boxes within 2 m of a ground-truth centre, score >= 0.3
    det_precision: float


@dataclass
class TrainReport:
    steps: int
    seconds: float                     # total, rendering included
    render_s: float
    step_ms: float                     # median optimisation step (all variants together)
    pool_samples: int
    class_weights: list[float]
    losses: dict[str, list[float]] = field(default_factory=dict)    # per variant, mean per log interval
    heldout: dict[str, EvalReport] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        for r in d["heldout"].values():
            r["iou"] = {k: (None if v != v else v) for k, v in r["iou"].items()}
        return d


def _jax():
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as e:
        raise ConversionError(f"training the BEV model needs JAX and optax (pip install 'edgert[train]'): "
                              f"{e}") from None
    return jax, jnp, optax


def default_sources(seed: int, n: int, rig: Rig | None = None) -> list[SampleSource]:
    from edgert.bev.world import World, WorldOptions
    return [World(rig, WorldOptions(seed=1000 * seed + k)) for k in range(n)]


# -- data -------------------------------------------------------------------------------------------

@dataclass
class Pool:
    frames: np.ndarray        # [N, n_cams, H, W, 3] uint8
    grids: np.ndarray         # [N, G, G] uint8
    boxes: list[np.ndarray]
    poses: list[Pose]
    clip_len: int

    @property
    def n_clips(self) -> int:
        return len(self.frames) // self.clip_len


def render_pool(sources: list[SampleSource], n_samples: int, clip_len: int, seed: int,
                progress: Callable[[int, int], None] | None = None) -> Pool:
    rng = np.random.default_rng(seed)
    frames, grids, boxes, poses = [], [], [], []
    n_clips = max(1, n_samples // clip_len)
    for c in range(n_clips):
        src = sources[c % len(sources)]
        n_avail = len(src) if hasattr(src, "__len__") else int(ROUTE_SECONDS * getattr(src, "rate_hz", 12))
        if n_avail < clip_len:
            raise ConversionError(f"{getattr(src, 'path', 'a training source')} has {n_avail} samples; training "
                                  f"clips are {clip_len} consecutive samples (record at least "
                                  f"{clip_len / getattr(src, 'rate_hz', 12):.1f} s)")
        start = int(rng.integers(0, max(1, n_avail - clip_len)))
        for i in range(start, start + clip_len):
            s = src.sample(i)
            if s.gt_grid is None or s.gt_boxes is None:
                raise ConversionError(f"sample {i} has no ground truth; training needs a world or a recording with GT")
            frames.append(np.stack([np.zeros_like(next(f for f in s.frames if f is not None)) if f is None else f
                                    for f in s.frames]))
            grids.append(s.gt_grid)
            boxes.append(s.gt_boxes)
            poses.append(s.pose)
        if progress:
            progress((c + 1) * clip_len, n_clips * clip_len)
    return Pool(np.stack(frames), np.stack(grids), boxes, poses, clip_len)


def class_weights(grids: np.ndarray) -> np.ndarray:
    freq = np.bincount(grids.ravel(), minlength=len(CLASSES)).astype(np.float64) + 1.0
    return np.clip((freq / freq.max()) ** -0.5, 1.0, 10.0).astype(np.float32)


class Slots:
    """The streaming batch: slot j is at sample `pos[j]` of clip `clip[j]`; each step consumes a and
    b = a + 1 and moves on by two, starting a fresh clip (and a reset) at the end of one."""

    def __init__(self, pool: Pool, n: int, rng: np.random.Generator):
        self.pool, self.rng = pool, rng
        self.clip = rng.choice(pool.n_clips, n, replace=pool.n_clips < n)
        self.pos = rng.integers(0, pool.clip_len // 2, n) * 2         # spread the slots' phases

    def batch(self, o: TrainOptions, grid) -> dict:
        pool, rng = self.pool, self.rng
        a_idx = self.clip * pool.clip_len + self.pos
        b_idx = a_idx + 1
        n_cams = pool.frames.shape[1]
        out: dict = {}
        for tag, idx in (("a", a_idx), ("b", b_idx)):
            mask = np.ones((len(idx), n_cams), np.float32)
            drop = rng.random(len(idx)) < o.drop_cam_p
            mask[np.nonzero(drop)[0], rng.integers(0, n_cams, drop.sum())] = 0.0
            tg = [object_targets(pool.boxes[i], grid) for i in idx]
            out[tag] = {"frames": pool.frames[idx], "mask": mask, "seg": pool.grids[idx].astype(np.int32),
                        "heat": np.stack([t[0] for t in tg]), "reg": np.stack([t[1] for t in tg]),
                        "reg_mask": np.stack([t[2] for t in tg])}
        # the carried state is the BEV of a - 1 (none at a clip's start)
        keep = (self.pos > 0) & (rng.random(len(a_idx)) >= o.reset_p)
        tabs_s = [warp_tables(grid, pool.poses[i].relative_to(pool.poses[i - 1]) if k else (0.0, 0.0, 0.0))
                  for i, k in zip(a_idx, keep)]
        tabs_a = [warp_tables(grid, pool.poses[j].relative_to(pool.poses[i])) for i, j in zip(a_idx, b_idx)]
        out["state_idx"], out["state_w"] = np.stack([t[0] for t in tabs_s]), np.stack([t[1] for t in tabs_s])
        out["keep_state"] = keep.astype(np.float32)
        out["warp_idx"], out["warp_w"] = np.stack([t[0] for t in tabs_a]), np.stack([t[1] for t in tabs_a])
        return out

    def advance(self) -> None:
        self.pos += 2
        done = self.pos + 1 >= self.pool.clip_len
        self.clip[done] = self.rng.integers(0, self.pool.n_clips, done.sum())
        self.pos[done] = 0


# -- losses -----------------------------------------------------------------------------------------

def normalise(frames):
    """uint8 [..., n_cams, H, W, 3] -> float32 [..., n_cams, 3, H, W] (decode.preprocess, in JAX)."""
    _, jnp, _ = _jax()
    x = frames.astype(jnp.float32) / 255.0
    x = jnp.moveaxis(x, -1, -3)
    return (x - IMAGE_MEAN) / IMAGE_STD


def sample_losses(out: dict, t: dict, cw):
    """(seg CE, focal, box L1) for a batch of forward outputs (heatmap as logits) and targets."""
    jax, jnp, _ = _jax()
    logp = jax.nn.log_softmax(out["seg"], axis=1)
    nll = -jnp.take_along_axis(logp, t["seg"][:, None], axis=1)[:, 0]
    w = cw[t["seg"]]
    seg = (nll * w).sum() / w.sum()
    x, gt = out["heatmap"], t["heat"]
    log_p, log_1p = jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
    p = jnp.exp(log_p)
    pos = (gt >= 1.0).astype(jnp.float32)
    n_pos = jnp.maximum(pos.sum(), 1.0)
    focal = -((pos * (1 - p) ** 2 * log_p).sum() + ((1 - pos) * (1 - gt) ** 4 * p ** 2 * log_1p).sum()) / n_pos
    m = t["reg_mask"][:, None]
    l1 = (jnp.abs(out["boxreg"] - t["reg"]) * m * jnp.asarray(BOX_CODE_WEIGHTS)[None, :, None, None]).sum()
    return seg, focal, l1 / jnp.maximum(t["reg_mask"].sum(), 1.0)


def pair_loss(params: dict, net: M.BevNet, batch: dict, state, cw, o: TrainOptions):
    """Loss of one variant on a batch of slots; returns (loss, (parts [4], b's BEV = the next state))."""
    jax, jnp, _ = _jax()
    a, b = batch["a"], batch["b"]
    prev_a = M.warp(jax.lax.stop_gradient(state), batch["state_idx"], batch["state_w"]) \
        * batch["keep_state"][:, None, None, None]
    out_a = M.forward(params, net, normalise(a["frames"]), a["mask"], prev_a, heat_logits=True)
    prev_b = M.warp(out_a["bev"], batch["warp_idx"], batch["warp_w"])
    out_b = M.forward(params, net, normalise(b["frames"]), b["mask"], prev_b, heat_logits=True)
    parts = [sum(x) / 2 for x in zip(sample_losses(out_a, a, cw), sample_losses(out_b, b, cw))]
    total = parts[0] + o.heat_weight * parts[1] + o.box_weight * parts[2]
    return total, (jnp.stack([total] + parts), out_b["bev"])


def make_step(nets: dict[str, M.BevNet], cw: np.ndarray, o: TrainOptions):
    """(init_opt, jitted step(params, opt_state, batch, states, lr) -> (params, opt_state,
    parts {variant: [4]}, states {variant: [B, bev_ch, S, S]}))."""
    jax, jnp, optax = _jax()
    opt = optax.inject_hyperparams(optax.adamw)(learning_rate=o.lr, weight_decay=o.weight_decay)
    cwj = jnp.asarray(cw)

    def loss(params, batch, states):
        res = {v: pair_loss(params[v], nets[v], batch, states[v], cwj, o) for v in nets}
        return sum(r[0] for r in res.values()), {v: r[1] for v, r in res.items()}

    @jax.jit
    def step(params, opt_state, batch, states, lr):
        opt_state.hyperparams["learning_rate"] = lr
        (_, aux), g = jax.value_and_grad(loss, has_aux=True)(params, batch, states)
        updates, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, {v: a[0] for v, a in aux.items()},
                {v: a[1] for v, a in aux.items()})

    return opt.init, step


def _lr(o: TrainOptions, step: int, frac: float) -> float:
    warm = min(1.0, (step + 1) / max(o.warmup_steps, 1))
    return float(o.lr * warm * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))))


# -- evaluation -------------------------------------------------------------------------------------

def evaluate(params: dict, net: M.BevNet, source: SampleSource, n: int, start: int = 0,
             fq: M.FakeQuant | None = None) -> EvalReport:
    """Run the model over n consecutive samples as the runtime does (warped previous BEV); `fq`:
    simulate quantization (zoo/bev/qat.py)."""
    jax, jnp, _ = _jax()
    from zoo.bev.decode import preprocess
    fwd = jax.jit(lambda p, i, m, pb: M.forward(p, net, i, m, pb, fq=fq))
    pj = M.to_jax(params)
    h, w = net.image_hw
    s = net.tables.grid
    conf = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    conf0 = np.zeros_like(conf)
    tp = n_pred = n_gt = 0
    prev_bev, prev_pose = None, None
    for i in range(start, start + n):
        smp = source.sample(i)
        images, mask = preprocess(smp.frames, h, w)
        if prev_bev is None:
            pb = np.zeros((1, net.cfg.bev_ch, s.size, s.size), np.float32)
        else:
            pb = warp_bev(prev_bev, s, smp.pose.relative_to(prev_pose))
        out = fwd(pj, images[None], mask[None], pb)
        out0 = fwd(pj, images[None], mask[None], np.zeros_like(pb))
        prev_bev, prev_pose = np.asarray(out["bev"]), smp.pose
        conf += confusion(np.argmax(np.asarray(out["seg"])[0], 0), smp.gt_grid)
        conf0 += confusion(np.argmax(np.asarray(out0["seg"])[0], 0), smp.gt_grid)
        boxes, _ = decode_boxes(np.asarray(out["heatmap"]), np.asarray(out["boxreg"]), s)
        gt = smp.gt_boxes
        n_pred += len(boxes)
        n_gt += len(gt)
        if len(boxes) and len(gt):
            d = np.linalg.norm(boxes[:, None, 1:3] - gt[None, :, 1:3], axis=-1)
            same = boxes[:, None, 0] == gt[None, :, 0]
            d = np.where(same, d, np.inf)
            used = set()
            for r in range(len(boxes)):                    # greedy, best score first
                j = int(np.argmin(d[r]))
                if d[r, j] <= 2.0 and j not in used:
                    used.add(j)
                    tp += 1
    iou = iou_per_class(conf)
    return EvalReport(samples=n, miou=miou(conf), iou={c: float(v) for c, v in zip(CLASSES, iou)},
                      miou_no_temporal=miou(conf0), det_recall=tp / max(n_gt, 1), det_precision=tp / max(n_pred, 1))


# -- the loop ---------------------------------------------------------------------------------------

def train(options: TrainOptions, sources: list[SampleSource] | None = None, eval_source: SampleSource | None = None,
          init: dict | None = None, log: Callable[[str], None] | None = None) -> tuple[dict, TrainReport]:
    """Train every variant in `options.variants`; returns ({variant: numpy params}, report).

    sources: training data (default: `options.worlds` synthetic worlds); eval_source: held-out data
    (default: the world of `options.eval_seed`); init: starting params per variant."""
    o = options
    o.validate()
    jax, jnp, _ = _jax()
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    if sources is None:
        sources = default_sources(o.seed, o.worlds)
    rig = sources[0].rig
    nets = {v: M.build(M.variant(v), rig) for v in o.variants}
    grid = next(iter(nets.values())).tables.grid
    pool = render_pool(sources, o.pool_size(), o.clip_len, o.seed)
    render_s = time.perf_counter() - t0
    say(f"rendered {len(pool.frames)} samples in {render_s:.1f} s")
    cw = class_weights(pool.grids)
    params = {v: M.to_jax(init[v] if init and v in init else M.init_params(nets[v], o.seed)) for v in nets}
    opt_init, step = make_step(nets, cw, o)
    opt_state = opt_init(params)
    rng = np.random.default_rng(o.seed + 1)
    slots = Slots(pool, o.batch, rng)
    s = grid.size
    states = {v: jnp.zeros((o.batch, nets[v].cfg.bev_ch, s, s)) for v in nets}
    budget_s = o.minutes * 60
    t_loop = time.perf_counter()
    times, losses, acc = [], {v: [] for v in nets}, {v: [] for v in nets}
    n = 0
    while True:
        elapsed = time.perf_counter() - t0
        if (o.steps is not None and n >= o.steps) or (elapsed >= budget_s and n > 0):
            break
        frac = (time.perf_counter() - t_loop) / max(budget_s - render_s, 1e-3)
        if o.steps is not None:
            frac = max(frac, n / o.steps)
        batch = slots.batch(o, grid)
        ts = time.perf_counter()
        params, opt_state, parts, states = step(params, opt_state, batch, states, _lr(o, n, frac))
        slots.advance()
        parts = {v: np.asarray(p) for v, p in parts.items()}
        times.append(time.perf_counter() - ts)
        for v in nets:
            acc[v].append(parts[v])
        n += 1
        if n % o.log_every == 0:
            for v in nets:
                losses[v].append(float(np.mean([a[0] for a in acc[v]])))
            say(f"step {n} {time.perf_counter() - t0:.0f}s " + " ".join(
                f"{v}: {np.mean(acc[v], 0).round(3).tolist()}" for v in nets))
            acc = {v: [] for v in nets}
    for v in nets:
        if acc[v]:
            losses[v].append(float(np.mean([a[0] for a in acc[v]])))
    out = {v: M.to_numpy(params[v]) for v in nets}
    report = TrainReport(steps=n, seconds=time.perf_counter() - t0, render_s=render_s,
                         step_ms=float(np.median(times[1:] if len(times) > 1 else times) * 1e3),
                         pool_samples=len(pool.frames), class_weights=cw.tolist(), losses=losses)
    if o.eval_samples > 0:
        if eval_source is None:
            from edgert.bev.world import World, WorldOptions
            eval_source = World(rig, WorldOptions(seed=o.eval_seed))
        for v in nets:
            report.heldout[v] = evaluate(out[v], nets[v], eval_source, o.eval_samples)
            say(f"held-out {v}: mIoU {report.heldout[v].miou:.3f}")
    return out, report
