"""A tiny, deterministic llama-architecture GGUF for tests: real ggml blocks, a byte-level BPE vocabulary.

`write_tiny_llama_gguf(path, ...)` writes a file llama.cpp itself could load: the keys and tensor
names of convert_hf_to_gguf.py for a LlamaForCausalLM, quantized with gguf.quants.quantize (the
Python port of ggml-quants.c), a vocabulary of 3 control tokens + the 256 GPT-2 byte tokens + a few
merges + one user-defined token, and a ChatML chat template.  Weights are N(0, 0.05^2) (norms
1 + N(0, 0.05^2)), so activations stay sane through a few layers.  Takes ~50 ms.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")   # ids 0, 1, 2 (as in SmolLM2)
USER_DEFINED_TOKEN = "<tool_call>"                                  # the last id
MERGES = ("Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t", "e n", "Ġ w", "o r",
          "i s", "Ġ o", "e s", "a n", "Ġa n", "Ġan d", "l l", "Ġ h", "Ġ i", "o u", "Ġ c", "i t", "Ġ b",
          "Ġ f", "Ġ m", "e d", "in g", "Ġ p", "Ġ d", "Ġ l", "H e", "He ll", "Hell o", "Ġw or",
          "Ġwor l", "Ġworl d", "Ġ 1")
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                   "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
WEIGHT_STD = 0.05


def byte_tokens() -> list[str]:
    """GPT-2's bytes_to_unicode: byte b -> the printable character standing for it."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of the tiny tokenizer."""
    tokens = list(CONTROL_TOKENS) + byte_tokens()
    for m in MERGES:
        a, b = m.split(" ")
        assert a in tokens and b in tokens, m
        tokens.append(a + b)
    tokens.append(USER_DEFINED_TOKEN)
    types = [3] * len(CONTROL_TOKENS) + [1] * (len(tokens) - len(CONTROL_TOKENS) - 1) + [4]
    return tokens, types, list(MERGES)


def _quantized(w: np.ndarray, qtype: str):
    """(data, raw_dtype) for GGUFWriter.add_tensor: ggml blocks, or the float array itself."""
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import quantize

    t = GGMLQuantizationType[qtype]
    if qtype == "F32":
        return w.astype(np.float32), None
    if qtype == "F16":
        return w.astype(np.float16), None
    if qtype == "Q6_K":
        return _q6_k_blocks(w), t
    return quantize(w.astype(np.float32), t), t


def _q6_k_blocks(w: np.ndarray) -> np.ndarray:
    """Valid Q6_K blocks (gguf.quants has no Q6_K quantizer): ggml-common.h block_q6_K is ql[128],
    qh[64], int8 scales[16], fp16 d -- 210 bytes per 256 weights.  Random codes, values ~ WEIGHT_STD."""
    rows, cols = w.shape
    if cols % 256:
        raise ValueError(f"Q6_K needs rows of whole 256-weight blocks, got {cols}")
    n = rows * cols // 256
    rng = np.random.default_rng(int(abs(w).sum() * 1e6) % (1 << 32))
    blocks = np.empty((n, 210), dtype=np.uint8)
    blocks[:, :192] = rng.integers(0, 256, size=(n, 192), dtype=np.uint8)
    blocks[:, 192:208] = rng.integers(8, 17, size=(n, 16), dtype=np.int8).view(np.uint8)
    blocks[:, 208:210] = np.full((n, 1), WEIGHT_STD / 18 / 12, dtype=np.float16).view(np.uint8)
    return blocks.reshape(rows, cols // 256 * 210)


def write_tiny_llama_gguf(path: str | Path, *, n_layers: int = 2, hidden: int = 64, ffn: int = 128,
                          n_heads: int = 4, n_kv_heads: int = 2, qtype: str = "Q4_1",
                          embd_type: str = "Q8_0", norm_type: str = "F32", tied: bool = True,
                          seed: int = 0, context_length: int = 256, rope_base: float = 10000.0,
                          rms_eps: float = 1e-5, pre: str = "smollm",
                          chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """Write the tiny model; `qtype` is the ggml type of every attn_* / ffn_* matrix ("Q4_0",
    "Q4_1", "Q8_0", "F16", "F32", or "Q6_K", which edgert only requantizes)."""
    import gguf

    path = Path(path)
    tokens, types, merges = tiny_vocab()
    vocab = len(tokens)
    head_dim = hidden // n_heads
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * WEIGHT_STD).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + rng.standard_normal(hidden) * WEIGHT_STD).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(context_length)
    w.add_embedding_length(hidden)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_file_type(int(gguf.LlamaFileType[f"MOSTLY_{qtype}"]) if f"MOSTLY_{qtype}" in
                    gguf.LlamaFileType.__members__ else 0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    def add(name: str, arr: np.ndarray, t: str) -> None:
        data, raw_dtype = _quantized(arr, t) if arr.ndim == 2 else (arr.astype(np.float32), None)
        if raw_dtype is None and arr.ndim == 1 and t == "F16":
            data = arr.astype(np.float16)
        w.add_tensor(name, data, raw_dtype=raw_dtype)

    add("token_embd.weight", matrix(vocab, hidden), embd_type)
    q_dim, kv_dim = n_heads * head_dim, n_kv_heads * head_dim
    for i in range(n_layers):
        add(f"blk.{i}.attn_norm.weight", norm(), norm_type)
        add(f"blk.{i}.attn_q.weight", matrix(q_dim, hidden), qtype)
        add(f"blk.{i}.attn_k.weight", matrix(kv_dim, hidden), qtype)
        add(f"blk.{i}.attn_v.weight", matrix(kv_dim, hidden), qtype)
        add(f"blk.{i}.attn_output.weight", matrix(hidden, q_dim), qtype)
        add(f"blk.{i}.ffn_norm.weight", norm(), norm_type)
        add(f"blk.{i}.ffn_gate.weight", matrix(ffn, hidden), qtype)
        add(f"blk.{i}.ffn_up.weight", matrix(ffn, hidden), qtype)
        add(f"blk.{i}.ffn_down.weight", matrix(hidden, ffn), qtype)
    add("output_norm.weight", norm(), norm_type)
    if not tied:
        add("output.weight", matrix(vocab, hidden), embd_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
