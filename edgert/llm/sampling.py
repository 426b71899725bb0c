"""Token sampling: greedy, temperature, top-k, top-p (nucleus).

`Sampler.distribution` is the single definition of "the distribution we sample from"; `sample`
draws from exactly that vector, and the speculative decoder's rejection sampling reads it too, so
the two can never disagree.  The order is the one of HF transformers' logits warpers: temperature,
then top-k, then top-p on the tempered softmax.  (llama.cpp's default chain applies temperature
last, so at temperature != 1 its top-p set can differ slightly.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgert.errors import InputError


@dataclass
class SamplingOptions:
    temperature: float = 0.0        # 0 = greedy (argmax)
    top_k: int = 0                  # 0 = off
    top_p: float = 1.0              # 1 = off; else keep the smallest top set whose mass reaches top_p
    seed: int | None = None         # None = fresh OS entropy

    def __post_init__(self) -> None:
        t, k, p, s = self.temperature, self.top_k, self.top_p, self.seed
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise InputError(f"temperature {t!r} must be a finite number >= 0 (0 = greedy)")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"top_k {k!r} must be an int >= 0 (0 = off)")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
            raise InputError(f"top_p {p!r} must be in (0, 1] (1 = off)")
        if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 0):
            raise InputError(f"seed {s!r} must be an int >= 0 or None")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


class Sampler:
    def __init__(self, options: SamplingOptions = SamplingOptions()):
        self.options = options
        self.rng = np.random.Generator(np.random.PCG64(options.seed))   # shared with rejection sampling

    def distribution(self, logits_row: np.ndarray) -> np.ndarray:
        """The probability vector `sample` draws from: float64 [vocab], sums to 1 (one-hot if greedy)."""
        z = np.asarray(logits_row, dtype=np.float64).reshape(-1)
        if z.size == 0 or np.isnan(z).any() or np.isposinf(z).any() or not np.isfinite(z).any():
            raise InputError(f"logits must be finite or -inf with at least one finite value "
                             f"({z.size} values)")
        o = self.options
        if o.greedy:
            p = np.zeros_like(z)
            p[int(np.argmax(z))] = 1.0
            return p
        z = z / o.temperature
        if 0 < o.top_k < z.size:
            # exactly top_k survive (ties at the boundary broken by index, as a stable sort would)
            order = np.argsort(-z, kind="stable")
            cut = np.full_like(z, -np.inf)
            cut[order[:o.top_k]] = z[order[:o.top_k]]
            z = cut
        p = np.exp(z - z.max())
        p /= p.sum()
        if o.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            mass = np.cumsum(p[order])
            # smallest prefix whose mass reaches top_p (the tolerance keeps float round-off from
            # adding one more token when the mass is top_p exactly)
            n = int(np.searchsorted(mass, o.top_p - 1e-12, side="left")) + 1
            keep = order[:min(n, p.size)]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        return p

    def sample(self, logits_row: np.ndarray) -> int:
        """One token id drawn from `distribution(logits_row)` (argmax, no draw, when greedy)."""
        p = self.distribution(logits_row)
        if self.options.greedy:
            return int(np.argmax(p))
        cdf = np.cumsum(p)
        i = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
        # never return a zero-probability token (u * total can land on a flat end of the cdf)
        i = min(i, p.size - 1)
        while p[i] == 0.0:
            i -= 1
        return i
