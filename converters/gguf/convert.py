"""`convert_gguf(src, out, options) -> WriteReport`: a llama-architecture GGUF -> an edgert LLM package.

The package is the one edgert/llm/config.py describes: one graph `llm` with no nodes whose
initializers are the weights and whose metadata["llm"] is the LlmConfig record, plus the tokenizer
(a `tokenizers` JSON) and the chat template as extra sections.

Weights.  Without --wbits every tensor is carried over losslessly: Q4_0 / Q4_1 / Q8_0 blocks are
repacked (converters/gguf/quants.py), F32 / F16 tensors stored as they are, BF16 widened to F32.
Any other ggml type (K-quants, Q5_x, IQ...) is refused unless --wbits is given.  With --wbits N
every attn_* / ffn_* matrix is requantized from its dequantized values to N-bit asymmetric codes
per group of --group-size columns; token_embd (and an untied `output`) stays lossless unless
--embed-bits is given, or is requantized at 8 bits when its type cannot be repacked.

Q and K keep GGUF's row order: llama.cpp's converter permutes them for its interleaved ("NORM")
rope, and edgert's runtime applies that same rope to this layout.

Sections are stored uncompressed by default (WriteOptions.compress is one codec for the whole
file): uncompressed weight sections let the runtime use the codes as zero-copy views of the mapping.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgert.errors import ConversionError, PackageError
from edgert.ir import Graph, LayerInfo, WeightEncoding
from edgert.llm.config import ARCHITECTURES, CHAT_TEMPLATE_SECTION, LLM_GRAPH, MAX_CONTEXT, MAX_HIDDEN, \
    MAX_LAYERS, MAX_VOCAB, TOKENIZER_SECTION, BlockQuantSpec, FloatSpec, LlmConfig

if TYPE_CHECKING:
    from converters.package_writer import WriteReport

COMPRESS = ("none", "zstd")
EMBED_ROLES = ("token_embd", "output")
FALLBACK_EMBED_BITS = 8           # an embedding whose ggml type cannot be repacked, under --wbits


@dataclass
class GgufConvertOptions:
    wbits: int | None = None          # None: lossless repack; 1..8: requantize every attn_* / ffn_* matrix
    group_size: int = 32              # columns per scale / zero point when requantizing
    embed_bits: int | None = None     # None: token_embd / output lossless; 1..8: requantize them too
    zero_mode: str = "int"            # requantized groups: "int" = integer zero point at the code width,
                                      # "float" = fp16 minimum (Q4_1's form; 16 bits per group)
    compress: str = "none"            # "none" | "zstd" (whole file; "none" keeps the codes mappable)
    signing_key: bytes | None = None  # raw 32-byte Ed25519 private key
    progress: bool = False

    def validate(self) -> None:
        for name in ("wbits", "embed_bits"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 8):
                raise ConversionError(f"{name} must be 1..8 or None, got {v!r}")
        if self.zero_mode not in ("float", "int"):
            raise ConversionError(f"zero_mode must be 'float' or 'int', got {self.zero_mode!r}")
        g = self.group_size
        if not isinstance(g, int) or isinstance(g, bool) or not 8 <= g <= 4096 or g & (g - 1):
            raise ConversionError(f"group_size must be a power of two in 8..4096, got {g!r}")
        if self.compress not in COMPRESS:
            raise ConversionError(f"compress must be one of {', '.join(COMPRESS)}, got {self.compress!r}")


def convert_gguf(src: str | os.PathLike, out: str | os.PathLike,
                 options: GgufConvertOptions | None = None) -> WriteReport:
    """GGUF file -> LLM package at `out`; returns the writer's WriteReport."""
    from converters.gguf.reader import read_gguf
    from converters.gguf.tokenizer import build_tokenizer
    from converters.package_writer import WriteOptions, write_package

    opts = options or GgufConvertOptions()
    opts.validate()
    g = read_gguf(src)
    cfg = _config(g)
    tok = build_tokenizer(g)
    if tok.vocab_size != cfg.vocab_size:
        raise ConversionError(f"{g.path}: {cfg.arch}.vocab_size {cfg.vocab_size} != {tok.vocab_size} "
                              "tokens in tokenizer.ggml.tokens")
    cfg.bos_id, cfg.eos_id, cfg.eog_ids, cfg.add_bos = tok.bos_id, tok.eos_id, tok.eog_ids, tok.add_bos
    cfg.tied_embeddings = "output.weight" not in g.tensors
    plan = _plan(g, cfg, opts)

    graph = Graph(name=LLM_GRAPH, inputs=[], outputs=[], nodes=[], initializers={})
    roles = plan
    if opts.progress:
        try:
            from tqdm import tqdm
            roles = tqdm(plan, desc="converting", unit="tensor")
        except ImportError:             # tqdm comes with edgert[convert]; no bar without it
            pass
    for role in roles:
        _add_weight(graph, cfg, role, g.tensors[f"{role}.weight"], plan[role], opts.group_size, g.path,
                    opts.zero_mode)

    cfg.source = {"file": os.path.basename(g.path), "sha256": _sha256(g.path),
                  "file_type": g.metadata.get("general.file_type"),
                  "gguf_types": dict(Counter(t.type_name for t in g.tensors.values())),
                  "wbits": opts.wbits, "embed_bits": opts.embed_bits,
                  "group_size": opts.group_size if opts.wbits or opts.embed_bits else None}
    try:                                 # the record must read back as the runtime will read it
        LlmConfig.from_json(cfg.to_json(), f"{g.path}: llm")
    except PackageError as e:
        raise ConversionError(str(e)) from None
    graph.metadata = {"llm": cfg.to_json()}
    graph.initializers = _fusable_order(graph.initializers, cfg)
    extras = {TOKENIZER_SECTION: tok.json.encode("utf-8")}
    template = g.metadata.get("tokenizer.chat_template")
    if isinstance(template, str):
        extras[CHAT_TEMPLATE_SECTION] = template.encode("utf-8")
    return write_package(out, [graph], WriteOptions(compress=opts.compress, signing_key=opts.signing_key),
                         producer={"tool": "edgert convert (gguf)", "source": os.path.basename(g.path)},
                         extras=extras)


