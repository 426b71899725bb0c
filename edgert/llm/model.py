"""`load_llm(path)` -> Llm: tokenizer + decoder step + KV cache, with generate / chat / logits /
perplexity.  The decode loop lives here; the step (edgert.llm.step) does one forward."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from edgert.errors import InputError
from edgert.llm.cache import KvCache
from edgert.llm.sampling import Sampler, SamplingOptions
from edgert.llm.step import StepInput
from edgert.llm.weights import LlmWeights, read_llm

BACKENDS = ("ort", "numpy")
SPECULATE = ("none", "lookup", "tree")
DEFAULT_MAX_SEQ = 4096          # KV slots allocated (lazily resident) unless LlmOptions.max_seq says


@dataclass
class LlmOptions:
    backend: str = "ort"                 # "ort" | "numpy" (the oracle)
    threads: int = 0                     # 0 = all cores
    max_seq: int | None = None           # KV cache slots; None = min(context length, DEFAULT_MAX_SEQ)
    accuracy_level: int = 4              # ort: MatMulNBits activation precision (4 = int8)
    # ort: one attention kernel for every M (OrtStepOptions.pad_attention), so speculative decoding's
    # verified drafts give exactly the tokens plain steps of the same session give; it costs about
    # 0.8 ms (~6%) per SmolLM2 decode step here, so it is on only when speculation is asked for
    pad_attention: bool = False
    # ort: run the step as two sessions split after this layer (ProPD early pruning; OrtStepOptions)
    split_after: int | None = None
    # ort: load the package's early-exit head, if it has one, and split the step after its layer, so
    # that `generate(speculate="tree")` prunes tree nodes early (ProPD)
    early_pruning: bool = False
    prune_top_k: int = 10                # a node survives if its token is in its parent's early top-k
    verify_hashes: bool = True
    require_signature: bool = False
    public_key: bytes | None = None


@dataclass
class GenerateOptions:
    max_tokens: int = 128
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    stop: Sequence[str] = ()             # stop strings (not included in the output)
    stop_at_eog: bool = True


@dataclass
class Token:
    id: int
    text: str                            # the text this token completes (may be "" mid-character)
    t_ns: int = 0                        # monotonic time it was produced


@dataclass
class GenerateStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    stop_reason: str = ""                # "eog" | "stop" | "length"

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tok_s(self) -> float:
        # the first new token comes from the prefill's logits; later ones from decode steps
        return (self.new_tokens - 1) / self.decode_s if self.decode_s and self.new_tokens > 1 else 0.0


@dataclass
class Perplexity:
    ppl: float
    nll_mean: float
    tokens: int                          # scored tokens (all but the first)


class Llm:
    def __init__(self, weights: LlmWeights, options: LlmOptions):
        from edgert.llm.tokenizer import Tokenizer

        self.weights, self.config, self.options = weights, weights.config, options
        c = self.config
        max_seq = options.max_seq or min(c.context_length, DEFAULT_MAX_SEQ)
        if not 1 <= max_seq <= c.context_length:
            raise InputError(f"max_seq {max_seq} must be in 1..{c.context_length} (the model's context length)")
        self.tokenizer = Tokenizer(weights.tokenizer_json, c)
        self._max_seq = max_seq
        # one spare slot: the ORT step's attention pad row is written one past the new tokens
        self.cache = KvCache(c.n_layers, c.n_kv_heads, c.head_dim, max_seq + 1)
        self._early_head = None
        split_after = options.split_after
        if options.early_pruning and options.backend == "ort":
            from edgert.llm.heads import read_heads
            self._early_head = read_heads(weights, kind="early_exit")
            if self._early_head is not None:
                split_after = int(self._early_head.info["after_layer"])
        if options.backend == "ort":
            from edgert.llm.ort_step import OrtStep, OrtStepOptions
            self.step = OrtStep(weights, self.cache, OrtStepOptions(threads=options.threads,
                                                                    accuracy_level=options.accuracy_level,
                                                                    pad_attention=options.pad_attention,
                                                                    split_after=split_after))
        elif options.backend == "numpy":
            from edgert.llm.numpy_step import NumpyStep
            self.step = NumpyStep(weights, self.cache)
        else:
            raise InputError(f"unknown LLM backend {options.backend!r} (known: {', '.join(BACKENDS)})")
        self.stats = GenerateStats()
        self.spec = None                 # the last generate's SpeculativeDecoder (its stats), if any
        self._chat = None
        self._heads_cache = None         # (heads top-k function, K) once --speculate tree has asked
        self._early_fn = None

    # -- basics ----------------------------------------------------------------------------------
    @property
    def max_seq(self) -> int:
        return self._max_seq

    def reset(self) -> None:
        self.cache.reset()

    def close(self) -> None:
        self.weights.close()

    def encode(self, text: str, special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, special=special)

    def _ids(self, prompt: str | Sequence[int], special: bool) -> np.ndarray:
        ids = self.tokenizer.encode(prompt, special=special) if isinstance(prompt, str) else list(prompt)
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if arr.size == 0:
            raise InputError("empty prompt (no tokens)")
        if arr.min() < 0 or arr.max() >= self.config.vocab_size:
            raise InputError(f"token id out of range 0..{self.config.vocab_size - 1}")
        return arr

    def logits(self, ids: Sequence[int], chunk: int = 512) -> np.ndarray:
        """Logits [len(ids), vocab] for every position, from a fresh context."""
        ids = self._ids(ids, False)
        if ids.size > self.max_seq:
            raise InputError(f"{ids.size} tokens exceed the context ({self.max_seq})")
        self.reset()
        out = []
        for s in range(0, ids.size, chunk):
            part = ids[s:s + chunk]
            out.append(self.step.run(StepInput(part)).logits)
            self.cache.commit()
        return np.concatenate(out, 0)

    def perplexity(self, ids: Sequence[int], chunk: int = 512) -> Perplexity:
        ids = self._ids(ids, False)
        if ids.size < 2:
            raise InputError("perplexity needs at least 2 tokens")
        lg = self.logits(ids, chunk).astype(np.float64)
        lg = lg[:-1]
        mx = lg.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(lg - mx).sum(axis=1))
        nll = lse - lg[np.arange(lg.shape[0]), ids[1:]]
        mean = float(nll.mean())
        return Perplexity(math.exp(mean), mean, int(nll.size))

    # -- generation -----------------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[int], max_tokens: int | None = None,
                 options: GenerateOptions | None = None, *, special: bool = False,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None, stop: Sequence[str] | None = None,
                 speculate: str = "none", max_nodes: int = 8, adaptive: bool = True,
                 prune: bool = True) -> Iterator[Token]:
        """Tokens of the continuation of `prompt` (text or ids), from a fresh context.  speculate:
        "lookup" (prompt n-grams) or "tree" (the package's draft heads) drafts up to max_nodes - 1
        tokens per step; adaptive (ProPD's dynamic tree size) picks how many each step, False always
        drafts max_nodes - 1 (a static tree).  prune: ProPD early pruning of tree nodes, when the model
        was loaded with LlmOptions(early_pruning=True) and the package has an early-exit head."""
        from edgert.llm.tokenizer import StreamDecoder

        o = options or GenerateOptions()
        s = o.sampling
        s = SamplingOptions(temperature=s.temperature if temperature is None else temperature,
                            top_k=s.top_k if top_k is None else top_k, top_p=s.top_p if top_p is None else top_p,
                            seed=s.seed if seed is None else seed)
        max_new = o.max_tokens if max_tokens is None else max_tokens
        stops = list(o.stop if stop is None else stop)
        if max_new < 0:
            raise InputError(f"max_tokens must be >= 0, got {max_new}")
        ids = self._ids(prompt, special)
        if ids.size >= self.max_seq:         # generation itself stops at the context ("context")
            raise InputError(f"prompt of {ids.size} tokens does not fit the context ({self.max_seq})")
        sampler = Sampler(s)
        if speculate not in SPECULATE:
            raise InputError(f"unknown --speculate mode {speculate!r} (known: {', '.join(SPECULATE)})")
        if speculate != "none":
            self._drafter(speculate)         # a package that cannot draft fails here, before any work
        if not 1 <= max_nodes <= 64:
            raise InputError(f"max_nodes must be in 1..64, got {max_nodes}")
        return self._generate(ids, max_new, sampler, stops, o.stop_at_eog, StreamDecoder(self.tokenizer),
                              speculate, max_nodes, adaptive, prune)

    def _plain_tokens(self, first: int, sampler: Sampler) -> Iterator[int]:
        tok = first
        while True:
            yield tok
            if self.cache.length + 1 > self.max_seq:
                return
            out = self.step.run(StepInput(np.array([tok], np.int64)))
            self.cache.commit()
            tok = sampler.sample(out.logits[0])

    def _generate(self, ids, max_new, sampler, stops, stop_at_eog, dec, speculate="none",
                  max_nodes=8, adaptive=True, prune=True) -> Iterator[Token]:
        st = self.stats = GenerateStats(prompt_tokens=int(ids.size))
        self.spec = None
        self.reset()
        if max_new == 0:
            st.stop_reason = "length"
            return
        t0 = time.perf_counter()
        out = self.step.run(StepInput(ids, logits_rows=np.array([ids.size - 1])))
        self.cache.commit()
        st.prefill_s = time.perf_counter() - t0
        first = sampler.sample(out.logits[0])
        if speculate == "none":
            source = self._plain_tokens(first, sampler)
        else:
            from edgert.llm.speculate.decoder import SpeculativeDecoder
            early = self._early_topk() if prune and speculate == "tree" else None
            self.spec = SpeculativeDecoder(self, self._drafter(speculate), max_nodes=max_nodes,
                                           adaptive=adaptive, early=early)
            source = self.spec.tokens(ids, first, sampler, out.hidden[-1])
        text, emitted = "", 0            # text so far; chars already handed out
        held = max((len(x) for x in stops), default=0)
        t1 = time.perf_counter()
        st.stop_reason = "context"
        try:
            for tok in source:
                st.new_tokens += 1
                if stop_at_eog and self.tokenizer.is_eog(tok):
                    st.stop_reason = "eog"
                    break
                text += dec.push(tok)
                hit = min((i for i in (text.find(x, max(0, emitted - len(x))) for x in stops) if i >= 0),
                          default=-1) if stops else -1
                if hit >= 0:
                    if hit > emitted:
                        yield Token(tok, text[emitted:hit], time.monotonic_ns())
                    st.stop_reason = "stop"
                    break
                # hold back a tail that could still become a stop string
                safe = len(text) - (held - 1 if held else 0)
                piece = text[emitted:safe] if safe > emitted else ""
                emitted += len(piece)
                yield Token(tok, piece, time.monotonic_ns())
                if st.new_tokens >= max_new:
                    st.stop_reason = "length"
                    break
            if st.stop_reason in ("length", "context", "eog"):
                rest = text + dec.flush()
                if len(rest) > emitted:
                    yield Token(-1, rest[emitted:], time.monotonic_ns())
        finally:
            st.decode_s = time.perf_counter() - t1

    def _drafter(self, speculate: str):
        if speculate == "lookup":
            from edgert.llm.speculate.lookup import PromptLookup
            return PromptLookup()
        if speculate == "tree":
            return self._heads_drafter()
        raise InputError(f"unknown --speculate mode {speculate!r} (known: {', '.join(SPECULATE)})")

    @property
    def early_pruning(self) -> bool:
        """Whether tree speculation can prune early (an early-exit head, and the step split for it)."""
        return self._early_head is not None and getattr(self.step, "split_after", None) is not None

    def _early_topk(self):
        if not self.early_pruning:
            return None
        if self._early_fn is None:
            from edgert.llm.heads_ort import OrtHeads
            heads = OrtHeads(self.weights, self._early_head, self.options.prune_top_k)
            self._early_fn = lambda tap: heads.topk_rows(tap, head=1)
        return self._early_fn

    def _heads_drafter(self):
        """The package's draft heads as a tree drafter (built once; raises for a package without
        heads, heads trained for another model, or a corrupt heads section)."""
        if self._heads_cache is None:
            from edgert.llm.heads import read_heads
            from edgert.llm.speculate.medusa import HeadsDraftOptions, numpy_heads_topk

            heads = read_heads(self.weights)
            if heads is None:
                raise InputError(f"{self.weights.path}: --speculate tree needs draft heads in the package, "
                                 "and this one has none (edgert train-heads adds them; prompt lookup needs "
                                 "none: --speculate lookup)")
            k = HeadsDraftOptions().top_k
            if self.options.backend == "ort":
                from edgert.llm.heads_ort import OrtHeads
                topk = OrtHeads(self.weights, heads, k, threads=1).topk
            else:
                topk = numpy_heads_topk(heads, k)
            self._heads_cache = (topk, heads.n_heads)
        from edgert.llm.speculate.medusa import HeadsDrafter

        topk, n = self._heads_cache
        return HeadsDrafter(topk, n)

    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        from edgert.llm.chat import ChatTemplate

        c, tok = self.config, self.tokenizer
        bos = tok.token_text(c.bos_id) if c.bos_id is not None else ""
        eos = tok.token_text(c.eos_id) if c.eos_id is not None else ""
        if self._chat is None:
            self._chat = ChatTemplate.for_package(self.weights.chat_template, bos, eos)
        return self._chat.render(messages, add_generation_prompt=add_generation_prompt)


def load_llm(path: str | os.PathLike, options: LlmOptions | None = None, **kwargs) -> Llm:
    opts = options or LlmOptions(**kwargs)
    w = read_llm(path, verify_hashes=opts.verify_hashes, require_signature=opts.require_signature,
                 public_key=opts.public_key)
    try:
        return Llm(w, opts)
    except BaseException:
        w.close()
        raise
