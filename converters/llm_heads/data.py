"""Self-distillation data for draft heads: the model's hidden states and its own greedy tokens.

Two sources (DistillOptions.source):
  "continue" (default; what train-heads uses): the model continues prompts cut from the corpus
  greedily, and the heads learn its own choices on its own text -- the contexts they will see when
  drafting (the model's continuation, not corpus text).  One prefill over prompt + continuation
  then gives h[t] and the targets for every position of the continuation.
  "corpus": teacher-forced on corpus windows, as described below (cheaper: no generation).

For each window of corpus tokens x[0..L) one prefill step gives, for every position t, the
final-normed hidden state h[t] and the model's greedy next token g[t] = argmax logits[t] (its
prediction of x[t+1] given x[0..t]).  Head k (k = 1..K) at position t is taught g[t+k]: the model's
greedy prediction of token t+k+1 given the TRUE prefix x[0..t+k].

This is teacher-forced on corpus text -- the standard Medusa-1 self-distillation approximation
(Cai et al. 2024, arXiv 2401.10774, §2.3.2 trains on the model's outputs for a dataset's prompts):
at decode time the prefix is the model's own continuation, not corpus text, so where the model's
greedy token differs from x[t+1..t+k] the target comes from a context the heads will not see.
Positions with t+k >= L have no target and are dropped (every head uses the same positions).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgert.errors import InputError
from edgert.llm.step import StepInput


@dataclass
class DistillOptions:
    n_heads: int = 4
    window: int = 256                 # tokens per prefill (one fresh context each)
    max_positions: int = 32768        # cap on (hidden, targets) rows kept per split
    holdout_fraction: float = 0.1     # split_corpus: the tail of the corpus held out for evaluation
    source: str = "continue"          # "continue" (the model's own continuations) | "corpus"
    prompt_tokens: int = 32           # continue: corpus tokens per prompt
    new_tokens: int = 96              # continue: greedy tokens generated per prompt

    def validate(self) -> None:
        if not 1 <= self.n_heads <= 16:
            raise InputError(f"n_heads must be 1..16, got {self.n_heads}")
        if not self.n_heads + 2 <= self.window <= 8192:
            raise InputError(f"window must be in {self.n_heads + 2}..8192, got {self.window}")
        if self.max_positions < 1 or not 0.0 < self.holdout_fraction < 1.0:
            raise InputError("max_positions must be >= 1 and holdout_fraction in (0, 1)")
        if self.source not in ("continue", "corpus"):
            raise InputError(f"source must be 'continue' or 'corpus', got {self.source!r}")
        if self.prompt_tokens < 1 or self.new_tokens < self.n_heads + 2:
            raise InputError(f"prompt_tokens must be >= 1 and new_tokens >= {self.n_heads + 2}")


@dataclass
class DistillData:
    hidden: np.ndarray                # float32 [N, hidden]: final-normed hidden states
    targets: np.ndarray               # int32 [N, K]: targets[:, k-1] = model's greedy token t+k+1
    next_greedy: np.ndarray           # int32 [N]: the model's own greedy next token (t+1)
    windows: int = 0
    tokens: int = 0
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.hidden.shape[0])


def split_corpus(text: str, holdout_fraction: float = 0.1) -> tuple[str, str]:
    """(train text, held-out text): the held-out part is the corpus's tail, a different part of it,
    cut at a paragraph or line break where one is near."""
    if not 0.0 < holdout_fraction < 1.0:
        raise InputError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    cut = int(len(text) * (1.0 - holdout_fraction))
    for sep in ("\n\n", "\n"):
        j = text.rfind(sep, max(0, cut - 2000), cut)
        if j > 0:
            cut = j
            break
    return text[:cut], text[cut:]


def distill(llm, text: str, options: DistillOptions | None = None, progress=None) -> DistillData:
    """Run `llm` (edgert.llm.model.Llm) over `text`; see the module doc for the sources and targets."""
    o = options or DistillOptions()
    o.validate()
    if o.source == "continue":
        return _distill_continue(llm, text, o, progress)
    ids = np.asarray(llm.encode(text), dtype=np.int64)
    k = o.n_heads
    window = min(o.window, llm.max_seq)
    per = window - k                              # rows with all K targets, per full window
    n_win = ids.size // window
    if n_win == 0:
        raise InputError(f"corpus of {ids.size} tokens is shorter than one window ({window} tokens)")
    n_win = min(n_win, -(-o.max_positions // per))
    hid, tgt, nxt = [], [], []
    t0 = time.perf_counter()
    for w in range(n_win):
        x = ids[w * window:(w + 1) * window]
        llm.reset()
        out = llm.step.run(StepInput(x))
        g = out.logits.argmax(axis=1).astype(np.int32)            # g[t]: greedy token t+1
        rows = np.arange(per)
        hid.append(np.asarray(out.hidden[:per], dtype=np.float32))
        tgt.append(np.stack([g[rows + j] for j in range(1, k + 1)], axis=1))
        nxt.append(g[:per])
        if progress is not None:
            progress(w + 1, n_win)
    llm.reset()
    n = min(o.max_positions, per * n_win)
    return DistillData(np.concatenate(hid)[:n], np.concatenate(tgt)[:n], np.concatenate(nxt)[:n],
                       windows=n_win, tokens=n_win * window, seconds=time.perf_counter() - t0,
                       meta={"window": window, "n_heads": k})


def continuations(llm, text: str, o: DistillOptions, per: int):
    """Yield (i, n, prompt + greedy continuation ids) for prompts of o.prompt_tokens cut from `text`
    at evenly spaced places, enough of them for o.max_positions rows at `per` rows each; each is
    continued for min(o.new_tokens, room) tokens, end-of-generation ignored."""
    from edgert.llm.model import GenerateOptions

    ids = np.asarray(llm.encode(text), dtype=np.int64)
    p_len, g_len = o.prompt_tokens, min(o.new_tokens, llm.max_seq - o.prompt_tokens)
    if ids.size < p_len or g_len < 2:
        raise InputError(f"corpus of {ids.size} tokens is shorter than one prompt ({p_len} tokens)")
    n = max(1, min(-(-o.max_positions // per), ids.size // p_len))
    gen = GenerateOptions(max_tokens=g_len, stop_at_eog=False)
    for i, s0 in enumerate(np.linspace(0, ids.size - p_len, n).astype(np.int64)):
        prompt = ids[s0:s0 + p_len]
        cont = [t.id for t in llm.generate(prompt, options=gen) if t.id >= 0]
        yield i, n, np.concatenate([prompt, np.asarray(cont, np.int64)])


def _distill_continue(llm, text: str, o: DistillOptions, progress=None) -> DistillData:
    """Rows: every continuation position t whose K targets (the continuation's tokens t+2..t+K+1)
    exist, plus the last prompt position (its head targets are the first continuation tokens)."""
    k, p_len = o.n_heads, o.prompt_tokens
    g_len = min(o.new_tokens, llm.max_seq - p_len)
    per = g_len - k                               # rows with all K targets, per prompt
    hid, tgt, nxt = [], [], []
    t0 = time.perf_counter()
    n_prompts = 0
    for i, n_prompts, seq in continuations(llm, text, o, per):
        llm.reset()
        out = llm.step.run(StepInput(seq))
        g = out.logits.argmax(axis=1).astype(np.int32)            # g[t]: greedy token t+1 (= seq[t+1])
        rows = np.arange(p_len - 1, p_len - 1 + per)
        hid.append(np.asarray(out.hidden[rows], dtype=np.float32))
        tgt.append(np.stack([g[rows + j] for j in range(1, k + 1)], axis=1))
        nxt.append(g[rows])
        if progress is not None:
            progress(i + 1, n_prompts)
    llm.reset()
    n = min(o.max_positions, per * n_prompts)
    return DistillData(np.concatenate(hid)[:n], np.concatenate(tgt)[:n], np.concatenate(nxt)[:n],
                       windows=n_prompts, tokens=int(n_prompts * (p_len + g_len)),
                       seconds=time.perf_counter() - t0,
                       meta={"source": "continue", "prompt_tokens": p_len, "new_tokens": g_len, "n_heads": k})
