"""A draft token tree as one decoder step sees it.

Node 0 is the root: the last token already chosen but not yet in the KV cache.  Every other node is
a drafted token with a parent earlier in the list (parents before children), so the step's
attention mask is lower-triangular: node i sees the committed cache, the root and its ancestors.
Its rotary position is the cache length + its depth (root depth 0)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DraftTree:
    root: int                                   # token id of node 0
    tokens: list[int] = field(default_factory=list)    # drafted nodes 1..n
    parents: list[int] = field(default_factory=list)   # parent index of each drafted node (0 = root)

    def add(self, token: int, parent: int) -> int:
        """Append a node under `parent` (an existing node index); returns its index."""
        if not 0 <= parent <= len(self.tokens):
            raise ValueError(f"parent {parent} does not exist yet (nodes 0..{len(self.tokens)})")
        self.tokens.append(int(token))
        self.parents.append(int(parent))
        return len(self.tokens)

    def add_chain(self, tokens, parent: int = 0) -> None:
        """Add a path under `parent`, sharing nodes already there (the tree stays a trie)."""
        for t in tokens:
            kids = self.children(parent)
            same = [k for k in kids if self.tokens[k - 1] == int(t)]
            parent = same[0] if same else self.add(t, parent)

    @property
    def size(self) -> int:
        """Nodes in the step, root included."""
        return 1 + len(self.tokens)

    def ids(self) -> np.ndarray:
        return np.array([self.root] + self.tokens, dtype=np.int64)

    def parent_of(self, i: int) -> int:
        return -1 if i == 0 else self.parents[i - 1]

    def children(self, i: int) -> list[int]:
        return [j + 1 for j, p in enumerate(self.parents) if p == i]

    def depths(self) -> np.ndarray:
        d = np.zeros(self.size, dtype=np.int64)
        for i in range(1, self.size):
            d[i] = d[self.parents[i - 1]] + 1
        return d

    def mask(self) -> np.ndarray:
        """bool [size, size]: node i sees node j (j == i or j an ancestor of i)."""
        m = np.eye(self.size, dtype=bool)
        for i in range(1, self.size):
            m[i] |= m[self.parents[i - 1]]
        return m

    def chain_length(self) -> int:
        """Drafted nodes on the first path: nodes 1..n each under the one before (consecutive cache
        slots, as plain decoding lays them out)."""
        n = 0
        while n < len(self.parents) and self.parents[n] == n:
            n += 1
        return n

    def is_chain(self) -> bool:
        return all(p == i for i, p in enumerate(self.parents))
