"""The speculative decode loop: draft a tree, verify it in one step, keep the accepted path.

Each step runs the root (the newest chosen token) plus the drafted nodes; the model's outputs at the
accepted nodes give the accepted tokens plus one more, so a step yields 1 + accepted tokens.  How
big a tree pays is decided online (`Budget`): a least-squares fit of step time against nodes
(t = a + b * nodes, exponentially weighted, refreshed from every measured step) and a running
acceptance rate per draft depth give the expected tokens per second of each candidate size; the
best one is drafted, and a size of 1 (plain decoding) is always a candidate, so a drafter that stops
paying is switched off instead of slowing the run down.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from edgert.llm.sampling import Sampler
from edgert.llm.speculate.verify import accept_greedy, accept_sampled
from edgert.llm.step import StepInput


@dataclass
class SpecStats:
    steps: int = 0
    accepted_per_step: list[int] = field(default_factory=list)
    tree_sizes: list[int] = field(default_factory=list)
    pruned_early: int = 0

    @property
    def mean_accepted(self) -> float:
        return float(np.mean(self.accepted_per_step)) if self.accepted_per_step else 0.0


class Budget:
    """Online choice of the draft size (ProPD's dynamic tree size, for any drafter)."""

    def __init__(self, max_nodes: int, decay: float = 0.9):
        self.max_nodes, self.decay = max_nodes, decay
        self.samples: list[tuple[int, float, float]] = []     # (nodes, seconds, weight)
        self.hit = np.full(max_nodes, 0.3)                     # P(depth d accepted | depth d-1 accepted)

    def observe_time(self, nodes: int, seconds: float) -> None:
        self.samples = [(n, s, w * self.decay) for n, s, w in self.samples[-63:]] + [(nodes, seconds, 1.0)]

    def observe_accept(self, drafted_depth: int, accepted: int) -> None:
        for d in range(min(drafted_depth, accepted + 1)):
            ok = 1.0 if d < accepted else 0.0
            self.hit[d] = 0.8 * self.hit[d] + 0.2 * ok

    def step_time(self, nodes: int) -> float:
        if len({n for n, _, _ in self.samples}) < 2:
            return float(nodes)                                # no fit yet: linear in nodes
        n, s, w = (np.array(v, dtype=np.float64) for v in zip(*self.samples))
        A = np.stack([np.ones_like(n), n], 1) * np.sqrt(w)[:, None]
        a, b = np.linalg.lstsq(A, s * np.sqrt(w), rcond=None)[0]
        return max(a + b * nodes, 1e-6)

    def choose(self, available_depth: int, step: int) -> int:
        """Nodes (root included, so 1 = plain) maximising expected tokens per second.  Until two tree
        sizes have been timed, and every 16th step after that, it explores with the full size."""
        if len({n for n, _, _ in self.samples}) < 2 or step % 16 == 15:
            return self.max_nodes
        best, best_rate = 1, 1.0 / self.step_time(1)
        expect = 1.0
        reach = 1.0
        for d in range(1, min(available_depth, self.max_nodes - 1) + 1):
            reach *= self.hit[d - 1]
            expect += reach
            rate = expect / self.step_time(d + 1)
            if rate > best_rate * 1.02:                       # a tree must beat plain by more than noise
                best, best_rate = d + 1, rate
        return best


class SpeculativeDecoder:
    def __init__(self, llm, drafter, max_nodes: int = 8, adaptive: bool = True):
        self.llm, self.drafter, self.max_nodes, self.adaptive = llm, drafter, max_nodes, adaptive
        self.budget = Budget(max_nodes)
        self.stats = SpecStats()

    def tokens(self, ids: np.ndarray, first: int, sampler: Sampler) -> Iterator[int]:
        """After the prompt's prefill has been committed and its first new token chosen (`first`),
        yield new tokens (the first one included) until the caller stops iterating."""
        llm, cache = self.llm, self.llm.cache
        context = [int(t) for t in ids] + [first]
        root = first
        yield first
        while True:
            room = llm.max_seq - cache.length
            if room <= 0:
                return
            if self.adaptive:
                want = self.budget.choose(self.drafter_depth(context), self.stats.steps)
            else:
                want = self.max_nodes
            tree = self.drafter.draft(context, root, min(want, room))
            t0 = time.perf_counter()
            out = llm.step.run(StepInput(tree.ids(), positions=cache.length + tree.depths(), mask=tree.mask()))
            self.budget.observe_time(tree.size, time.perf_counter() - t0)
            verdict = accept_greedy(tree, out.logits) if sampler.options.greedy else \
                accept_sampled(tree, out.logits, sampler)
            cache.commit(verdict.path)
            depth = int(tree.depths().max()) if tree.size > 1 else 0
            if depth:
                self.budget.observe_accept(depth, verdict.accepted)
            st = self.stats
            st.steps += 1
            st.accepted_per_step.append(verdict.accepted)
            st.tree_sizes.append(tree.size)
            for t in verdict.tokens:
                context.append(t)
                yield t
            root = verdict.tokens[-1]

    def drafter_depth(self, context: list[int]) -> int:
        """How deep a draft could go now (the drafter's own limit)."""
        return getattr(getattr(self.drafter, "o", None), "max_depth", self.max_nodes - 1)
