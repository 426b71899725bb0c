"""The KV cache: one K and one V buffer per layer, allocated once, written in place.

Layout [1, n_kv_heads, max_seq, head_dim] float32 (BNSH, what ORT's GroupQueryAttention reads and
writes when past and present share one buffer).  K is stored after rotary embedding.  A decoder step
writes the K/V of its M new tokens at slots [length, length + M) without advancing `length`; the
caller then `commit`s the entries it keeps: all of them for plain decoding (no copy), or the accepted
path of a token tree (those rows are moved down into place, the rest are left to be overwritten).
Buffers come from np.zeros (calloc), so pages are only resident once a position is written.
"""
from __future__ import annotations

import numpy as np

from edgert.errors import InputError


class KvCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, max_seq: int):
        self.n_layers, self.n_kv_heads, self.head_dim, self.max_seq = n_layers, n_kv_heads, head_dim, max_seq
        shape = (1, n_kv_heads, max_seq, head_dim)
        self.k = [np.zeros(shape, dtype=np.float32) for _ in range(n_layers)]
        self.v = [np.zeros(shape, dtype=np.float32) for _ in range(n_layers)]
        self.length = 0            # committed entries
        self.pending = 0           # entries written by the last step, not yet committed

    def check_room(self, m: int) -> None:
        if self.length + m > self.max_seq:
            raise InputError(f"context full: {self.length} cached + {m} new tokens > {self.max_seq} "
                             "(the model's context length, or --ctx)")

    def begin(self, m: int) -> None:
        """Called by a step before it writes m entries at [length, length + m)."""
        self.check_room(m)
        self.pending = m

    def commit(self, keep: np.ndarray | list[int] | None = None) -> None:
        """Keep pending entries `keep` (indices into the last step's new tokens, increasing), in
        that order, at slots length, length + 1, ...; None keeps all of them as they are."""
        if keep is None:
            self.length += self.pending
            self.pending = 0
            return
        keep = np.asarray(keep, dtype=np.int64)
        if keep.size and (keep.min() < 0 or keep.max() >= self.pending or (np.diff(keep) <= 0).any()):
            raise ValueError(f"keep {keep.tolist()} must be increasing indices below {self.pending}")
        L = self.length
        src = L + keep
        if not np.array_equal(src, np.arange(L, L + keep.size)):
            for buf in (*self.k, *self.v):
                buf[:, :, L:L + keep.size] = buf[:, :, src]
        self.length += int(keep.size)
        self.pending = 0

    def truncate(self, n: int) -> None:
        """Forget everything after the first n committed entries (rollback is free: slots are reused)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"truncate({n}) outside 0..{self.length}")
        self.length, self.pending = n, 0

    def reset(self) -> None:
        self.truncate(0)

    @property
    def nbytes(self) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.max_seq * self.head_dim * 4
