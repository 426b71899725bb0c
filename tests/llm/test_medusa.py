"""Token trees from draft heads: first-path acceptance and carry, the drafter's tree shapes, the
dynamic size policy, and tree speculation == plain greedy on every backend (the int8 fast path too)."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.llm.speculate.decoder import Budget
from edgert.llm.speculate.medusa import HeadsDrafter, HeadsDraftOptions
from edgert.llm.speculate.tree import DraftTree
from edgert.llm.speculate.verify import accept_greedy_chain


def _onehot(rows, vocab=10):
    lg = np.zeros((len(rows), vocab), np.float32)
    for i, t in enumerate(rows):
        lg[i, t] = 1.0
    return lg


def test_chain_acceptance_follows_the_first_path_only():
    t = DraftTree(root=1)
    t.add(2, 0)          # 1: chain
    t.add(3, 1)          # 2: chain
    t.add(7, 0)          # 3: sibling of node 1
    t.add(8, 1)          # 4: sibling of node 2
    assert t.chain_length() == 2
    # the model says 2 after the root, then 8 (a sibling): accept node 1, bonus 8, carry node 4
    v = accept_greedy_chain(t, _onehot([2, 8, 0, 0, 0]))
    assert v.path == [0, 1] and v.tokens == [2, 8] and v.carry == 4
    # a sibling is never walked into, even when the model agrees with its subtree
    v = accept_greedy_chain(t, _onehot([7, 5, 5, 9, 9]))
    assert v.path == [0] and v.tokens == [7] and v.carry == 3
    # whole chain accepted: bonus from the last chain row, no carry
    v = accept_greedy_chain(t, _onehot([2, 3, 6, 0, 0]))
    assert v.path == [0, 1, 2] and v.tokens == [2, 3, 6] and v.carry is None
    # logits for the chain rows only (what the decoder asks the step for)
    v = accept_greedy_chain(t, _onehot([2, 8, 0]), rows=np.arange(3))
    assert v.tokens == [2, 8] and v.carry == 4


class _FakeHeads:
    def __init__(self, k_heads=3, top_k=3):
        self.calls = 0
        self.k_heads, self.top_k = k_heads, top_k

    def __call__(self, hidden_row, rows):
        self.calls += 1
        base = 100 * np.asarray(rows)[:, None]
        return base + np.arange(self.top_k)[None, :], np.zeros((len(rows), self.top_k), np.float32)


def test_drafter_puts_the_chain_first_and_siblings_under_it():
    heads = _FakeHeads()
    d = HeadsDrafter(heads, n_heads=3, options=HeadsDraftOptions(top_k=3, prior_hit=(0.6, 0.3, 0.1)))
    d.start(np.zeros(4, np.float32))
    tree = d.draft([5, 6], root=6, max_nodes=8)              # everything the levels offer, capped
    assert tree.size == 8 and heads.calls == 1
    n = tree.chain_length()
    assert tree.tokens[:n] == [100, 200, 300][:n]             # heads 1..3, rank 0, one under the other
    for i in range(n, len(tree.tokens)):                      # siblings: a lower rank under a chain node
        depth = tree.depths()[i + 1]
        assert tree.parents[i] == depth - 1 and tree.tokens[i] % 100 != 0
        assert tree.tokens[i] // 100 == depth
    # the latency model wants no tree: nothing drafted and the heads not even run
    d.start(np.zeros(4, np.float32))
    assert d.draft([5, 6], 6, 8, values_to_nodes=lambda v: 1).size == 1 and heads.calls == 1
    # after a carry, the first level is the sibling row's own next-token top-k (row 0)
    d.start_carry(np.zeros(4, np.float32))
    tree = d.draft([5, 6], 6, 3, values_to_nodes=lambda v: 3)
    assert tree.tokens[0] == 0 and d.kinds[0] == "carry"


def test_hit_rates_follow_what_the_model_said():
    d = HeadsDrafter(_FakeHeads(), n_heads=3, options=HeadsDraftOptions(top_k=3, decay=0.5))
    d.start(np.zeros(4, np.float32))
    d.draft([1], 1, 8)
    for _ in range(6):
        d.observe([101, 200])               # head 1's rank 1 was right, then head 2's rank 0
    assert d.hits.get("h1")[1] > 0.9 and d.hits.get("h1")[0] < 0.1 and d.hits.get("h2")[0] > 0.9


def test_budget_drafts_only_when_a_tree_pays():
    b = Budget(max_nodes=8, decay=1.0)
    for n, t in ((1, 10.0), (2, 12.0), (4, 16.0), (8, 24.0)):   # t = 8 + 2 n
        for _ in range(3):
            b.observe_time(n, t)
    assert b.best_prefix([0.9, 0.8, 0.7, 0.1], step=0) == 4           # 3.4 / 16 beats 1 / 10 and 4.5 / 24
    assert b.best_prefix([0.9, 0.8, 0.7, 0.1], step=15) == 5          # every 16th step: one node more
    # nothing pays (1.1 / 12 < 1 / 10): plain steps, with a one-node probe after 16, then 32, ... plain steps
    picks = [b.best_prefix([0.1, 0.05, 0.02], step=i) for i in range(16 + 32 + 64)]
    assert [i for i, n in enumerate(picks) if n != 1] == [15, 15 + 32, 15 + 32 + 64]
    assert {picks[15], picks[47], picks[111]} == {2}


class OracleDrafter(HeadsDrafter):
    """Draft heads that know the plain greedy continuation: at each level the true token is rank 0
    with probability p0, rank 1 with p1, absent otherwise -- so steps accept some chain nodes, miss,
    and hit siblings (carry), exercising every path of the decoder."""

    def __init__(self, truth: list[int], vocab: int, seed: int, n_heads: int = 3, p0=0.5, p1=0.3):
        super().__init__(lambda h: None, n_heads, HeadsDraftOptions(top_k=3))
        self.truth, self.vocab = truth, vocab
        self.rng, self.p0, self.p1 = np.random.default_rng(seed), p0, p1
        self._ctx = 0

    def draft(self, context, root, max_nodes, values_to_nodes=None):
        self._ctx = len(context)
        return super().draft(context, root, max_nodes, values_to_nodes)

    def _levels(self, depth):
        if len(self.levels) < depth:
            rows = []
            for d in range(1, len(self.kinds) + 1):
                i = self._ctx - 1 + d
                true = self.truth[i] if i < len(self.truth) else 0
                wrong = [int(x) for x in self.rng.permutation(self.vocab)[:4] if x != true][:3]
                u = self.rng.random()
                cands = [true] + wrong[:2] if u < self.p0 else [wrong[0], true, wrong[1]] if u < self.p0 + self.p1 \
                    else wrong
                rows.append(np.array(cands))
            self.levels = list(zip(self.kinds, rows))
        return self.levels


def oracle_tree_generate(llm, prompt, n_new, truth, seed, adaptive=False, drafter=None, early=None):
    """Greedy generation with the oracle drafter through the real decoder loop (static trees)."""
    from edgert.llm.sampling import Sampler, SamplingOptions
    from edgert.llm.speculate.decoder import SpeculativeDecoder
    from edgert.llm.step import StepInput

    llm.reset()
    ids = np.asarray(prompt, np.int64)
    out = llm.step.run(StepInput(ids, logits_rows=np.array([ids.size - 1])))
    llm.cache.commit()
    sampler = Sampler(SamplingOptions())
    first = sampler.sample(out.logits[0])
    dec = SpeculativeDecoder(llm, drafter or OracleDrafter(truth, llm.config.vocab_size, seed), max_nodes=8,
                             adaptive=adaptive, early=early)
    got = []
    for t in dec.tokens(ids, first, sampler, out.hidden[-1]):
        got.append(t)
        if len(got) >= n_new:
            break
    return got, dec.stats


@pytest.mark.parametrize("backend,acc", [("numpy", 4), ("ort", 1), ("ort", 4)])
def test_tree_speculation_is_plain_greedy(tiny_llm_pkg, backend, acc):
    from edgert.llm import load_llm

    llm = load_llm(tiny_llm_pkg, backend=backend, accuracy_level=acc, max_seq=256, pad_attention=True)
    rng = np.random.default_rng(1)
    accepted = carried = 0
    for trial in range(4):
        prompt = rng.integers(3, 299, 10).tolist()
        plain = [t.id for t in llm.generate(prompt, 40) if t.id >= 0]
        got, st = oracle_tree_generate(llm, prompt, len(plain), prompt + plain, seed=trial)
        assert got == plain
        assert max(st.tree_sizes) == 8 and st.steps + sum(st.accepted_per_step) >= len(got) - 1
        accepted += sum(st.accepted_per_step)
        carried += st.carried
    assert accepted > 0 and carried > 0          # chain nodes accepted and siblings carried


@pytest.mark.slow
def test_tree_speculation_is_plain_greedy_on_smollm2(smollm2_pkg, greedy_golden):
    """The real model, the golden prompts, the int8 fast path, trees with siblings and carries."""
    from edgert.llm import load_llm

    llm = load_llm(smollm2_pkg, max_seq=512, pad_attention=True)
    golden = greedy_golden
    accepted = carried = 0
    for i, p in enumerate(golden["prompts"]):
        plain = [t.id for t in llm.generate(p["prompt_ids"], 40) if t.id >= 0]
        got, st = oracle_tree_generate(llm, p["prompt_ids"], len(plain), list(p["prompt_ids"]) + plain, seed=i)
        assert got == plain, p["name"]
        accepted += sum(st.accepted_per_step)
        carried += st.carried
    assert accepted > 0 and carried > 0


def test_prune_tree_cuts_subtrees_outside_the_early_top_k():
    from edgert.llm.speculate.prune import parents_with_children, prune_tree

    t = DraftTree(root=1)
    t.add(2, 0)          # 1
    t.add(3, 1)          # 2
    t.add(4, 2)          # 3
    t.add(7, 0)          # 4: sibling of 1
    t.add(8, 4)          # 5: under the sibling
    assert parents_with_children(t).tolist() == [0, 1, 2, 4]
    top = {0: np.array([2, 7]), 1: np.array([9]), 2: np.array([4]), 4: np.array([8])}
    keep, sub = prune_tree(t, top)
    assert keep.tolist() == [0, 1, 4, 5]          # node 2 cut (3 not in node 1's top-k), and with it 3
    assert sub.tokens == [2, 7, 8] and sub.parents == [0, 0, 2]
    assert sub.chain_length() == 1


def test_cache_commit_with_late_layers_at_other_slots():
    from edgert.llm.cache import KvCache

    c = KvCache(n_layers=4, n_kv_heads=1, head_dim=2, max_seq=16)
    c.begin(5)
    for i in range(4):
        c.k[i][0, 0, :5, 0] = np.arange(5) + 10 * i      # early layers: 5 nodes; late ones: 3 (compacted)
    c.commit([0, 2, 4], late=(2, [0, 1, 2]))
    assert c.length == 3
    assert c.k[0][0, 0, :3, 0].tolist() == [0, 2, 4] and c.k[1][0, 0, :3, 0].tolist() == [10, 12, 14]
    assert c.k[2][0, 0, :3, 0].tolist() == [20, 21, 22] and c.k[3][0, 0, :3, 0].tolist() == [30, 31, 32]


def test_split_step_is_the_whole_step(tiny_llm_pkg):
    """Two sessions (layers 0..e, e+1..) give bit-identical logits to the one-session step, plain
    and for a tree's first path after early pruning dropped nodes."""
    from edgert.llm import load_llm

    one = load_llm(tiny_llm_pkg, max_seq=128, pad_attention=True)
    two = load_llm(tiny_llm_pkg, max_seq=128, pad_attention=True, split_after=0)
    rng = np.random.default_rng(3)
    prompt = rng.integers(3, 299, 12).tolist()
    a = [t.id for t in one.generate(prompt, 24) if t.id >= 0]
    b = [t.id for t in two.generate(prompt, 24) if t.id >= 0]
    assert a == b
    np.testing.assert_array_equal(one.logits(prompt), two.logits(prompt))


