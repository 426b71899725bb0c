"""Medusa-style draft heads stored in an LLM package (numpy only; training is converters/llm_heads).

Head k (k = 1..K) guesses the token k+1 places after the last one the model has seen, from the
model's final-normed hidden state h (StepOutput.hidden):

    h_k = h + SiLU(h @ W_k + b_k)          W_k [hidden, hidden], b_k [hidden]
    logits_k = h_k @ E^T                   E = the tied token embedding [vocab, hidden]

(Medusa, Cai et al. 2024, arXiv 2401.10774, §2.1.1: one residual SiLU block per head; here the
vocab projection is the model's own tied embedding, not a new matrix, so a head with W_k = 0,
b_k = 0 is exactly the model's next-token head.)

Two EXTRA sections, covered by the package's hashes and signature like every other section:

  `llm/heads`      UTF-8 JSON (HEADS_FORMAT below): numbers, the tensor table, and `base_sha256`,
                   the digest of the model the heads were trained on (`base_model_digest`);
  `llm/heads.bin`  little-endian arrays at the offsets the table gives:
                   w_q     int8    [K, hidden_out, hidden_in]  W_k^T, symmetric per output channel
                   w_scale float16 [K, hidden_out]             W_k[i, o] = w_q[k, o, i] * w_scale[k, o]
                   b       float32 [K, hidden]

`read_heads` validates every field against the section sizes before any view is made.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgert import format as F
from edgert.errors import PackageError
from edgert.llm.config import LLM_GRAPH, LlmConfig

HEADS_SECTION = "llm/heads"
HEADS_BIN_SECTION = "llm/heads.bin"
HEADS_FORMAT = "edgert.medusa/1"
# The early-exit head (ProPD early pruning): the same block and storage, one head, on the final-normed
# residual stream after layer `after_layer` (OrtStep's "tap"), predicting the next token (t+1).
EARLY_SECTION = "llm/early_exit"
EARLY_BIN_SECTION = "llm/early_exit.bin"
EARLY_FORMAT = "edgert.early_exit/1"
KINDS = {"medusa": (HEADS_SECTION, HEADS_BIN_SECTION, HEADS_FORMAT),
         "early_exit": (EARLY_SECTION, EARLY_BIN_SECTION, EARLY_FORMAT)}
MAX_HEADS = 16
MAX_HEADS_JSON_BYTES = 1 << 20
HEADS_ALIGNMENT = 64               # offsets in llm/heads.bin (the format's own alignment)


def heads_tensor_table(n_heads: int, hidden: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every array in llm/heads.bin (the only layout this version reads)."""
    return {"w_q": ("int8", (n_heads, hidden, hidden)), "w_scale": ("float16", (n_heads, hidden)),
            "b": ("float32", (n_heads, hidden))}


def base_model_digest(pkg) -> str:
    """SHA-256 naming the model a package holds: its `llm` record (canonical JSON) and the stored
    SHA-256 of every weights section.  Re-encoding the weights (e.g. recompressing the package)
    changes it, so heads are only ever used with exactly the weights they were trained on."""
    g = pkg.graphs.get(LLM_GRAPH)
    if g is None or not isinstance(getattr(g, "metadata", None), dict) or "llm" not in g.metadata:
        raise PackageError(f"{pkg.path}: not an LLM package (no {LLM_GRAPH!r} graph with an llm record)")
    h = hashlib.sha256()
    h.update(json.dumps(g.metadata["llm"], sort_keys=True, separators=(",", ":"),
                        ensure_ascii=True).encode("ascii"))
    for s in pkg.sections:
        if s.kind == F.SectionKind.WEIGHTS:
            h.update(b"\0" + s.name.encode("ascii") + b"\0" + s.sha256.encode("ascii"))
    return h.hexdigest()


