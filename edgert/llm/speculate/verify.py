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
