"""`fifo`: every frame, in order, all cameras, full variant — the naive baseline.

When a frame costs more than a frame period the queue grows without bound and so does staleness;
that is the failure streaming perception (Li et al. ECCV 2020) measures, and what the others avoid.
"""
from __future__ import annotations

from dataclasses import dataclass

from scheduler.policies import register_policy
from scheduler.policies.base import Decision, Policy, Run, SchedulerView, wait_for_complete


@register_policy
class Fifo(Policy):
    name = "fifo"

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, options: "Fifo.Options"):
        self.options = options

    def decide(self, view: SchedulerView) -> Decision:
        oldest = view.pending[0]
        if oldest.complete_at_us > view.now_us:
            return wait_for_complete(view)
        return Run(oldest.index, oldest.cams, view.variants[0])
