"""The LLM record of a package: architecture numbers, tokenizer facts and the weight table.

An LLM package is an ordinary model.pkg (docs/format.md §8) holding one graph named `llm` with no
nodes: its initializers are the weights (block-quantized codes bit-packed by the format's own
`asymmetric` encoding, fp16 scales / minimums, fp32 norms) and its metadata["llm"] is the JSON
object that `LlmConfig.to_json` writes.  The tokenizer (a `tokenizers` JSON document) and the chat
template live in EXTRA sections, covered by the same hashes and signature as everything else.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgert.errors import PackageError

LLM_GRAPH = "llm"                          # the graph holding an LLM's weights
TOKENIZER_SECTION = "llm/tokenizer"        # UTF-8 JSON accepted by tokenizers.Tokenizer.from_str
CHAT_TEMPLATE_SECTION = "llm/chat_template"  # UTF-8 jinja2 source (the GGUF's tokenizer.chat_template)
ARCHITECTURES = ("llama",)

# Caps on what a manifest may claim (a hostile package must not make the runtime allocate wildly).
MAX_LAYERS = 512
MAX_HIDDEN = 1 << 16
MAX_VOCAB = 1 << 20
MAX_CONTEXT = 1 << 20


@dataclass
class BlockQuantSpec:
    """One block-quantized matrix of shape (rows, cols) = (out features, in features), GGUF order.

    value[r, c] = scale[r, c // block] * (code[r, c] - zero[r, c // block]) + min[r, c // block]
    `codes` names a uint8 initializer stored with WeightEncoding(bits, "asymmetric"); `scale` and
    `min` name float16 [rows, cols // block] initializers (min None = absent, i.e. 0); `zero` is either
    an int (the same zero point everywhere, e.g. 128 for Q8_0) or the name of a uint8
    [rows, cols // block] initializer (asymmetric codes of the same bit width)."""
    bits: int
    block: int
    rows: int
    cols: int
    codes: str
    scale: str
    min: str | None = None
    zero: int | str = 0
    source_type: str = ""              # e.g. "Q4_1" (lossless repack) or "requant" (converter-made)


@dataclass
class FloatSpec:
    """A float tensor (norm weights, unquantized matrices) stored as float32 or float16."""
    tensor: str
    shape: list[int] = field(default_factory=list)


@dataclass
class LlmConfig:
    arch: str
    n_layers: int
    hidden: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    rope_base: float = 10000.0
    rope_dim: int = 0                  # 0 = head_dim
    rms_eps: float = 1e-5
    tied_embeddings: bool = True       # output projection = token embedding (no `output` weight)
    bos_id: int | None = None
    eos_id: int | None = None
    eog_ids: list[int] = field(default_factory=list)   # tokens that end generation (EOS, <|im_end|>, ...)
    add_bos: bool = False
    name: str = ""
    source: dict[str, Any] = field(default_factory=dict)   # provenance: GGUF file name, sha256, file_type
    # role -> spec.  Roles are GGUF tensor names without ".weight": "token_embd", "output_norm",
    # "output" (untied only), "blk.{i}.attn_norm|attn_q|attn_k|attn_v|attn_output|ffn_norm|ffn_gate|
    # ffn_up|ffn_down".
    weights: dict[str, BlockQuantSpec | FloatSpec] = field(default_factory=dict)

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def layer_roles(self) -> list[str]:
        return ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                "ffn_up", "ffn_down"]

    def required_roles(self) -> list[str]:
        roles = ["token_embd", "output_norm"] + ([] if self.tied_embeddings else ["output"])
        return roles + [f"blk.{i}.{r}" for i in range(self.n_layers) for r in self.layer_roles()]

    def expected_shape(self, role: str) -> tuple[int, ...]:
        """(rows, cols) of a matrix role, (n,) of a norm role."""
        h = self.hidden
        base = role.rsplit(".", 1)[-1]
        table = {"token_embd": (self.vocab_size, h), "output": (self.vocab_size, h), "output_norm": (h,),
                 "attn_norm": (h,), "ffn_norm": (h,), "attn_q": (self.q_dim, h), "attn_k": (self.kv_dim, h),
                 "attn_v": (self.kv_dim, h), "attn_output": (h, self.q_dim), "ffn_gate": (self.ffn, h),
                 "ffn_up": (self.ffn, h), "ffn_down": (h, self.ffn)}
        return table[base]

    # -- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["weights"] = {k: ({"kind": "blockq", **asdict(v)} if isinstance(v, BlockQuantSpec)
                            else {"kind": "float", **asdict(v)}) for k, v in self.weights.items()}
        return d

    @classmethod
    def from_json(cls, d: Any, where: str = "llm") -> "LlmConfig":
        """Parse and validate (every number range-checked; unknown keys rejected)."""
        if not isinstance(d, dict):
            raise PackageError(f"{where}: must be an object")
        known = {f for f in cls.__dataclass_fields__}
        extra = set(d) - known
        if extra:
            raise PackageError(f"{where}: unknown keys {sorted(extra)}")

        def num(key: str, lo: int, hi: int, required: bool = True) -> int:
            v = d.get(key)
            if v is None and not required:
                return 0
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise PackageError(f"{where}.{key} = {v!r} must be an int in {lo}..{hi}")
            return v

        def flt(key: str, default: float, lo: float, hi: float) -> float:
            v = d.get(key, default)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                    or not lo <= v <= hi:
                raise PackageError(f"{where}.{key} = {v!r} must be a finite number in [{lo}, {hi}]")
            return float(v)

        arch = d.get("arch")
        if arch not in ARCHITECTURES:
            raise PackageError(f"{where}.arch {arch!r} is not supported (known: {', '.join(ARCHITECTURES)})")
        cfg = cls(arch=arch, n_layers=num("n_layers", 1, MAX_LAYERS), hidden=num("hidden", 1, MAX_HIDDEN),
                  ffn=num("ffn", 1, 8 * MAX_HIDDEN), n_heads=num("n_heads", 1, 4096),
                  n_kv_heads=num("n_kv_heads", 1, 4096), head_dim=num("head_dim", 2, 4096),
                  vocab_size=num("vocab_size", 1, MAX_VOCAB),
                  context_length=num("context_length", 1, MAX_CONTEXT),
                  rope_base=flt("rope_base", 10000.0, 1.0, 1e12), rms_eps=flt("rms_eps", 1e-5, 0.0, 1.0))
        cfg.rope_dim = num("rope_dim", 0, cfg.head_dim, required=False)
        if cfg.rope_dim % 2:
            raise PackageError(f"{where}.rope_dim {cfg.rope_dim} must be even")
        if cfg.n_heads % cfg.n_kv_heads or cfg.head_dim % 2:
            raise PackageError(f"{where}: n_heads {cfg.n_heads} must be a multiple of n_kv_heads "
                               f"{cfg.n_kv_heads} and head_dim {cfg.head_dim} even")
        cfg.tied_embeddings = d.get("tied_embeddings", True)
        cfg.add_bos = d.get("add_bos", False)
        if not isinstance(cfg.tied_embeddings, bool) or not isinstance(cfg.add_bos, bool):
            raise PackageError(f"{where}: tied_embeddings / add_bos must be booleans")
        for key in ("bos_id", "eos_id"):
            v = d.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < cfg.vocab_size):
                raise PackageError(f"{where}.{key} = {v!r} is not a token id below {cfg.vocab_size}")
            setattr(cfg, key, v)
        eog = d.get("eog_ids", [])
        if not isinstance(eog, list) or len(eog) > 64 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < cfg.vocab_size for v in eog):
            raise PackageError(f"{where}.eog_ids must be a list of at most 64 token ids")
        cfg.eog_ids = list(eog)
        name = d.get("name", "")
        src = d.get("source", {})
        if not isinstance(name, str) or not isinstance(src, dict):
            raise PackageError(f"{where}: name must be a string and source an object")
        cfg.name, cfg.source = name[:256], src
        ws = d.get("weights")
        if not isinstance(ws, dict):
            raise PackageError(f"{where}.weights must be an object")
        for role, rec in ws.items():
            cfg.weights[role] = _spec_from_json(rec, f"{where}.weights[{role!r}]")
        missing = [r for r in cfg.required_roles() if r not in cfg.weights]
        if missing:
            raise PackageError(f"{where}.weights: missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        unknown = set(cfg.weights) - set(cfg.required_roles())
        if unknown:
            raise PackageError(f"{where}.weights: unknown roles {sorted(unknown)[:4]}")
        for role, spec in cfg.weights.items():
            want = cfg.expected_shape(role)
            got = (spec.rows, spec.cols) if isinstance(spec, BlockQuantSpec) else tuple(spec.shape)
            if got != want:
                raise PackageError(f"{where}.weights[{role!r}]: shape {list(got)} != {list(want)} "
                                   "implied by the architecture numbers")
        return cfg


def _spec_from_json(rec: Any, where: str) -> BlockQuantSpec | FloatSpec:
    if not isinstance(rec, dict):
        raise PackageError(f"{where}: must be an object")
    kind = rec.get("kind")
    body = {k: v for k, v in rec.items() if k != "kind"}
    if kind == "float":
        if set(body) - {"tensor", "shape"} or not isinstance(body.get("tensor"), str) or not isinstance(
                body.get("shape"), list) or not all(isinstance(x, int) and 0 < x <= MAX_VOCAB * 16
                                                    for x in body["shape"]):
            raise PackageError(f"{where}: a float record needs tensor (str) and shape (positive ints)")
        return FloatSpec(body["tensor"], list(body["shape"]))
    if kind != "blockq":
        raise PackageError(f"{where}.kind {kind!r} is not 'blockq' or 'float'")
    fields = BlockQuantSpec.__dataclass_fields__
    if set(body) - set(fields):
        raise PackageError(f"{where}: unknown keys {sorted(set(body) - set(fields))}")
    try:
        spec = BlockQuantSpec(**body)
    except TypeError as e:
        raise PackageError(f"{where}: {e}") from e
    ints = (spec.bits, spec.block, spec.rows, spec.cols)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in ints):
        raise PackageError(f"{where}: bits, block, rows, cols must be ints")
    if not 1 <= spec.bits <= 8 or spec.block < 8 or spec.block > 4096 or spec.block & (spec.block - 1):
        raise PackageError(f"{where}: bits {spec.bits} must be 1..8 and block {spec.block} a power of 2 in 8..4096")
    if not 0 < spec.rows <= MAX_VOCAB * 16 or not 0 < spec.cols <= MAX_VOCAB or spec.cols % spec.block:
        raise PackageError(f"{where}: shape ({spec.rows}, {spec.cols}) must be positive with cols a "
                           f"multiple of block {spec.block}")
    if not isinstance(spec.codes, str) or not isinstance(spec.scale, str) or not (
            spec.min is None or isinstance(spec.min, str)):
        raise PackageError(f"{where}: codes / scale / min must name tensors")
    z = spec.zero
    if isinstance(z, bool) or not (isinstance(z, str) or (isinstance(z, int) and 0 <= z < (1 << spec.bits))):
        raise PackageError(f"{where}.zero {z!r} must be a tensor name or an int in 0..{(1 << spec.bits) - 1}")
    if not isinstance(spec.source_type, str):
        raise PackageError(f"{where}.source_type must be a string")
    return spec
