"""Acceptance: which drafted nodes the target model agrees with.

Greedy: walk from the root; at each node the model's argmax is the next token, and the walk moves
to the child drafted with that token, if any.  The accepted tokens plus the final argmax ("bonus")
are exactly what plain greedy decoding would produce, one token per step.

Sampling: the multi-candidate rejection scheme for deterministic drafts (SpecInfer / Medusa's
"typical" baseline with point-mass proposals).  At a node with target distribution p and drafted
children x1..xk (in order): accept x1 with probability p(x1); if rejected, set p(x1) = 0, renormalise,
and try x2 with the new p; ... ; if every child is rejected, sample from the final residual.  Each
token leaves the node with probability exactly p(token), so the output distribution is the target's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.llm.sampling import Sampler
from edgert.llm.speculate.tree import DraftTree


@dataclass
class Verdict:
    path: list[int]            # accepted node indices, root first (the KV entries to keep)
    tokens: list[int]          # new tokens: the accepted drafted ones, then the bonus token
    carry: int | None = None   # accept_greedy_chain: a sibling drafted with the bonus token, if any

    @property
    def accepted(self) -> int:
        return len(self.path) - 1


def accept_greedy(tree: DraftTree, logits: np.ndarray) -> Verdict:
    """logits [tree.size, vocab], row i = the model's next-token logits after node i."""
    path, node = [0], 0
    tokens: list[int] = []
    while True:
        nxt = int(np.argmax(logits[node]))
        kid = next((k for k in tree.children(node) if tree.tokens[k - 1] == nxt), None)
        tokens.append(nxt)
        if kid is None:
            return Verdict(path, tokens)
        path.append(kid)
        node = kid


def accept_greedy_chain(tree: DraftTree, logits: np.ndarray, rows: np.ndarray | None = None,
                        chain: int | None = None) -> Verdict:
    """Greedy acceptance along the tree's first path only (DraftTree.chain_length): those nodes sit in
    consecutive cache slots, so on the int8 fast path their logits are bit-identical to plain decoding;
    a node on another branch attends in another slot order and its logits may differ slightly.  At
    the first mismatch the bonus token comes from an exact row; if a sibling there was drafted with
    it, its index is returned as `carry` (its row already holds the next prediction; nothing of it
    is kept).  `rows`: the node index of each logits row (None = every node, in order).  `chain`:
    how many nodes count as the first path (default DraftTree.chain_length(); an early-pruned tree
    passes the first path's surviving length, since a sibling moved up behind it is not exact)."""
    where = {int(n): i for i, n in enumerate(range(tree.size) if rows is None else rows)}
    chain = tree.chain_length() if chain is None else min(chain, tree.chain_length())
    node, tokens = 0, []
    while True:
        nxt = int(np.argmax(logits[where[node]]))
        tokens.append(nxt)
        if node < chain and tree.tokens[node] == nxt:      # node + 1 is the chain's next node
            node += 1
            continue
        carry = next((k for k in tree.children(node) if k > chain and tree.tokens[k - 1] == nxt), None)
        return Verdict(list(range(node + 1)), tokens, carry)


def residual_choice(p: np.ndarray, candidates: list[int], rng: np.random.Generator) -> tuple[int, int]:
    """One node's rejection step: (index into candidates of the accepted one, or -1; the token)."""
    p = np.asarray(p, dtype=np.float64).copy()
    for i, c in enumerate(candidates):
        total = p.sum()
        if total <= 0:
            break
        if rng.random() * total < p[c]:
            return i, int(c)
        p[c] = 0.0
    total = p.sum()
    if total <= 0:                          # every token with mass was drafted and rejected: impossible
        raise AssertionError("rejection sampling ran out of probability mass")
    return -1, int(rng.choice(p.size, p=p / total))


def accept_sampled(tree: DraftTree, logits: np.ndarray, sampler: Sampler) -> Verdict:
    path, node = [0], 0
    tokens: list[int] = []
    while True:
        kids = tree.children(node)
        p = sampler.distribution(logits[node])
        i, tok = residual_choice(p, [tree.tokens[k - 1] for k in kids], sampler.rng)
        tokens.append(tok)
        if i < 0:
            return Verdict(path, tokens)
        node = kids[i]
        path.append(node)
