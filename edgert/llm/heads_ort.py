"""Draft heads on ONNX Runtime: one small session from a hidden row to every head's top-k tokens.

The numpy heads (edgert.llm.heads.DraftHeads.topk) project K head states through the dequantized
float32 embedding: ~28 ms per call for SmolLM2 (4 x 49152 x 576) -- two decode steps' worth, so no
draft could pay for itself.  Here the K states go through the model's own 8-bit embedding codes as
one MatMulNBits of M = K rows (int8 activations, the lm head's fast path) and TopK runs in the same
session, so only [K, k] ids and values come back.  The head blocks themselves (K x 576 x 576) are
float MatMuls on the dequantized int8 weights.  ORT prepacks its own copy of the embedding codes
for this session (~28 MB for SmolLM2); it is built only when tree drafting is asked for.
"""
from __future__ import annotations

import numpy as np

from edgert.llm.heads import DraftHeads
from edgert.llm.ort_step import OrtStepOptions, _Builder, make_session
from edgert.llm.weights import LlmWeights


class OrtHeads:
    """topk(hidden_row, rows) -> (ids int64 [R, k], logits float32 [R, k]), best first, for the
    requested outputs: 0 is the model's own next-token head on that hidden row (the lm head, as the
    decoder step computes it), k = 1..K draft head k (the token k+1 places ahead).  One thread, no
    spinning: it runs between decoder steps, whose own workers keep both cores."""

    def __init__(self, weights: LlmWeights, heads: DraftHeads, k_max: int, threads: int = 1):
        c = weights.config
        self.n_heads, self.k_max = heads.n_heads, int(max(1, min(k_max, c.vocab_size)))
        opts = OrtStepOptions(threads=threads)
        bld = _Builder(opts)
        b = bld.b
        b.input("h", "float32", ["N", c.hidden])
        b.initializer("k", np.array([self.k_max], np.int64))
        states = ["h"]            # row 0: the model's own lm head on h (its next token)
        for i in range(heads.n_heads):
            z = bld.node("MatMul", ["h", bld.init(f"head{i}.w", heads.w[i])])[0]
            z = bld.node("Add", [z, bld.init(f"head{i}.b", heads.b[i])])[0]
            silu = bld.node("Mul", [z, bld.node("Sigmoid", [z])[0]])[0]
            states.append(bld.node("Add", ["h", silu])[0])
        hk = bld.node("Concat", states, axis=0)[0]              # [(K+1) N, H]: output k of row n at k N + n
        b.input("rows", "int64", ["R"])
        sel = bld.node("Gather", [hk, "rows"], axis=0)[0]      # only the rows a tree will use
        logits = bld.linear(sel, "lm_head", [weights["token_embd"]], c.hidden)
        bld.node("TopK", [logits, "k"], ["values", "ids"], axis=-1, largest=1, sorted=1)
        b.output("values", "float32", ["R", self.k_max])
        b.output("ids", "int64", ["R", self.k_max])
        self.session, self._spill = make_session(b.to_bytes(), bld.external, weights, opts, "the draft heads",
                                                   spin=False)

    def topk(self, hidden_row: np.ndarray, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """One hidden row; rows: which of the K+1 outputs (0 = lm head, k = head k); None = all."""
        h = np.ascontiguousarray(np.asarray(hidden_row, np.float32).reshape(1, -1))
        r = np.arange(self.n_heads + 1, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        vals, ids = self.session.run(["values", "ids"], {"h": h, "rows": r})
        return ids, vals

    def topk_rows(self, hidden: np.ndarray, head: int = 1) -> np.ndarray:
        """Output `head`'s top-k ids [N, k] for each of N hidden rows [N, hidden]."""
        h = np.ascontiguousarray(np.asarray(hidden, np.float32))
        n = h.shape[0]
        r = head * n + np.arange(n, dtype=np.int64)
        _, ids = self.session.run(["values", "ids"], {"h": h, "rows": r})
        return ids
