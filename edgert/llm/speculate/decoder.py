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
from edgert.llm.speculate.prune import parents_with_children, prune_tree
from edgert.llm.speculate.verify import accept_greedy_chain, accept_sampled
from edgert.llm.step import StepInput


@dataclass
class SpecStats:
    steps: int = 0
    accepted_per_step: list[int] = field(default_factory=list)
    tree_sizes: list[int] = field(default_factory=list)
    pruned_early: int = 0
    carried: int = 0                       # steps whose bonus token was a drafted sibling (heads)

    @property
    def mean_accepted(self) -> float:
        return float(np.mean(self.accepted_per_step)) if self.accepted_per_step else 0.0


class Budget:
    """Online choice of the draft size (ProPD's dynamic tree size, for any drafter)."""

    def __init__(self, max_nodes: int, decay: float = 0.9):
        self.max_nodes, self.decay = max_nodes, decay
        self.samples: list[tuple[int, float, float]] = []     # (nodes, seconds, weight)
        self.hit = np.full(max_nodes, 0.3)                     # P(depth d accepted | depth d-1 accepted)
        self.draft_s = 0.0                                     # running cost of drafting a tree (heads)
        self.idle_steps, self.probe_every = 0, 16              # best_prefix's probing while plain pays
        self._fit: tuple[float, float] | None = None           # (a, b) of the last fit

    def observe_time(self, nodes: int, seconds: float) -> None:
        self.samples = [(n, s, w * self.decay) for n, s, w in self.samples[-63:]] + [(nodes, seconds, 1.0)]
        self._fit = None

    def observe_accept(self, drafted_depth: int, accepted: int) -> None:
        for d in range(min(drafted_depth, accepted + 1)):
            ok = 1.0 if d < accepted else 0.0
            self.hit[d] = 0.8 * self.hit[d] + 0.2 * ok

    def observe_draft(self, seconds: float) -> None:
        self.draft_s = seconds if not self.draft_s else 0.8 * self.draft_s + 0.2 * seconds

    def step_time(self, nodes: int) -> float:
        """Expected seconds of a step verifying `nodes` (root included), drafting included."""
        if self._fit is None:
            if len({n for n, _, _ in self.samples}) < 2:
                return float(nodes)                            # no fit yet: linear in nodes
            n, s, w = (np.array(v, dtype=np.float64) for v in zip(*self.samples))
            A = np.stack([np.ones_like(n), n], 1) * np.sqrt(w)[:, None]
            self._fit = tuple(np.linalg.lstsq(A, s * np.sqrt(w), rcond=None)[0])   # once per observed step
        a, b = self._fit
        return max(a + b * nodes, 1e-6) + (self.draft_s if nodes > 1 else 0.0)

    def best_prefix(self, values: list[float], step: int) -> int:
        """Nodes (root included) to draft from candidates whose values (expected accepted tokens
        each) are sorted best first: the prefix maximising (1 + sum of values) / step time.  Until two
        sizes have been timed it takes a plain step, then two nodes.  While trees pay, every 16th
        step tries one node more than the best; while none does, a one-node probe comes after 16 plain
        steps, then 32, ... up to 128, so hit rates keep being measured at little cost."""
        cap = min(len(values) + 1, self.max_nodes)
        sizes = {n for n, _, _ in self.samples}
        if len(sizes) < 2:                                    # time two sizes first: a plain step, then 2
            return 1 if 1 not in sizes else min(cap, 2)
        best, best_rate, expect = 1, 1.0 / self.step_time(1), 1.0
        for i, v in enumerate(values[:cap - 1]):
            expect += v
            rate = expect / self.step_time(i + 2)
            if rate > best_rate * 1.02:                       # a tree must beat plain by more than noise
                best, best_rate = i + 2, rate
        if best == 1:
            # nothing pays: probe one node more now and then, less often the longer that lasts
            self.idle_steps += 1
            if self.idle_steps >= self.probe_every:
                self.idle_steps, self.probe_every = 0, min(self.probe_every * 2, 128)
                return min(cap, 2)
            return 1
        self.probe_every = 16
        return min(cap, best + 1) if step % 16 == 15 else best

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
    def __init__(self, llm, drafter, max_nodes: int = 8, adaptive: bool = True, early=None):
        """early: ProPD early pruning, a function from tap rows [N, hidden] to the early-exit head's
        top-k ids [N, k] (llm.step must be split: OrtStep.run_early / run_late); None = off."""
        self.llm, self.drafter, self.max_nodes, self.adaptive = llm, drafter, max_nodes, adaptive
        self.early = early
        self.budget = Budget(max_nodes)
        self.stats = SpecStats()

    def tokens(self, ids: np.ndarray, first: int, sampler: Sampler,
               last_hidden: np.ndarray | None = None) -> Iterator[int]:
        """After the prompt's prefill has been committed and its first new token chosen (`first`),
        yield new tokens (the first one included) until the caller stops iterating.  `last_hidden`:
        the prefill's hidden row of the last prompt token (what a heads drafter starts from)."""
        llm, cache = self.llm, self.llm.cache
        context = [int(t) for t in ids] + [first]
        root = first
        greedy = sampler.options.greedy
        heads = hasattr(self.drafter, "start")
        if heads:
            self.drafter.start(last_hidden)
        yield first
        while True:
            room = llm.max_seq - cache.length
            if room <= 0:
                return
            st = self.stats
            if heads:
                choose = (lambda v: self.budget.best_prefix(v, st.steps)) if self.adaptive else None
                t_draft = time.perf_counter()
                tree = self.drafter.draft(context, root, min(self.max_nodes, room), choose)
                if tree.size > 1:
                    self.budget.observe_draft(time.perf_counter() - t_draft)
            else:
                want = self.budget.choose(self.drafter_depth(context), st.steps) if self.adaptive \
                    else self.max_nodes
                tree = self.drafter.draft(context, root, min(want, room))
            # greedy reads only the first path's logits: the lm head (the costliest part of a step on a
            # CPU) runs on those rows, not on every node
            rows = np.arange(tree.chain_length() + 1) if greedy else None
            inp = StepInput(tree.ids()) if tree.size == 1 else \
                StepInput(tree.ids(), positions=cache.length + tree.depths(), mask=tree.mask(), logits_rows=rows)
            t0 = time.perf_counter()
            if self.early is not None and tree.size > 1:
                out, verdict = self._pruned_step(tree, inp, greedy, sampler)
            else:
                out = llm.step.run(inp)
                verdict = accept_greedy_chain(tree, out.logits, rows) if greedy else \
                    accept_sampled(tree, out.logits, sampler)
                cache.commit(verdict.path)
            self.budget.observe_time(tree.size, time.perf_counter() - t0)
            if heads:
                self.drafter.observe(verdict.tokens, drafted=tree.size > 1)
                if verdict.carry is not None:
                    st.carried += 1
                    self.drafter.start_carry(out.hidden[verdict.carry])
                else:
                    self.drafter.start(out.hidden[verdict.path[-1]])
            else:
                depth = int(tree.depths().max()) if tree.size > 1 else 0
                if depth:
                    self.budget.observe_accept(depth, verdict.accepted)
            st.steps += 1
            st.accepted_per_step.append(verdict.accepted)
            st.tree_sizes.append(tree.size)
            for t in verdict.tokens:
                context.append(t)
                yield t
            root = verdict.tokens[-1]

    def _pruned_step(self, tree, inp: StepInput, greedy: bool, sampler):
        """Layers 0..e for every node, the early-exit head on every parent, the rest of the layers
        for the nodes that survive; acceptance on the surviving tree (its rows come back compacted,
        so the returned verdict's indices -- path, carry -- index `out.hidden`)."""
        step, cache = self.llm.step, self.llm.cache
        est = step.run_early(inp)
        par = parents_with_children(tree)
        top = self.early(est.tap[par])
        keep, sub = prune_tree(tree, {int(p): top[j] for j, p in enumerate(par)})
        self.stats.pruned_early += tree.size - keep.size
        chain = int(np.count_nonzero((keep >= 1) & (keep <= tree.chain_length())))
        rows = np.arange(chain + 1) if greedy else None
        out = step.run_late(est, keep, rows)
        verdict = accept_greedy_chain(sub, out.logits, rows, chain=chain) if greedy else \
            accept_sampled(sub, out.logits, sampler)
        cache.commit(keep[verdict.path], late=(step.split_after + 1, verdict.path))
        return out, verdict

    def drafter_depth(self, context: list[int]) -> int:
        """How deep a draft could go now (the drafter's own limit)."""
        return getattr(getattr(self.drafter, "o", None), "max_depth", self.max_nodes - 1)
