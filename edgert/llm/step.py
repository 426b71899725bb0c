"""The decoder step every backend implements: M new tokens in, logits and hidden states out.

Designed for token trees (speculative decoding): the M new tokens carry explicit rotary positions
and an explicit attention mask among themselves (a tree, not only a causal chain); every new token
always sees all committed cache entries.  The step writes the new tokens' K/V into the cache at
[cache.length, cache.length + M) and leaves `cache.commit(keep)` to the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgert.llm.cache import KvCache


@dataclass
class StepInput:
    ids: np.ndarray                       # int64 [M] token ids
    positions: np.ndarray | None = None   # int64 [M] rotary positions; None = length + arange(M)
    mask: np.ndarray | None = None        # bool [M, M], mask[i, j]: new token i sees new token j
                                          # (j <= i only; nodes ordered parents first); None = causal
    logits_rows: np.ndarray | None = None  # int64 indices into M whose logits are wanted; None = all

    def resolved(self, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        m = ids.size
        pos = np.arange(length, length + m, dtype=np.int64) if self.positions is None else \
            np.asarray(self.positions, dtype=np.int64).reshape(-1)
        rows = np.arange(m, dtype=np.int64) if self.logits_rows is None else \
            np.asarray(self.logits_rows, dtype=np.int64).reshape(-1)
        mask = None if self.mask is None else np.asarray(self.mask, dtype=bool)
        if pos.size != m or (mask is not None and mask.shape != (m, m)) or \
                (rows.size and (rows.min() < 0 or rows.max() >= m)):
            raise ValueError(f"step input: {m} ids, {pos.size} positions, mask "
                             f"{None if mask is None else mask.shape}, rows {rows.tolist()[:8]}")
        return ids, pos, mask, rows


@dataclass
class StepOutput:
    logits: np.ndarray                    # float32 [R, vocab] for the requested rows
    hidden: np.ndarray                    # float32 [M, hidden]: final-normed hidden states (draft heads)


class DecoderStep(Protocol):
    cache: KvCache
    name: str

    def run(self, inp: StepInput) -> StepOutput: ...
