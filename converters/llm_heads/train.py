"""Train Medusa-style draft heads with JAX on CPU (the `train` extra: jax[cpu], optax).

Head k: h_k = h + SiLU(h @ W_k + b_k), logits_k = h_k @ E^T with E the model's tied token embedding
(float32, frozen).  W_k starts at zero, so every head starts as the model's own next-token head
(Medusa, arXiv 2401.10774, §2.1.1).  Loss: the mean over heads of the full-softmax cross-entropy
against the model's greedy tokens (converters/llm_heads/data.py).  Full softmax, not sampled: the
V x H projection dominates, and measured on 2 cores a batch of 64 x 4 heads at V = 49152 costs
well under the 30-minute budget for the data sizes used (see the report in README / the issue).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgert.errors import ConversionError


@dataclass
class TrainOptions:
    steps: int | None = None          # None: as many as `minutes` allows, at most `epochs` passes
    minutes: float = 25.0             # wall-clock budget for the optimisation loop
    epochs: float = 3.0
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 20
    weight_decay: float = 0.0
    seed: int = 0
    eval_batch: int = 256

    def validate(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConversionError(f"steps must be >= 1, got {self.steps}")
        if not self.minutes > 0 or not self.epochs > 0 or self.batch < 1 or not self.lr > 0:
            raise ConversionError("minutes, epochs, batch and lr must be positive")


@dataclass
class HeadEval:
    top1: list[float]                 # per head, fraction of held-out rows whose target is the top-1
    top3: list[float]
    n: int


@dataclass
class TrainReport:
    steps: int
    seconds: float
    step_ms: float
    loss_first: float
    loss_last: float
    losses: list[float] = field(default_factory=list)      # mean loss per logged interval
    heldout: HeadEval | None = None
    heldout_base: HeadEval | None = None   # zero heads = the model's next-token guess for t+k+1
    train_eval: HeadEval | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _jax():
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as e:
        raise ConversionError(f"training draft heads needs JAX and optax (pip install 'edgert[train]'): "
                              f"{e}") from None
    return jax, jnp, optax


def forward(params, h, emb):
    """logits [B, K, V] (jax) for hidden rows h [B, H]."""
    _, jnp, _ = _jax()
    import jax.nn
    z = jnp.einsum("bi,kio->bko", h, params["w"]) + params["b"][None]
    hk = h[:, None, :] + jax.nn.silu(z)
    return jnp.einsum("bkh,vh->bkv", hk, emb)


def evaluate(params, emb, hidden: np.ndarray, targets: np.ndarray, batch: int = 256) -> HeadEval:
    """Per-head top-1 / top-3 accuracy of `params` on (hidden, targets)."""
    jax, jnp, _ = _jax()
    emb = jnp.asarray(emb)
    k = targets.shape[1]

    @jax.jit
    def hits(p, h, t, e):
        lg = forward(p, h, e)                                    # [B, K, V]
        tl = jnp.take_along_axis(lg, t[:, :, None], axis=2)         # target logit
        better = (lg > tl).sum(axis=2)                             # rank of the target (0 = top-1)
        return (better < 1).sum(0), (better < 3).sum(0)

    h1, h3 = np.zeros(k), np.zeros(k)
    for s in range(0, hidden.shape[0], batch):
        a, b = hits(params, jnp.asarray(hidden[s:s + batch]), jnp.asarray(targets[s:s + batch]), emb)
        h1 += np.asarray(a)
        h3 += np.asarray(b)
    n = hidden.shape[0]
    return HeadEval([float(x / n) for x in h1], [float(x / n) for x in h3], n)


def zero_params(k: int, hidden: int) -> dict:
    _, jnp, _ = _jax()
    return {"w": jnp.zeros((k, hidden, hidden), jnp.float32), "b": jnp.zeros((k, hidden), jnp.float32)}


def train_heads(train, embedding: np.ndarray, options: TrainOptions | None = None, heldout=None,
                progress=None) -> tuple[dict[str, np.ndarray], TrainReport]:
    """Train K heads on `train` (a DistillData); returns ({"w": [K, H, H], "b": [K, H]} float32, report).
    `heldout` (a DistillData from another part of the corpus) is scored, never trained on."""
    jax, jnp, optax = _jax()
    o = options or TrainOptions()
    o.validate()
    hidden_np = np.asarray(train.hidden, np.float32)
    targets_np = np.asarray(train.targets, np.int32)
    n, hsz = hidden_np.shape
    k = targets_np.shape[1]
    emb = jnp.asarray(np.asarray(embedding, np.float32))
    if emb.shape[1] != hsz:
        raise ConversionError(f"embedding {list(emb.shape)} does not match hidden size {hsz}")
    batch = min(o.batch, n)
    planned = o.steps or max(1, int(o.epochs * n / batch))
    rng = np.random.default_rng(o.seed)
    params = zero_params(k, hsz)

    def make_opt(total: int):
        sched = optax.warmup_cosine_decay_schedule(0.0, o.lr, min(o.warmup, max(1, total // 10)), max(total, 2))
        return optax.adamw(sched, weight_decay=o.weight_decay)

    # the embedding is an argument, not a closed-over constant: XLA would constant-fold its transpose
    def loss_fn(p, h, t, e):
        lg = forward(p, h, e)
        return optax.softmax_cross_entropy_with_integer_labels(lg, t).mean()

    def build(opt):
        @jax.jit
        def step(p, s, h, t, e):
            loss, g = jax.value_and_grad(loss_fn)(p, h, t, e)
            upd, s = opt.update(g, s, p)
            return optax.apply_updates(p, upd), s, loss
        return step

    order = np.concatenate([rng.permutation(n) for _ in range(int(np.ceil(planned * batch / n)) + 1)])

    def batch_at(i):
        idx = order[(i * batch) % order.size:][:batch]
        if idx.size < batch:
            idx = np.concatenate([idx, order[:batch - idx.size]])
        return jnp.asarray(hidden_np[idx]), jnp.asarray(targets_np[idx])

    # time a few steps on a throw-away optimiser state, then plan the run to fit the budget
    budget_s = o.minutes * 60.0
    opt = make_opt(planned)
    step = build(opt)
    if o.steps is None:
        probe_p, probe_s = params, opt.init(params)
        probe_p, probe_s, _ = step(probe_p, probe_s, *batch_at(0), emb)
        jax.block_until_ready(probe_p)
        t = time.perf_counter()
        for i in range(3):
            probe_p, probe_s, _ = step(probe_p, probe_s, *batch_at(i), emb)
        jax.block_until_ready(probe_p)
        per = (time.perf_counter() - t) / 3
        fit = max(1, int(budget_s * 0.95 / per))
        if fit < planned:
            planned = fit
            opt = make_opt(planned)
            step = build(opt)
    state = opt.init(params)
    losses, acc = [], []
    log_every = max(1, planned // 50)
    t0 = time.perf_counter()
    done = 0
    for i in range(planned):
        params, state, loss = step(params, state, *batch_at(i), emb)
        acc.append(loss)
        done = i + 1
        if done % log_every == 0 or done == planned:
            losses.append(float(np.mean([float(x) for x in acc])))
            acc = []
            if progress is not None:
                progress(done, planned, losses[-1])
        if o.steps is None and time.perf_counter() - t0 > budget_s:
            break
    jax.block_until_ready(params)
    secs = time.perf_counter() - t0
    if acc:
        losses.append(float(np.mean([float(x) for x in acc])))
    out = {"w": np.asarray(params["w"], np.float32), "b": np.asarray(params["b"], np.float32)}
    rep = TrainReport(steps=done, seconds=secs, step_ms=1000 * secs / max(done, 1),
                      loss_first=losses[0], loss_last=losses[-1], losses=losses)
    if heldout is not None and heldout.n:
        rep.heldout = evaluate(params, emb, heldout.hidden, heldout.targets, o.eval_batch)
        rep.heldout_base = evaluate(zero_params(k, hsz), emb, heldout.hidden, heldout.targets, o.eval_batch)
    return out, rep
