"""The numpy oracle decoder step: a llama-architecture forward pass in plain float32 numpy.

Every fast step (ORT, CUDA, ...) is tested against this one, so it is written for clarity first and
speed second (a decode step of SmolLM2-135M is tens of ms: every matrix is dequantized once, and
the per-head work is batched matmuls, not Python loops).  The math follows llama.cpp's
`llm_build_llama` on GGUF-layout weights:

  x = token_embd[ids]
  per layer:  h = rms_norm(x) * attn_norm;  q, k, v = h @ Wq.T, h @ Wk.T, h @ Wv.T
              q, k = rope(q), rope(k)          (LLAMA_ROPE_TYPE_NORM: interleaved pairs, below)
              x += attention(q, [cache K; k], [cache V; v]) @ Wo.T
              h = rms_norm(x) * ffn_norm;  x += (silu(h @ Wg.T) * (h @ Wu.T)) @ Wd.T
  hidden = rms_norm(x) * output_norm;  logits = hidden @ (token_embd if tied else output).T
"""
from __future__ import annotations

import math

import numpy as np

from edgert.errors import InputError, UnsupportedOp
from edgert.llm.cache import KvCache
from edgert.llm.config import LlmConfig
from edgert.llm.step import StepInput, StepOutput
from edgert.llm.weights import LlmWeights


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w over the last axis (ggml_rms_norm, then ggml_mul)."""
    ms = np.mean(np.square(x), axis=-1, keepdims=True, dtype=np.float32)
    return (x * (1.0 / np.sqrt(ms + np.float32(eps)))) * w


def rope_tables(cfg: LlmConfig, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [M, rope_dim // 2]: angle(pos, i) = pos * base^(-2i / rope_dim), llama.cpp's
    theta_scale = powf(freq_base, -2.0f / n_dims) (ggml-cpu rope_f32, no YaRN / freq scaling)."""
    n_dims = cfg.rope_dim or cfg.head_dim
    inv_freq = cfg.rope_base ** (-np.arange(0, n_dims, 2, dtype=np.float64) / n_dims)
    ang = positions.astype(np.float64)[:, None] * inv_freq[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [M, heads, head_dim] with pairs (2i, 2i+1) of every head rotated by the angle of
    cos/sin[:, i] (LLAMA_ROPE_TYPE_NORM on GGUF's permuted Q/K layout); dims beyond rope_dim
    are copied unchanged.  Returns a new array."""
    half = cos.shape[1]
    out = x.copy()
    x0, x1 = x[..., 0:2 * half:2], x[..., 1:2 * half:2]
    c, s = cos[:, None, :], sin[:, None, :]
    out[..., 0:2 * half:2] = x0 * c - x1 * s
    out[..., 1:2 * half:2] = x0 * s + x1 * c
    return out


class NumpyStep:
    """DecoderStep (edgert.llm.step) in float32 numpy; the reference for every other backend."""
    name = "numpy"

    def __init__(self, weights: LlmWeights, cache: KvCache):
        cfg = weights.config
        if cfg.arch != "llama":
            raise UnsupportedOp(f"numpy step: architecture {cfg.arch!r} is not supported (known: llama)")
        if (cache.n_layers, cache.n_kv_heads, cache.head_dim) != (cfg.n_layers, cfg.n_kv_heads, cfg.head_dim):
            raise ValueError(f"cache ({cache.n_layers} layers, {cache.n_kv_heads} kv heads, head_dim "
                             f"{cache.head_dim}) does not fit the model ({cfg.n_layers}, {cfg.n_kv_heads}, "
                             f"{cfg.head_dim})")
        self.config, self.cache = cfg, cache
        self.embd = weights.matrix("token_embd")                       # [vocab, hidden]
        self.out = self.embd if cfg.tied_embeddings else weights.matrix("output")
        self.out_norm = weights.matrix("output_norm")
        self.layers = []
        for i in range(cfg.n_layers):
            m = lambda r: weights.matrix(f"blk.{i}.{r}")               # noqa: E731
            # Q, K, V in one matmul and gate, up in another: rows are output features (GGUF order)
            self.layers.append(dict(
                attn_norm=m("attn_norm"), wqkv=np.concatenate([m("attn_q"), m("attn_k"), m("attn_v")]),
                wo=m("attn_output"), ffn_norm=m("ffn_norm"),
                wgu=np.concatenate([m("ffn_gate"), m("ffn_up")]), wd=m("ffn_down")))

    def run(self, inp: StepInput) -> StepOutput:
        cfg, cache = self.config, self.cache
        L = cache.length
        ids, pos, mask, rows = inp.resolved(L)
        m = ids.size
        if m == 0:
            raise InputError("a decoder step needs at least one token")
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise InputError(f"token ids must be in 0..{cfg.vocab_size - 1}, got {ids.min()}..{ids.max()}")
        cache.begin(m)
        nh, nkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        group = nh // nkv
        t = L + m
        cos, sin = rope_tables(cfg, pos)
        # visible[i, j]: new token i attends to slot j (all committed slots, then the new tokens)
        visible = np.ones((m, t), dtype=bool)
        visible[:, L:] = np.tril(np.ones((m, m), dtype=bool)) if mask is None else mask
        bias = np.where(visible, np.float32(0.0), np.float32(-np.inf))
        scale = np.float32(1.0 / math.sqrt(hd))

        x = self.embd[ids]                                               # [M, hidden]
        for li, w in enumerate(self.layers):
            h = rms_norm(x, w["attn_norm"], cfg.rms_eps)
            qkv = h @ w["wqkv"].T
            q = apply_rope(qkv[:, :cfg.q_dim].reshape(m, nh, hd), cos, sin)
            k = apply_rope(qkv[:, cfg.q_dim:cfg.q_dim + cfg.kv_dim].reshape(m, nkv, hd), cos, sin)
            v = qkv[:, cfg.q_dim + cfg.kv_dim:].reshape(m, nkv, hd)
            kbuf, vbuf = cache.k[li][0], cache.v[li][0]                  # [nkv, max_seq, hd]
            kbuf[:, L:t] = k.transpose(1, 0, 2)
            vbuf[:, L:t] = v.transpose(1, 0, 2)
            # query head h reads kv head h // group: [nkv, group * M, hd] against [nkv, T, hd]
            qg = q.reshape(m, nkv, group, hd).transpose(1, 2, 0, 3).reshape(nkv, group * m, hd)
            s = (qg @ kbuf[:, :t].transpose(0, 2, 1)) * scale              # [nkv, group * M, T]
            s = s.reshape(nkv, group, m, t) + bias
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=-1, keepdims=True)
            o = s.reshape(nkv, group * m, t) @ vbuf[:, :t]                  # [nkv, group * M, hd]
            o = o.reshape(nkv, group, m, hd).transpose(2, 0, 1, 3).reshape(m, cfg.q_dim)
            x = x + o @ w["wo"].T
            h = rms_norm(x, w["ffn_norm"], cfg.rms_eps)
            gu = h @ w["wgu"].T
            g, u = gu[:, :cfg.ffn], gu[:, cfg.ffn:]
            # silu(g) = g * sigmoid(g), sigmoid via tanh so large |g| cannot overflow exp
            x = x + ((g * (0.5 + 0.5 * np.tanh(0.5 * g))) * u) @ w["wd"].T
        hidden = rms_norm(x, self.out_norm, cfg.rms_eps).astype(np.float32, copy=False)
        logits = hidden[rows] @ self.out.T
        return StepOutput(logits=np.ascontiguousarray(logits, dtype=np.float32), hidden=hidden)
