"""bench-llm: prefill and greedy-decode throughput and peak RSS of an LLM package, and with
--speculate, speculative against plain greedy decoding of the same text prompt in the same run."""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from edgert.bench import peak_rss_mb


@dataclass
class LlmBenchOptions:
    prompt_tokens: int = 64
    new_tokens: int = 128
    runs: int = 3
    backend: str = "ort"
    threads: int = 0
    seed: int = 0
    speculate: str = "none"             # "lookup" | "tree": also time speculative decoding
    max_nodes: int = 8
    adaptive: bool = True               # ProPD's dynamic tree size (False: always max_nodes)
    prune: bool = True                  # ProPD early pruning, when the package has an early-exit head
    prompt: str | None = None           # --speculate: the text to continue (default SPEC_PROMPT)


# Speculation needs real text (random ids give drafters nothing to find): an input-grounded task,
# as in the benchmark suite, in the model's chat template when it has one.
SPEC_PROMPT = ("Rewrite this note as a short list of steps.\n\nNote: To update the sensor firmware, "
               "first stop the agent service, then copy the new image to the device, check its SHA-256 "
               "against the release notes, flash it with the vendor tool, and finally restart the agent "
               "service and confirm that telemetry arrives at the fleet monitor.")


@dataclass
class LlmBenchResult:
    prefill_tok_s: float
    decode_tok_s: float
    peak_rss_mb: float
    load_s: float
    package_mb: float
    prompt_tokens: int
    new_tokens: int
    backend: str
    decode_ms_per_token: float
    speculative: dict | None = None

    def to_json(self) -> dict:
        def r(v):
            return round(v, 3) if isinstance(v, float) else {k: r(x) for k, x in v.items()} \
                if isinstance(v, dict) else v
        return {k: r(v) for k, v in asdict(self).items()}


def bench_llm(path, options: LlmBenchOptions = LlmBenchOptions()) -> LlmBenchResult:
    from edgert.llm.model import LlmOptions, load_llm
    from edgert.llm.step import StepInput

    o = options
    t0 = time.perf_counter()
    spec = o.speculate != "none"
    llm = load_llm(path, LlmOptions(backend=o.backend, threads=o.threads, pad_attention=spec,
                                    early_pruning=o.prune and o.speculate == "tree",
                                    max_seq=None if spec else o.prompt_tokens + o.new_tokens + 1))
    load_s = time.perf_counter() - t0
    # Ordinary token ids (the special/control tokens sit at the start of the vocabulary).
    rng = np.random.default_rng(o.seed)
    vocab = llm.config.vocab_size
    prompt = rng.integers(min(1000, vocab // 2), vocab, o.prompt_tokens)
    last = np.array([o.prompt_tokens - 1])
    llm.reset()
    llm.step.run(StepInput(prompt, logits_rows=last))        # warm-up
    llm.cache.commit()
    for _ in range(4):
        llm.step.run(StepInput(prompt[:1]))
        llm.cache.commit()
    pre, dec = [], []
    for _ in range(o.runs):
        llm.reset()
        t = time.perf_counter()
        out = llm.step.run(StepInput(prompt, logits_rows=last))
        llm.cache.commit()
        pre.append(time.perf_counter() - t)
        tok = int(out.logits[0].argmax())
        t = time.perf_counter()
        for _ in range(o.new_tokens):
            out = llm.step.run(StepInput(np.array([tok], np.int64)))
            llm.cache.commit()
            tok = int(out.logits[0].argmax())
        dec.append(time.perf_counter() - t)
    p, d = statistics.median(pre), statistics.median(dec)
    if spec and llm.early_pruning:
        # the split step (for early pruning) is the speculative mode's own cost: plain decoding is
        # timed on the ordinary single-session step
        plain = load_llm(path, LlmOptions(backend=o.backend, threads=o.threads, pad_attention=True))
        try:
            speculative = _speculative(llm, o, plain)
        finally:
            plain.close()
    else:
        speculative = _speculative(llm, o, llm) if spec else None
    return LlmBenchResult(prefill_tok_s=o.prompt_tokens / p, decode_tok_s=o.new_tokens / d,
                          peak_rss_mb=peak_rss_mb(), load_s=load_s,
                          package_mb=os.path.getsize(path) / 1e6, prompt_tokens=o.prompt_tokens,
                          new_tokens=o.new_tokens, backend=o.backend,
                          decode_ms_per_token=1000 * d / o.new_tokens, speculative=speculative)


def _speculative(llm, o: LlmBenchOptions, plain_llm) -> dict:
    """Plain and speculative greedy decoding of one text prompt, alternating, `runs` times each
    (end-of-generation ignored, so both make new_tokens tokens); medians and the drafter's stats."""
    from edgert.llm.model import GenerateOptions

    text = o.prompt or SPEC_PROMPT
    try:
        ids = llm.encode(llm.chat_prompt([{"role": "user", "content": text}]), special=True)
    except Exception:  # noqa: BLE001 - a package without a usable chat template: the plain text
        ids = llm.encode(text)
    gen = GenerateOptions(max_tokens=o.new_tokens, stop_at_eog=False)
    llm.generate(ids, options=gen, speculate=o.speculate, max_nodes=o.max_nodes)   # builds the drafter
    plain_s, spec_s, same = [], [], True
    stats = None
    for _ in range(o.runs):
        got = {}
        for mode in ("none", o.speculate):
            toks = []
            m = plain_llm if mode == "none" else llm
            it = m.generate(ids, options=gen, speculate=mode, max_nodes=o.max_nodes, adaptive=o.adaptive,
                              prune=o.prune)
            for t in it:
                if t.id >= 0:
                    toks.append(t.id)
            got[mode] = toks
            (plain_s if mode == "none" else spec_s).append(m.stats.decode_s / max(1, m.stats.new_tokens - 1))
        same = same and got["none"] == got[o.speculate]
        stats = llm.spec.stats
    sizes = np.bincount(stats.tree_sizes, minlength=o.max_nodes + 1)
    drafted = sum(n - 1 for n in stats.tree_sizes)
    plain_t, spec_t = statistics.median(plain_s), statistics.median(spec_s)
    return {"mode": o.speculate, "adaptive": o.adaptive, "max_nodes": o.max_nodes, "prompt_tokens": len(ids),
            "early_pruning": bool(llm.early_pruning and o.prune),
            "plain_decode_tok_s": 1 / plain_t, "decode_tok_s": 1 / spec_t, "speedup": plain_t / spec_t,
            "same_tokens_as_plain": bool(same), "steps": stats.steps,
            "mean_accepted": stats.mean_accepted,
            "tree_sizes": {str(i): int(c) for i, c in enumerate(sizes) if c},
            "drafted_nodes": drafted, "pruned_early": stats.pruned_early,
            "pruned_fraction": stats.pruned_early / drafted if drafted else 0.0,
            "carried": stats.carried}
