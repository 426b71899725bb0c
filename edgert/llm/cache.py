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

    def commit(self, keep: np.ndarray | list[int] | None = None,
               late: tuple[int, np.ndarray | list[int]] | None = None) -> None:
        """Keep pending entries `keep` (indices into the last step's new tokens, increasing), in
        that order, at slots length, length + 1, ...; None keeps all of them as they are.
        late = (layer, keep_late): layers from `layer` on hold the entries at other indices (an
        early-pruned step ran those layers on fewer nodes): keep_late are the same entries there."""
        if keep is None:
            self.length += self.pending
            self.pending = 0
            return
        keep = self._checked(keep)
        first = self.n_layers if late is None else int(late[0])
        self._move(keep, range(first))
        if late is not None:
            kl = self._checked(late[1])
            if kl.size != keep.size:
                raise ValueError(f"late keep {kl.tolist()} and keep {keep.tolist()} differ in length")
            self._move(kl, range(first, self.n_layers))
        self.length += int(keep.size)
        self.pending = 0

    def _checked(self, keep) -> np.ndarray:
        keep = np.asarray(keep, dtype=np.int64)
        if keep.size and (keep.min() < 0 or keep.max() >= self.pending or (np.diff(keep) <= 0).any()):
            raise ValueError(f"keep {keep.tolist()} must be increasing indices below {self.pending}")
        return keep

    def _move(self, keep: np.ndarray, layers) -> None:
        L = self.length
        src = L + keep
        if not np.array_equal(src, np.arange(L, L + keep.size)):
            for i in layers:
                for buf in (self.k[i], self.v[i]):
                    buf[:, :, L:L + keep.size] = buf[:, :, src]

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
