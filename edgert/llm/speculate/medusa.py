"""Token trees from draft heads (Medusa-style heads, ProPD's dynamic tree size).

After each verify step the drafter runs the heads on one hidden row -- the last accepted node's --
and keeps, per draft depth, the heads' top-k candidates ("levels").  The tree it drafts is

  - a first path: the best candidate of every level, one under the other (nodes 1..D, the chain),
  - siblings: the lower-ranked candidates of a level, as children of the chain node above it,

chosen online: each candidate's value is its running probability of being the model's token (per
level and rank, counted from every verified step: ProPD's per-head top-k hit rates) times the
probability of the chain reaching it, and the decoder's latency model (t = a + b * nodes, fitted on
measured steps) picks how many of the most valuable nodes maximise expected tokens per second --
none at all (plain decoding) when no tree pays.

Greedy decoding accepts along the first path only (speculate.verify.accept_greedy_chain): on the int8
fast path those rows are bit-identical to plain decoding, a sibling's are not.  A sibling still pays:
when the model's token at the first mismatch is a drafted sibling ("carry"), that sibling's row has
already computed what comes next, so the next tree starts from the model's own prediction there
(the "carry" level, whose hit rate is near 1) instead of a head's guess.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.llm.speculate.tree import DraftTree

CARRY_GAIN = 0.6         # tokens a matched sibling is worth: a near-certain first draft next step


@dataclass
class HeadsDraftOptions:
    top_k: int = 3                  # candidates kept per level (rank 0 on the first path, the rest siblings)
    prior_hit: tuple[float, ...] = (0.3, 0.08, 0.04)   # hit-rate start values by rank (measured: head-1 top-1 0.30)
    decay: float = 0.95             # running hit rates: weight of the past per update


class HitRates:
    """Running P(candidate of rank r at a level of kind `kind` is the model's token | the chain reached
    the level above), per kind ("carry", "h1", "h2", ...)."""

    def __init__(self, o: HeadsDraftOptions):
        self.o = o
        self.rates: dict[str, np.ndarray] = {}

    def get(self, kind: str) -> np.ndarray:
        if kind not in self.rates:
            prior = np.array([self.o.prior_hit[min(r, len(self.o.prior_hit) - 1)] for r in range(self.o.top_k)])
            if kind == "carry":
                prior[0] = 0.9
            self.rates[kind] = prior
        return self.rates[kind]

    def update(self, kind: str, candidates: np.ndarray, truth: int) -> None:
        r = self.get(kind)
        hit = (np.asarray(candidates[:r.size]) == truth).astype(np.float64)
        if hit.size < r.size:
            hit = np.concatenate([hit, np.zeros(r.size - hit.size)])
        r *= self.o.decay
        r += (1 - self.o.decay) * hit


class HeadsDrafter:
    name = "tree"

    def __init__(self, heads_topk, n_heads: int, options: HeadsDraftOptions | None = None):
        """heads_topk(hidden_row, rows) -> (ids [R, k], values): output 0 the lm head, 1..K the heads
        (edgert.llm.heads_ort.OrtHeads.topk, or numpy_heads_topk)."""
        self.topk, self.n_heads = heads_topk, n_heads
        self.o = options or HeadsDraftOptions()
        self.hits = HitRates(self.o)
        self.levels: list[tuple[str, np.ndarray]] = []     # (kind, candidate ids best first), depth 1..
        self.kinds: list[str] = []
        self._row, self._carry = None, False

    # -- state between steps ---------------------------------------------------------------------
    # The heads run lazily, in draft(), only when the latency model wants a tree: a plain step pays
    # nothing for them.
    def start(self, hidden_row: np.ndarray) -> None:
        """Draft next from the hidden row of the newest committed token (its lm-head token is the root)."""
        self._row, self._carry, self.levels = hidden_row, False, []
        self.kinds = [f"h{k}" for k in range(1, self.n_heads + 1)]

    def start_carry(self, hidden_row: np.ndarray) -> None:
        """Draft next from a matched sibling's row: its own next-token top-k first, then its heads."""
        self._row, self._carry, self.levels = hidden_row, True, []
        self.kinds = ["carry"] + [f"h{k}" for k in range(1, self.n_heads + 1)]

    def _levels(self, depth: int) -> list[tuple[str, np.ndarray]]:
        """Candidates of levels 1..depth (the heads run for those only)."""
        if len(self.levels) < depth:
            want = [0 if kind == "carry" else int(kind[1:]) for kind in self.kinds[:depth]]
            ids, _ = self.topk(self._row, want)
            self.levels = list(zip(self.kinds[:depth], ids[:, :self.o.top_k]))
        return self.levels

    def observe(self, truths: list[int], drafted: bool = True) -> None:
        """The model's tokens at depths 1, 2, ... as far as the step made them known (the accepted
        chain tokens, then the bonus token): each level's candidates are scored against them."""
        if drafted and self.levels:
            for (kind, cands), t in zip(self.levels, truths):
                self.hits.update(kind, cands, t)

    # -- drafting ----------------------------------------------------------------------------------
    def candidates(self) -> list[tuple[float, int, int]]:
        """(value, depth, rank) of every node the levels offer, parents before children, best first."""
        out = []
        reach = 1.0
        for d, kind in enumerate(self.kinds, 1):
            rates = self.hits.get(kind)
            for r in range(1, rates.size):
                out.append((reach * rates[r] * CARRY_GAIN, d, r))
            reach *= rates[0]
            out.append((reach, d, 0))
        out.sort(key=lambda c: (-c[0], c[1], c[2]))
        return out

    def draft(self, context: list[int], root: int, max_nodes: int, values_to_nodes=None) -> DraftTree:
        """A tree under `root` of at most max_nodes nodes (root included).  `values_to_nodes(values)`
        (the decoder's latency model) says how many of the best candidates to draft; None = all."""
        cands = self.candidates()
        n = len(cands) if values_to_nodes is None else values_to_nodes([c[0] for c in cands]) - 1
        n = max(0, min(n, max_nodes - 1))
        chain_depth, sibs = 0, []
        for _, d, r in cands:
            if chain_depth + len(sibs) >= n:
                break
            if r == 0 and d == chain_depth + 1:
                chain_depth = d
            elif r > 0 and d <= chain_depth:
                sibs.append((d, r))
        tree = DraftTree(root)
        if chain_depth == 0:
            return tree
        levels = self._levels(chain_depth)
        for d in range(1, chain_depth + 1):
            tree.add(int(levels[d - 1][1][0]), d - 1)          # chain: node d under node d-1
        for d, r in sibs:
            tree.add(int(levels[d - 1][1][r]), d - 1)          # sibling of chain node d
        return tree


def numpy_heads_topk(heads, k: int):
    """The oracle's heads_topk: output 0 the lm head (h @ E^T), 1..K DraftHeads.logits, in numpy."""
    def topk(hidden_row, rows=None):
        h = np.asarray(hidden_row, np.float32).reshape(-1)
        lg = np.concatenate([(h @ heads.embedding.T)[None], heads.logits(h)], 0)
        if rows is not None:
            lg = lg[np.asarray(rows, np.int64)]
        ids = np.argsort(-lg, axis=1, kind="stable")[:, :k]
        return ids, np.take_along_axis(lg, ids, 1)
    return topk
