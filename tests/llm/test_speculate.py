"""Speculative decoding pieces: the draft tree, greedy acceptance, the rejection scheme (it must leave
the target distribution unchanged), prompt lookup, and speculative greedy == plain greedy end to end
where the step's numerics do not depend on M (the numpy oracle; ORT with float activations)."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.llm.sampling import Sampler, SamplingOptions
from edgert.llm.speculate.lookup import LookupOptions, PromptLookup
from edgert.llm.speculate.tree import DraftTree
from edgert.llm.speculate.verify import accept_greedy, accept_sampled, residual_choice


def test_tree_mask_positions_and_trie():
    t = DraftTree(root=5)
    t.add_chain([7, 8, 9])
    t.add_chain([7, 3])                      # shares the 7
    assert t.tokens == [7, 8, 9, 3] and t.parents == [0, 1, 2, 1]
    assert t.depths().tolist() == [0, 1, 2, 3, 2]
    m = t.mask()
    assert m[4].tolist() == [True, True, False, False, True]    # 3 sees root, 7, itself
    assert m[3].tolist() == [True, True, True, True, False]
    assert not t.is_chain()


def test_accept_greedy_walks_the_argmax_path():
    t = DraftTree(root=0)
    t.add_chain([1, 2])                      # nodes 1, 2
    t.add_chain([3])                         # node 3 under the root
    logits = np.zeros((4, 6))
    logits[0, 3] = 1                         # after the root the model wants 3 -> node 3
    logits[3, 5] = 1                         # after 3 it wants 5 (not drafted): bonus
    v = accept_greedy(t, logits)
    assert v.path == [0, 3] and v.tokens == [3, 5] and v.accepted == 1
    logits = np.zeros((4, 6))
    logits[0, 1], logits[1, 2], logits[2, 4] = 1, 1, 1
    assert accept_greedy(t, logits).tokens == [1, 2, 4]


def test_rejection_scheme_preserves_the_target_distribution():
    """Several point-mass drafts at one node: the token that leaves the node is distributed as p."""
    rng = np.random.default_rng(0)
    p = np.array([0.05, 0.4, 0.1, 0.25, 0.2])
    n = 40000
    counts = np.zeros(5)
    for _ in range(n):
        _, tok = residual_choice(p, [1, 3], rng)
        counts[tok] += 1
    chi2 = float((((counts - n * p) ** 2) / (n * p)).sum())
    assert chi2 < 18.5                       # 4 degrees of freedom, p ~ 0.001


def test_sampled_acceptance_matches_plain_sampling_over_two_tokens():
    """A two-level tree: the joint law of the first two tokens equals sampling them one at a time."""
    vocab = 4
    rng = np.random.default_rng(1)
    first = rng.standard_normal(vocab)
    second = rng.standard_normal((vocab, vocab))          # next-token logits after each first token
    s = Sampler(SamplingOptions(temperature=1.0, seed=3))
    t = DraftTree(root=0)
    t.add_chain([2, 1])
    t.add_chain([0])
    # node logits: root -> first; node 1 (token 2) -> second[2]; node 2 (token 1) -> unused; node 3 (0)
    logits = np.stack([first, second[2], np.zeros(vocab), second[0]])
    n, joint = 30000, np.zeros((vocab, vocab))
    for _ in range(n):
        v = accept_sampled(t, logits, s)
        a = v.tokens[0]
        b = v.tokens[1] if len(v.tokens) > 1 else s.sample(second[a])
        joint[a, b] += 1
    pa = np.exp(first) / np.exp(first).sum()
    pb = np.exp(second) / np.exp(second).sum(1, keepdims=True)
    want = n * pa[:, None] * pb
    chi2 = float((((joint - want) ** 2) / want).sum())
    assert chi2 < 37.7                       # 15 degrees of freedom, p ~ 0.001


def test_prompt_lookup_drafts_what_followed_the_last_ngram():
    ctx = [1, 2, 3, 4, 5, 9, 1, 2, 3]
    tree = PromptLookup(LookupOptions(max_depth=3, branches=2)).draft(ctx, root=3, max_nodes=8)
    assert tree.tokens[:3] == [4, 5, 9]
    assert PromptLookup().draft([1, 2, 3], root=3, max_nodes=8).size == 1     # nothing to look up
    assert PromptLookup().draft(ctx, root=3, max_nodes=2).size == 2           # capped


@pytest.mark.parametrize("backend,acc", [("numpy", 4), ("ort", 1), ("ort", 4)])
def test_lookup_speculation_is_plain_greedy(tiny_llm_pkg, backend, acc):
    """ort at accuracy_level 4 (int8 activations) too: with pad_attention every step uses one
    attention kernel, so the tree step's rows are bit-identical to plain steps'."""
    from edgert.llm import load_llm

    llm = load_llm(tiny_llm_pkg, backend=backend, accuracy_level=acc, max_seq=256, pad_attention=True)
    rng = np.random.default_rng(0)
    accepted = 0
    for trial in range(3):
        base = rng.integers(3, 299, 12).tolist()
        prompt = base + base[:6] + base          # repeated text: lookup has something to draft
        plain = [t.id for t in llm.generate(prompt, 40) if t.id >= 0]
        spec = [t.id for t in llm.generate(prompt, 40, speculate="lookup") if t.id >= 0]
        assert spec == plain
        st = llm.spec.stats
        assert len(st.tree_sizes) == len(st.accepted_per_step) == st.steps
        assert st.steps + sum(st.accepted_per_step) >= len(spec) - 1  # each step: 1 + accepted tokens
        accepted += sum(st.accepted_per_step)
    assert accepted > 0                          # the drafts were used, not only plain steps


def test_tree_mode_without_heads_is_one_line(tiny_llm_pkg):
    from cli_helpers import assert_one_line_error, invoke

    assert_one_line_error(invoke("generate", tiny_llm_pkg, "x", "--speculate", "tree"), "draft heads")
    import json
    out = json.loads(invoke("generate", tiny_llm_pkg, "the the the the", "--speculate", "lookup",
                            "--max-tokens", 8, "--json").output)
    assert {"accepted_per_step", "tree_sizes", "pruned_early"} <= set(out)


@pytest.mark.slow
def test_lookup_speculation_is_plain_greedy_on_smollm2(smollm2_pkg, greedy_golden):
    """The real model on the golden prompts, int8 fast path: token-identical to plain greedy."""
    from edgert.llm import load_llm

    llm = load_llm(smollm2_pkg, max_seq=512, pad_attention=True)
    golden = greedy_golden
    accepted = 0
    for p in golden["prompts"]:
        plain = [t.id for t in llm.generate(p["prompt_ids"], 40) if t.id >= 0]
        spec = [t.id for t in llm.generate(p["prompt_ids"], 40, speculate="lookup") if t.id >= 0]
        assert spec == plain, p["name"]
        accepted += sum(llm.spec.stats.accepted_per_step)
    assert accepted > 0