@dataclass
class DraftHeads:
    n_heads: int
    hidden: int
    w: np.ndarray                  # float32 [K, hidden_in, hidden_out] (dequantized)
    b: np.ndarray                  # float32 [K, hidden]
    # float32 [vocab, hidden], the tied token embedding, or a function that makes it: the numpy path
    # needs it dequantized (113 MB for SmolLM2), the ORT one (edgert.llm.heads_ort) never does
    _embedding: Any
    info: dict[str, Any]           # the llm/heads record (training report included)

    @property
    def embedding(self) -> np.ndarray:
        if callable(self._embedding):
            self._embedding = np.ascontiguousarray(self._embedding(), dtype=np.float32)
        return self._embedding

    @property
    def vocab_size(self) -> int:
        return int(self.info["vocab_size"])

    def states(self, hidden_row: np.ndarray) -> np.ndarray:
        """h_k for every head: float32 [K, hidden] from one final-normed hidden row [hidden]."""
        h = np.asarray(hidden_row, dtype=np.float32).reshape(self.hidden)
        z = np.einsum("i,kio->ko", h, self.w) + self.b
        return h[None, :] + z / (1.0 + np.exp(-z))

    def logits(self, hidden_row: np.ndarray) -> np.ndarray:
        """float32 [K, vocab]: head k's logits for the token k+1 places ahead."""
        return self.states(hidden_row) @ self.embedding.T

    def topk(self, hidden_row: np.ndarray, k: int) -> np.ndarray:
        """int64 [K, k]: each head's k best tokens, best first (ties: the smaller id first)."""
        lg = self.logits(hidden_row)
        k = max(1, min(int(k), lg.shape[1]))
        part = np.argpartition(-lg, k - 1, axis=1)[:, :k] if k < lg.shape[1] else \
            np.tile(np.arange(lg.shape[1]), (lg.shape[0], 1))
        vals = np.take_along_axis(lg, part, 1)
        order = np.lexsort((part, -vals), axis=1)
        return np.take_along_axis(part, order, 1).astype(np.int64)


def encode_heads(w: np.ndarray, b: np.ndarray, base_sha256: str, vocab_size: int,
                 report: dict[str, Any] | None = None, kind: str = "medusa",
                 after_layer: int | None = None) -> dict[str, bytes]:
    """Float heads (W [K, H_in, H_out], b [K, H]) -> {section name: bytes} for write_package.
    W is quantized to int8 per output channel with fp16 scales (the scale is rounded to fp16 first,
    so codes and scale agree exactly)."""
    w = np.asarray(w, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    k, hidden, hidden_out = w.shape
    if hidden != hidden_out or b.shape != (k, hidden) or not 1 <= k <= MAX_HEADS:
        raise PackageError(f"draft heads: W {list(w.shape)} and b {list(b.shape)} must be [K, H, H] and "
                           f"[K, H] with K in 1..{MAX_HEADS}")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise PackageError("draft heads: non-finite weights")
    wt = np.ascontiguousarray(w.transpose(0, 2, 1))            # [K, out, in]: one row per output channel
    amax = np.abs(wt).max(axis=2)
    scale16 = (amax / 127.0).astype(np.float16)
    scale = scale16.astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(wt / safe[:, :, None]), -127, 127).astype(np.int8)
    q[scale == 0] = 0
    arrays = {"w_q": q, "w_scale": scale16, "b": b}
    blob = bytearray()
    table = []
    for name, (dtype, shape) in heads_tensor_table(k, hidden).items():
        arr = np.ascontiguousarray(arrays[name], dtype=np.dtype(dtype).newbyteorder("<"))
        assert arr.shape == shape, (name, arr.shape, shape)
        blob += bytes(-len(blob) % HEADS_ALIGNMENT)
        table.append({"name": name, "dtype": dtype, "shape": list(shape), "offset": len(blob),
                      "nbytes": arr.nbytes})
        blob += arr.tobytes()
    section, bin_section, fmt = KINDS[kind]
    if kind == "early_exit" and (k != 1 or after_layer is None):
        raise PackageError("an early-exit head is one head with an after_layer")
    record = {"format": fmt, "n_heads": k, "hidden": hidden, "vocab_size": int(vocab_size),
              "block": "residual_silu", "projection": "tied_embedding",
              "predicts": [f"t+{i + 2}" for i in range(k)] if kind == "medusa" else ["t+1"],
              "quantization": {"w_q": "int8 symmetric per output channel (w_scale, fp16)"},
              "base_sha256": base_sha256, "tensors": table, "report": report or {}}
    if kind == "early_exit":
        record["after_layer"] = int(after_layer)
    text = json.dumps(record, allow_nan=False, sort_keys=True).encode("utf-8")
    return {section: text, bin_section: bytes(blob)}