def _config(g) -> LlmConfig:
    """Architecture numbers from the GGUF keys (llama.cpp's LLM_KV names for `arch`)."""
    arch = g.architecture
    if arch not in ARCHITECTURES:
        raise ConversionError(f"{g.path}: architecture {arch!r} is not supported (known: "
                              f"{', '.join(ARCHITECTURES)})")
    if g.get_int(f"{arch}.expert_count", 0) > 0:
        raise ConversionError(f"{g.path}: {arch}.expert_count > 0: mixture-of-experts is not supported")
    scaling = g.get_str(f"{arch}.rope.scaling.type", "none")
    if scaling != "none" and not (scaling == "linear" and
                                  g.get_float(f"{arch}.rope.scaling.factor", 1.0) == 1.0):
        raise ConversionError(f"{g.path}: {arch}.rope.scaling.type = {scaling!r}: rope scaling is not "
                              "supported")
    hidden = g.get_int(f"{arch}.embedding_length")
    n_heads = g.get_int(f"{arch}.attention.head_count")
    n_kv = g.get_int(f"{arch}.attention.head_count_kv", n_heads)
    if hidden <= 0 or n_heads <= 0 or n_kv <= 0 or n_heads % n_kv:
        raise ConversionError(f"{g.path}: embedding_length {hidden}, head_count {n_heads}, head_count_kv "
                              f"{n_kv}: must be positive, head_count a multiple of head_count_kv")
    if hidden % n_heads and f"{arch}.attention.key_length" not in g.metadata:
        raise ConversionError(f"{g.path}: embedding_length {hidden} is not a multiple of head_count "
                              f"{n_heads}")
    head_dim = g.get_int(f"{arch}.attention.key_length", hidden // n_heads)
    if g.get_int(f"{arch}.attention.value_length", head_dim) != head_dim:
        raise ConversionError(f"{g.path}: attention.value_length != key_length is not supported")
    tokens = g.get_str_list("tokenizer.ggml.tokens")
    cfg = LlmConfig(arch=arch, n_layers=g.get_int(f"{arch}.block_count"), hidden=hidden,
                    ffn=g.get_int(f"{arch}.feed_forward_length"), n_heads=n_heads, n_kv_heads=n_kv,
                    head_dim=head_dim, vocab_size=g.get_int(f"{arch}.vocab_size", len(tokens)),
                    context_length=g.get_int(f"{arch}.context_length"),
                    rope_base=g.get_float(f"{arch}.rope.freq_base", 10000.0),
                    rope_dim=g.get_int(f"{arch}.rope.dimension_count", head_dim),
                    rms_eps=g.get_float(f"{arch}.attention.layer_norm_rms_epsilon"),
                    name=g.get_str("general.name", "")[:256])
    # the caps the runtime enforces on a package (edgert/llm/config.py), checked before any work
    for key, value, lo, hi in (("block_count", cfg.n_layers, 1, MAX_LAYERS),
                               ("embedding_length", cfg.hidden, 1, MAX_HIDDEN),
                               ("feed_forward_length", cfg.ffn, 1, 8 * MAX_HIDDEN),
                               ("attention.head_count", cfg.n_heads, 1, 4096),
                               ("head size", cfg.head_dim, 2, 4096),
                               ("vocab_size", cfg.vocab_size, 1, MAX_VOCAB),
                               ("context_length", cfg.context_length, 1, MAX_CONTEXT),
                               ("rope.dimension_count", cfg.rope_dim, 0, cfg.head_dim)):
        if not lo <= value <= hi:
            raise ConversionError(f"{g.path}: {arch}.{key} = {value} is outside {lo}..{hi}")
    if not 1.0 <= cfg.rope_base <= 1e12 or not 0.0 <= cfg.rms_eps <= 1.0:
        raise ConversionError(f"{g.path}: rope.freq_base {cfg.rope_base} must be in [1, 1e12] and "
                              f"layer_norm_rms_epsilon {cfg.rms_eps} in [0, 1]")
    if cfg.head_dim % 2 or cfg.rope_dim % 2:
        raise ConversionError(f"{g.path}: head size {cfg.head_dim} and rope.dimension_count {cfg.rope_dim} "
                              "must be even")
    return cfg


@dataclass
class _Plan:
    how: str                 # "float" | "repack" | "requant"
    bits: int | None = None


def _plan(g, cfg: LlmConfig, opts: GgufConvertOptions) -> dict[str, _Plan]:
    """What becomes of every tensor, decided (and every refusal raised) before any heavy work."""
    from converters.gguf.quants import BLOCK_TYPES, FLOAT_TYPES

    roles = cfg.required_roles()
    names = {f"{r}.weight": r for r in roles}
    unknown = [n for n in g.tensors if n not in names]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ConversionError(f"{g.path}: tensor {unknown[0]!r}{more} is not part of the {cfg.arch} "
                              "layout edgert runs")
    missing = [n for n in names if n not in g.tensors]
    if missing:
        raise ConversionError(f"{g.path}: tensor {missing[0]!r} is missing")
    plan: dict[str, _Plan] = {}
    for role in roles:
        t = g.tensors[f"{role}.weight"]
        want = cfg.expected_shape(role)
        if t.shape != want:
            raise ConversionError(f"{g.path}: tensor {t.name!r} has shape {list(t.shape)}, the "
                                  f"architecture numbers imply {list(want)}")
        if len(want) == 1:
            plan[role] = _Plan("float")
            continue
        bits = opts.embed_bits if role.rsplit(".", 1)[-1] in EMBED_ROLES else opts.wbits
        lossless = t.type_name in BLOCK_TYPES or t.type_name in FLOAT_TYPES
        if bits is None and not lossless:
            if opts.wbits is None:
                raise ConversionError(f"{g.path}: GGUF tensor {t.name} has type {t.type_name}; edgert "
                                      "repacks Q4_0/Q4_1/Q8_0/F16/BF16/F32 losslessly — pass --wbits N to "
                                      "requantize")
            bits = FALLBACK_EMBED_BITS
        if bits is not None and want[1] % opts.group_size:
            raise ConversionError(f"{g.path}: tensor {t.name} rows have {want[1]} columns, not a multiple of "
                                  f"group size {opts.group_size}")
        plan[role] = _Plan("requant", bits) if bits is not None else \
            _Plan("repack" if t.type_name in BLOCK_TYPES else "float")
    return plan


# Projections the runtime fuses (one MatMulNBits reads the same input): their codes are written back
# to back so the fused matrix is a zero-copy view of the file (docs/format.md §8).
FUSED_GROUPS = (("attn_q", "attn_k", "attn_v"), ("ffn_gate", "ffn_up"))


def _fusable_order(inits: dict, cfg: LlmConfig) -> dict:
    first: list[str] = []
    for i in range(cfg.n_layers):
        for group in FUSED_GROUPS:
            for r in group:
                spec = cfg.weights.get(f"blk.{i}.{r}")
                if isinstance(spec, BlockQuantSpec):
                    first.append(spec.codes)
    return {**{n: inits[n] for n in first}, **{n: a for n, a in inits.items() if n not in set(first)}}


def _add_weight(graph: Graph, cfg: LlmConfig, role: str, t, plan: _Plan, group_size: int, path: str,
                zero_mode: str = "int") -> None:
    from converters.gguf import quants

    name = t.name
    try:
        if plan.how == "float":
            if t.type_name in ("F32", "F16"):
                arr = quants.float_matrix(t.data, t.type_name, t.shape)
            else:                            # BF16 (widened) or a quantized norm
                arr = quants.dequantize(t.data, t.type_name, t.shape)
            graph.initializers[name] = arr
            cfg.weights[role] = FloatSpec(name, list(t.shape))
            if arr.ndim == 2:
                graph.layers.append(_layer(cfg, role, name, t, None, None, None, {"lossless": True}))
            return
        if plan.how == "repack":
            b = quants.repack(t.data, t.type_name, t.shape)
            sq, extra = None, {"lossless": True}
        else:
            ref = quants.dequantize(t.data, t.type_name, t.shape)
            fit = quants.requantize_min if zero_mode == "float" else quants.requantize
            b = fit(ref, plan.bits, group_size)
            sq, extra = quants.sqnr_db(ref, b.dequantize()), {"lossless": False}
    except ConversionError as e:
        raise ConversionError(f"{path}: tensor {name}: {e}") from None
    enc = WeightEncoding(b.bits, "asymmetric")
    codes, scale = f"{name}__q", f"{name}__scale"
    graph.initializers[codes], graph.encodings[codes] = b.codes, enc
    graph.initializers[scale] = b.scale
    mn = zero = None
    if b.min is not None:
        mn = f"{name}__min"
        graph.initializers[mn] = b.min
    if isinstance(b.zero, np.ndarray):
        zero = f"{name}__zero"
        graph.initializers[zero], graph.encodings[zero] = b.zero, enc
    rows, cols = b.codes.shape
    cfg.weights[role] = BlockQuantSpec(bits=b.bits, block=b.block, rows=rows, cols=cols, codes=codes,
                                       scale=scale, min=mn, zero=zero if zero is not None else int(b.zero),
                                       source_type=b.source_type)
    graph.layers.append(_layer(cfg, role, name, t, b.bits, b.block, sq, extra))


def _layer(cfg: LlmConfig, role: str, name: str, t, bits: int | None, block: int | None,
           sq: float | None, extra: dict) -> LayerInfo:
    # the token embedding is looked up (Gather) and, when tied, also the output projection
    op = ("Gather+MatMul" if cfg.tied_embeddings else "Gather") if role == "token_embd" else "MatMul"
    return LayerInfo(name=role, op=op, weight=name, wbits=bits, granularity="group" if block else None,
                     group_size=block, sqnr_db=sq, params=int(np.prod(t.shape)),
                     extra={"source_type": t.type_name, **extra})


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

