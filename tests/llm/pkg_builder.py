"""A small random llama LLM package written straight with the package writer (no GGUF involved).

Import as ``from pkg_builder import write_tiny_llm_package`` (tests/ and tests/llm are on sys.path
under pytest's default import mode).  The matrices are quantized like GGUF Q4_1 / Q8_1: per block of
`block` columns a float16 scale and minimum, codes in 0..2^bits-1, zero point 0."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgert.ir import Graph, WeightEncoding
from edgert.llm.config import (CHAT_TEMPLATE_SECTION, LLM_GRAPH, TOKENIZER_SECTION, BlockQuantSpec,
                               FloatSpec, LlmConfig)


def tiny_config(**kw) -> LlmConfig:
    base = dict(arch="llama", n_layers=2, hidden=64, ffn=96, n_heads=4, n_kv_heads=2, head_dim=16,
                vocab_size=80, context_length=128, rope_base=10000.0, rope_dim=0, rms_eps=1e-5,
                tied_embeddings=True, bos_id=1, eos_id=2, eog_ids=[2], name="tiny-llama")
    base.update(kw)
    return LlmConfig(**base)


def _quantize(w: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = w.shape
    b = w.reshape(rows, cols // block, block)
    lo, hi = b.min(axis=2), b.max(axis=2)
    scale = ((hi - lo) / ((1 << bits) - 1)).astype(np.float16)
    mn = lo.astype(np.float16)
    d = np.where(scale == 0, 1, scale.astype(np.float32))
    codes = np.clip(np.round((b - mn.astype(np.float32)[:, :, None]) / d[:, :, None]), 0, (1 << bits) - 1)
    return codes.reshape(rows, cols).astype(np.uint8), scale, mn


def write_tiny_llm_package(path: Path, cfg: LlmConfig | None = None, *, bits: int = 4, block: int = 32,
                           seed: int = 0, tokenizer_json: str = "{}",
                           chat_template: str | None = None) -> Path:
    """Random weights for `cfg` (default tiny_config()), quantized, written to `path`."""
    from converters.package_writer import WriteOptions, write_package

    cfg = cfg or tiny_config()
    cfg.weights = {}
    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {}
    encs: dict[str, WeightEncoding] = {}
    for role in cfg.required_roles():
        shape = cfg.expected_shape(role)
        if len(shape) == 1:
            inits[role] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            cfg.weights[role] = FloatSpec(role, list(shape))
            continue
        std = 0.25 if role in ("token_embd", "output") else 1.0 / np.sqrt(shape[1])
        w = (std * rng.standard_normal(shape)).astype(np.float32)
        codes, scale, mn = _quantize(w, bits, block)
        inits[f"{role}.codes"], inits[f"{role}.scale"], inits[f"{role}.min"] = codes, scale, mn
        encs[f"{role}.codes"] = WeightEncoding(bits, "asymmetric")
        cfg.weights[role] = BlockQuantSpec(bits, block, shape[0], shape[1], f"{role}.codes",
                                           f"{role}.scale", f"{role}.min", 0, "test")
    g = Graph(name=LLM_GRAPH, inputs=[], outputs=[], nodes=[], initializers=inits, encodings=encs,
              metadata={"llm": cfg.to_json()})
    extras = {TOKENIZER_SECTION: tokenizer_json.encode()}
    if chat_template is not None:
        extras[CHAT_TEMPLATE_SECTION] = chat_template.encode()
    write_package(path, [g], WriteOptions(zstd_level=1), extras=extras)
    return Path(path)
