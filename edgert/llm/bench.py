"""bench-llm: prefill and greedy-decode throughput and peak RSS of an LLM package."""
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

    def to_json(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def bench_llm(path, options: LlmBenchOptions = LlmBenchOptions()) -> LlmBenchResult:
    from edgert.llm.model import LlmOptions, load_llm
    from edgert.llm.step import StepInput

    o = options
    t0 = time.perf_counter()
    llm = load_llm(path, LlmOptions(backend=o.backend, threads=o.threads,
                                    max_seq=o.prompt_tokens + o.new_tokens + 1))
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
    return LlmBenchResult(prefill_tok_s=o.prompt_tokens / p, decode_tok_s=o.new_tokens / d,
                          peak_rss_mb=peak_rss_mb(), load_s=load_s,
                          package_mb=os.path.getsize(path) / 1e6, prompt_tokens=o.prompt_tokens,
                          new_tokens=o.new_tokens, backend=o.backend,
                          decode_ms_per_token=1000 * d / o.new_tokens)