@pytest.mark.parametrize("acc", [1, 4])
def test_early_pruned_tree_speculation_is_plain_greedy(tiny_llm_pkg, acc):
    """Pruned trees (random early top-k: most drafted nodes cut, some kept) still give exactly the
    plain greedy tokens, and the late layers' K/V land where later steps read them."""
    from edgert.llm import load_llm

    llm = load_llm(tiny_llm_pkg, max_seq=256, pad_attention=True, split_after=0, accuracy_level=acc)
    rng = np.random.default_rng(2)
    pruned = accepted = 0
    for trial in range(4):
        prompt = rng.integers(3, 299, 10).tolist()
        plain = [t.id for t in llm.generate(prompt, 40) if t.id >= 0]
        truth = prompt + plain
        drafter = OracleDrafter(truth, llm.config.vocab_size, seed=trial, p0=0.7, p1=0.2)
        keep_rng = np.random.default_rng(trial)

        def early(tap):   # random top-k rows, plus each drafted candidate with probability 0.8
            ids = []
            for _ in range(tap.shape[0]):
                row = [int(x) for x in keep_rng.integers(0, llm.config.vocab_size, 3)]
                ids.append(row)
            return _early_with_truth(drafter, np.array(ids), keep_rng)
        got, stats = oracle_tree_generate(llm, prompt, len(plain), truth, trial, drafter=drafter, early=early)
        assert got == plain
        pruned += stats.pruned_early
        accepted += sum(stats.accepted_per_step)
    assert pruned > 0 and accepted > 0


def _early_with_truth(drafter, ids, rng):
    """Add every level's drafted candidates to the early top-k rows with probability 0.8 each, so
    that pruning keeps some nodes (true ones among them) and cuts others."""
    extra = [int(c) for _, cands in drafter.levels for c in cands if rng.random() < 0.8]
    return [set(row.tolist()) | set(extra) for row in ids]
