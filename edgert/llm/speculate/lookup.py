"""Prompt-lookup drafting: no extra weights, good on input-grounded text (summaries, rewrites, code
edits).  The last n tokens of the context (n from `ngram_max` down to `ngram_min`) are searched for
earlier in the context; the tokens that followed each match (most recent first, up to `branches`
distinct continuations) become paths of the draft tree.

One path by default: on the int8 fast path a node's logits are bit-identical to plain decoding only
when it sits on the tree's first path (its ancestors in consecutive cache slots, as plain decoding
lays them out).  A node on a later branch attends over the same values in another slot order; the
~1e-7 float difference is amplified by the int8 rounding of activations downstream into logit
differences of up to ~0.8, which can change a greedy token at a near-tie."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.llm.speculate.tree import DraftTree


@dataclass
class LookupOptions:
    ngram_max: int = 3
    ngram_min: int = 2              # a lone repeated token predicts little (measured: more rejected drafts)
    max_depth: int = 6             # draft tokens per path
    branches: int = 1              # distinct continuations kept (>1: a tree; see the module note)


class PromptLookup:
    name = "lookup"

    def __init__(self, options: LookupOptions | None = None):
        self.o = options or LookupOptions()

    def draft(self, context: list[int], root: int, max_nodes: int) -> DraftTree:
        """A tree under `root` (the newest token, context[-1] == root) of at most max_nodes - 1 nodes."""
        tree = DraftTree(root)
        if max_nodes <= 1 or len(context) < 2:
            return tree
        ctx = np.asarray(context, dtype=np.int64)
        found: list[tuple[int, ...]] = []
        for n in range(min(self.o.ngram_max, len(ctx) - 1), self.o.ngram_min - 1, -1):
            tail = ctx[-n:]
            # start positions s < len - n with ctx[s:s+n] == tail, newest first
            win = np.lib.stride_tricks.sliding_window_view(ctx[:-1], n)
            hits = np.nonzero((win == tail).all(axis=1))[0][::-1]
            for s in hits:
                cont = tuple(int(t) for t in ctx[s + n:s + n + self.o.max_depth])
                if cont and cont not in found and not any(f[:len(cont)] == cont for f in found):
                    found.append(cont)
                if len(found) >= self.o.branches:
                    break
            if found:
                break
        for cont in found:
            room = max_nodes - tree.size
            if room <= 0:
                break
            tree.add_chain(cont[:room])
        return tree