def _int(rec: dict, key: str, lo: int, hi: int, where: str) -> int:
    v = rec.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise PackageError(f"{where}.{key} = {v!r} must be an int in {lo}..{hi}")
    return v


def decode_heads(record_bytes: bytes, blob: memoryview | bytes, config: LlmConfig, base_sha256: str,
                 where: str = HEADS_SECTION, kind: str = "medusa") -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Validate the two sections; returns (record, W float32 [K, H_in, H_out], b float32 [K, H])."""
    if len(record_bytes) > MAX_HEADS_JSON_BYTES:
        raise PackageError(f"{where}: {len(record_bytes)} bytes, over the cap {MAX_HEADS_JSON_BYTES}")
    try:
        rec = json.loads(bytes(record_bytes).decode("utf-8"),
                         parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"constant {c}")))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PackageError(f"{where}: not a JSON document ({e})") from None
    if not isinstance(rec, dict):
        raise PackageError(f"{where}: must be a JSON object")
    _, bin_section, fmt = KINDS[kind]
    if rec.get("format") != fmt:
        raise PackageError(f"{where}.format {rec.get('format')!r} is not {fmt!r}")
    if kind == "early_exit":
        _int(rec, "after_layer", 0, config.n_layers - 2, where)
        if rec.get("n_heads") != 1:
            raise PackageError(f"{where}.n_heads must be 1 for an early-exit head")
    if rec.get("block") != "residual_silu" or rec.get("projection") != "tied_embedding":
        raise PackageError(f"{where}: block {rec.get('block')!r} / projection {rec.get('projection')!r} "
                           "must be 'residual_silu' / 'tied_embedding'")
    k = _int(rec, "n_heads", 1, MAX_HEADS, where)
    hidden = _int(rec, "hidden", 1, 1 << 16, where)
    vocab = _int(rec, "vocab_size", 1, 1 << 20, where)
    if hidden != config.hidden or vocab != config.vocab_size:
        raise PackageError(f"{where}: heads for hidden {hidden} / vocab {vocab}, the model has "
                           f"{config.hidden} / {config.vocab_size}: draft heads were trained for another model")
    if not config.tied_embeddings:
        raise PackageError(f"{where}: draft heads project through the tied embedding; this model's is untied")
    base = rec.get("base_sha256")
    if not isinstance(base, str):
        raise PackageError(f"{where}.base_sha256 must be a hex string")
    if base != base_sha256:
        raise PackageError(f"{where}: draft heads were trained for another model (base_sha256 "
                           f"{base[:16]}... != this model's {base_sha256[:16]}...)")
    table = rec.get("tensors")
    want = heads_tensor_table(k, hidden)
    if not isinstance(table, list) or len(table) != len(want):
        raise PackageError(f"{where}.tensors must list exactly {', '.join(want)}")
    size = len(blob)
    views: dict[str, np.ndarray] = {}
    spans = []
    for i, t in enumerate(table):
        tw = f"{where}.tensors[{i}]"
        if not isinstance(t, dict) or set(t) != {"name", "dtype", "shape", "offset", "nbytes"}:
            raise PackageError(f"{tw}: needs exactly name, dtype, shape, offset, nbytes")
        name = t["name"]
        if name not in want or name in views:
            raise PackageError(f"{tw}.name {name!r} is unknown or repeated (want {', '.join(want)})")
        dtype, shape = want[name]
        if t["dtype"] != dtype or t["shape"] != list(shape):
            raise PackageError(f"{tw}: {name} must be {dtype} {list(shape)}, got {t['dtype']!r} {t['shape']!r}")
        off = _int(t, "offset", 0, size, tw)
        nbytes = _int(t, "nbytes", 0, size, tw)
        item = np.dtype(dtype).itemsize
        if nbytes != math.prod(shape) * item or off + nbytes > size or off % item:
            raise PackageError(f"{tw}: {name} at offset {off}, {nbytes} bytes does not fit "
                               f"{bin_section} ({size} bytes) as {dtype} {list(shape)}")
        spans.append((off, off + nbytes, name))
        views[name] = np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"), count=math.prod(shape),
                                    offset=off).reshape(shape)
    spans.sort()
    for (_, end, a), (start, _, b_) in zip(spans, spans[1:]):
        if start < end:
            raise PackageError(f"{where}.tensors: {a} and {b_} overlap")
    scale = views["w_scale"].astype(np.float32)
    b = views["b"].astype(np.float32)
    if not (np.isfinite(scale).all() and (scale >= 0).all() and np.isfinite(b).all()):
        raise PackageError(f"{where}: w_scale must be finite and >= 0 and b finite")
    if (views["w_q"] == -128).any():
        raise PackageError(f"{where}: w_q holds -128 (symmetric codes are -127..127)")
    w = (views["w_q"].astype(np.float32) * scale[:, :, None]).transpose(0, 2, 1)
    return rec, np.ascontiguousarray(w), b


def read_heads(source, config: LlmConfig | None = None, kind: str = "medusa") -> DraftHeads | None:
    """The draft heads (kind "medusa") or the early-exit head (kind "early_exit", one head; its
    layer is info["after_layer"]) of an LLM package, or None when it has none.

    `source`: a package path (read and verified here), an `LlmWeights` (read_llm / Llm.weights), or a
    `Package` read with ReadOptions(decode_packed=False).  Raises PackageError for a corrupt or
    hostile section and for heads trained for another model."""
    from edgert.llm.weights import LlmWeights, read_llm

    owned = None
    if isinstance(source, (str, os.PathLike)):
        source = owned = read_llm(source)
    try:
        if isinstance(source, LlmWeights):
            pkg, cfg = source._pkg, config or source.config
            if pkg is None:
                raise PackageError(f"{source.path}: the package is closed")
            emb = lambda: source.matrix("token_embd")  # noqa: E731
        else:
            pkg = source
            if config is None:
                g = pkg.graphs.get(LLM_GRAPH)
                if g is None or "llm" not in getattr(g, "metadata", {}):
                    raise PackageError(f"{pkg.path}: not an LLM package")
                config = LlmConfig.from_json(g.metadata["llm"], f"{pkg.path}: llm")
            cfg = config

            def emb() -> np.ndarray:
                from edgert.llm.weights import BlockQuant, _weight
                w = _weight("token_embd", cfg.weights["token_embd"], pkg.graphs[LLM_GRAPH], pkg.path)
                return w.dequantize() if isinstance(w, BlockQuant) else np.asarray(w, np.float32)
        names = pkg.extra_names()
        section, bin_section, _ = KINDS[kind]
        if section not in names:
            return None
        if bin_section not in names:
            raise PackageError(f"{pkg.path}: {section!r} without {bin_section!r}")
        rec, w, b = decode_heads(bytes(pkg.extra(section)), pkg.extra(bin_section), cfg,
                                 base_model_digest(pkg), f"{pkg.path}: {section}", kind)
        if owned is not None:      # the package closes below: dequantize now
            e = np.ascontiguousarray(emb(), dtype=np.float32)
        else:
            e = emb
        return DraftHeads(int(rec["n_heads"]), int(rec["hidden"]), w, b, e, rec)
    finally:
        if owned is not None:
            owned.close()
