"""The exact bit allocator: choose one option per layer (a width, or keep float) minimising the sum of
the layers' errors subject to the sum of their bytes staying within a budget.

That is a multiple-choice knapsack.  It is solved exactly by dynamic programming over the budget in
`unit` bytes (each option's bytes rounded UP to whole units, so a solution never exceeds the true
budget): best[j] = least error of the layers so far within j units; one (layers x units x options)
sweep with numpy, and a back-pointer table (int8, layers x units) to recover the choices.  The unit is
budget / 2^18 but at least one byte: exact for budgets up to 256 KiB, and above that the rounding
costs at most one unit (budget / 262144, e.g. 2 B of a 0.5 MB budget) of slack per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.errors import ConversionError


@dataclass(frozen=True)
class Allocation:
    choice: list[int]            # per layer, the index of the chosen option
    error: float                 # the sum of the chosen options' errors (the prediction)
    bytes: int                   # the sum of their bytes (exact, not rounded)


def allocate(options: list[list[tuple[int, float]]], budget_bytes: int, units: int = 1 << 18) -> Allocation:
    """options[l] = [(bytes, error), ...] for layer l.  Raises ConversionError when even the smallest
    option of every layer does not fit."""
    if not options or any(not o for o in options) or any(len(o) > 127 for o in options):
        raise ConversionError("bit allocation needs 1..127 options per layer")
    smallest = sum(min(b for b, _ in o) for o in options)
    if smallest > budget_bytes:
        raise ConversionError(f"size budget {budget_bytes:,} B is below the smallest allocation "
                              f"({smallest:,} B with every layer at its narrowest width)")
    unit = max(1.0, budget_bytes / units)
    cap = int(budget_bytes // unit)
    inf = np.inf
    best = np.zeros(cap + 1)                     # no layers yet: error 0 at any budget
    back = np.zeros((len(options), cap + 1), np.int8)
    for li, opts in enumerate(options):
        new = np.full(cap + 1, inf)
        arg = np.zeros(cap + 1, np.int8)
        for oi, (b, err) in enumerate(opts):
            w = int(np.ceil(b / unit))
            if w > cap:
                continue
            cand = np.full(cap + 1, inf)
            cand[w:] = best[:cap + 1 - w] + err
            better = cand < new
            new[better], arg[better] = cand[better], oi
        best, back[li] = new, arg
    if not np.isfinite(best[cap]):
        # rounding up to units made the smallest allocation not fit: the budget is too tight for this unit
        raise ConversionError(f"size budget {budget_bytes:,} B leaves no room once layer sizes are rounded "
                              f"to {unit:.0f} B units; raise it slightly")
    j, choice = cap, []
    for li in range(len(options) - 1, -1, -1):
        oi = int(back[li, j])
        choice.append(oi)
        j -= int(np.ceil(options[li][oi][0] / unit))
    choice.reverse()
    return Allocation(choice, float(sum(options[li][oi][1] for li, oi in enumerate(choice))),
                      int(sum(options[li][oi][0] for li, oi in enumerate(choice))))
