"""The early-exit head for ProPD's early pruning: data and evaluation.

The head is a draft head of the same form (h + SiLU(h W + b), projected through the tied embedding),
applied to the final-normed residual stream after layer e -- OrtStep's `tap` with split_after = e --
and taught the model's own greedy NEXT token (what the full model will say after that position).
At decode time its top-k at a tree node decides which drafted children are worth the remaining
layers.  Data: (tap[t], argmax logits[t]) at every position of the model's own continuations of
corpus prompts (or of corpus windows), from one step that runs layers 0..e and then the rest (both
from one forward, exactly the runtime's numerics).
"""
from __future__ import annotations

import time

import numpy as np

from converters.llm_heads.data import DistillData, DistillOptions
from edgert.errors import InputError
from edgert.llm.step import StepInput


def distill_early(llm, text: str, options: DistillOptions | None = None) -> DistillData:
    """`llm`: an Llm loaded with LlmOptions(split_after=e).  targets [N, 1] = the greedy next token,
    on the model's own continuations (source "continue") or on corpus windows ("corpus")."""
    o = options or DistillOptions(n_heads=1)
    step = llm.step
    if getattr(step, "split_after", None) is None:
        raise InputError("early-exit distillation needs an LLM loaded with split_after (the ort backend)")
    if o.source == "continue":
        return _early_continue(llm, text, o)
    ids = np.asarray(llm.encode(text), dtype=np.int64)
    window = min(o.window, llm.max_seq)
    n_win = min(ids.size // window, -(-o.max_positions // window))
    if n_win == 0:
        raise InputError(f"corpus of {ids.size} tokens is shorter than one window ({window} tokens)")
    taps, tgt = [], []
    t0 = time.perf_counter()
    for w in range(n_win):
        x = ids[w * window:(w + 1) * window]
        llm.reset()
        st = step.run_early(StepInput(x))
        out = step.run_late(st)
        taps.append(st.tap.copy())
        tgt.append(out.logits.argmax(axis=1).astype(np.int32))
    llm.reset()
    n = min(o.max_positions, window * n_win)
    g = np.concatenate(tgt)[:n]
    return DistillData(np.concatenate(taps)[:n], g[:, None], g, windows=n_win, tokens=n_win * window,
                       seconds=time.perf_counter() - t0,
                       meta={"window": window, "after_layer": step.split_after})


def _early_continue(llm, text: str, o: DistillOptions) -> DistillData:
    """The model's own greedy continuations of corpus prompts: rows are the continuation positions."""
    from converters.llm_heads.data import continuations

    step, p_len = llm.step, o.prompt_tokens
    per = min(o.new_tokens, llm.max_seq - p_len)
    taps, tgt = [], []
    t0 = time.perf_counter()
    n_prompts = 0
    for _, n_prompts, seq in continuations(llm, text, o, per):
        llm.reset()
        st = step.run_early(StepInput(seq))
        out = step.run_late(st)
        rows = np.arange(p_len - 1, p_len - 1 + per)
        taps.append(st.tap[rows].copy())
        tgt.append(out.logits.argmax(axis=1).astype(np.int32)[rows])
    llm.reset()
    n = min(o.max_positions, per * n_prompts)
    g = np.concatenate(tgt)[:n]
    return DistillData(np.concatenate(taps)[:n], g[:, None], g, windows=n_prompts,
                       tokens=int(n_prompts * (p_len + per)), seconds=time.perf_counter() - t0,
                       meta={"source": "continue", "after_layer": step.split_after})


def recall_at(params, embedding: np.ndarray, data: DistillData, ks=(1, 3, 5, 10), batch: int = 256
              ) -> dict[int, float]:
    """Fraction of rows whose target is within the head's top-k, for each k (head 0 of params)."""
    from converters.llm_heads.train import _jax, forward

    jax, jnp, _ = _jax()
    emb = jnp.asarray(np.asarray(embedding, np.float32))

    @jax.jit
    def rank(p, h, t, e):
        lg = forward(p, h, e)[:, 0]                               # [B, V]
        tl = jnp.take_along_axis(lg, t[:, None], axis=1)
        return (lg > tl).sum(axis=1)

    ranks = np.concatenate([np.asarray(rank(params, jnp.asarray(data.hidden[s:s + batch]),
                                            jnp.asarray(data.targets[s:s + batch, 0]), emb))
                            for s in range(0, data.n, batch)])
    return {int(k): float((ranks < k).mean()) for k in ks}


def default_layer(n_layers: int) -> int:
    """Where the early-exit head goes unless told: after 15% of the layers (layer 4 of SmolLM2's 30).
    Measured with benchmarks/llm_early_exit.py on SmolLM2: held-out top-10 recall of the model's
    next token grows slowly with depth (0.59 after layer 4, 0.61 after 8, 0.65 after 12, 0.69 after
    16) while the share of a step a pruned node still costs grows linearly ((e + 1) / 30), and a
    drafted node is far more often wrong than right -- so an early layer prunes most for least."""
    return max(0, min(n_layers - 2, round(n_layers * 0.15)))


def train_early_exit(package, train_text: str, held_text: str, layer: int | None, options=None, *,
                     window: int = 256, positions: int = 32768, threads: int = 0, source: str = "continue"
                     ) -> dict:
    """Distill and train the early-exit head of `package` after `layer` (None = default_layer);
    returns {"w", "b", "after_layer", "report"} for store_heads(early=...)."""
    from converters.llm_heads.train import TrainOptions, train_heads
    from edgert.llm.model import LlmOptions, load_llm
    from edgert.llm.weights import read_llm

    if layer is None:
        w = read_llm(package)
        try:
            layer = default_layer(w.config.n_layers)
        finally:
            w.close()
    llm = load_llm(package, LlmOptions(threads=threads, split_after=layer))
    try:
        tr = distill_early(llm, train_text, DistillOptions(n_heads=1, window=window, max_positions=positions,
                                                           source=source))
        ho = distill_early(llm, held_text, DistillOptions(n_heads=1, window=window, source=source,
                                                          max_positions=max(64, positions // 8)))
        emb = llm.weights.matrix("token_embd")
    finally:
        llm.close()
    params, rep = train_heads(tr, emb, options or TrainOptions(minutes=5.0))
    import jax.numpy as jnp
    rec = recall_at({"w": jnp.asarray(params["w"]), "b": jnp.asarray(params["b"])}, emb, ho)
    report = {**rep.to_json(), "after_layer": layer, "source": source, "train_rows": tr.n, "heldout_rows": ho.n,
              "heldout_recall": {str(k): v for k, v in rec.items()}}
    report.pop("heldout", None)
    report.pop("heldout_base", None)
    report.pop("train_eval", None)
    return {"w": params["w"], "b": params["b"], "after_layer": layer, "report": report}
