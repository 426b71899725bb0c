"""ProPD's early pruning (Zhong et al. 2024, arXiv 2402.13485, §4.1): after the first layers of a
verify step, a drafted node whose token is not in its parent's early-exit top-k is cut, with its
subtree, before the remaining layers run.  The early-exit head (edgert.llm.heads, kind
"early_exit") reads the residual stream after layer e (OrtStep's `tap`, split_after = e)."""
from __future__ import annotations

import numpy as np

from edgert.llm.speculate.tree import DraftTree


def prune_tree(tree: DraftTree, parent_topk: dict[int, np.ndarray]) -> tuple[np.ndarray, DraftTree]:
    """(kept node indices, increasing from 0; the kept nodes as a tree of their own, same order).
    parent_topk[i]: the early-exit head's top-k token ids at node i (every node with children)."""
    kept = np.zeros(tree.size, dtype=bool)
    kept[0] = True
    for i in range(1, tree.size):
        p = tree.parents[i - 1]
        kept[i] = kept[p] and tree.tokens[i - 1] in parent_topk[p]
    idx = np.nonzero(kept)[0]
    where = {int(n): j for j, n in enumerate(idx)}
    sub = DraftTree(tree.root)
    for n in idx[1:]:
        sub.add(tree.tokens[n - 1], where[tree.parents[n - 1]])
    return idx, sub


def parents_with_children(tree: DraftTree) -> np.ndarray:
    return np.array(sorted(set(tree.parents)), dtype=np.int64)
