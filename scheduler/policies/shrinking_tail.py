"""`shrinking-tail`: latest frame wins, but idle when waiting for the next frame costs nothing.

Li et al., "Towards Streaming Perception" (ECCV 2020), §4: with runtime r ≥ 1 frame, if starting now
would finish in the same inter-frame interval as starting on the next frame would, the later start
gives an equally early but fresher output, so idle until the next frame.  Their rule τ(s + r) < τ(s)
(τ = fractional part in frame units) assumes frames arrive when they are queried; here frames become
available only once every camera has captured (trigger offsets), and the BEV lane may still be busy,
so the rule is applied literally: compare the first query time at or after each predicted finish.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.policies import register_policy
from scheduler.policies.base import Decision, Pending, Policy, Run, SchedulerView, Wait, newest_full_run


@register_policy
class ShrinkingTail(Policy):
    name = "shrinking-tail"

    @dataclass(frozen=True)
    class Options:
        min_runtime_frames: float = 1.0     # the rule applies from r ≥ 1 frame (ECCV 2020 §4)

    def __init__(self, options: "ShrinkingTail.Options"):
        self.options = options

    def decide(self, view: SchedulerView) -> Decision:
        run = newest_full_run(view)
        if not isinstance(run, Run):
            return run
        newest = next(p for p in view.pending if p.index == run.index)
        finish_now = view.predict_finish_us(newest, newest.cams, run.variant)
        if finish_now is None or finish_now - view.now_us < self.options.min_runtime_frames * view.period_us:
            return run
        if view.next_arrival_us is None and newest is view.pending[-1]:
            return run                                   # the stream has ended: nothing to wait for
        next_ready = self._next_complete_us(view, newest)
        later = Pending(-1, newest.t_us + view.period_us, (next_ready,) * len(newest.cam_ready_us))
        finish_wait = view.predict_finish_us(later, newest.cams, run.variant)
        assert finish_wait is not None                      # same stages and variant as finish_now

        def first_query_us(t_us: int) -> int:           # queries at the sample times t_k = t_0 + k·period
            return newest.t_us + math.ceil((t_us - newest.t_us) / view.period_us) * view.period_us

        if first_query_us(finish_wait) <= first_query_us(finish_now) and next_ready > view.now_us:
            return Wait(next_ready)
        return run

    @staticmethod
    def _next_complete_us(view: SchedulerView, newest: Pending) -> int:
        newer = [p for p in view.pending if p.index > newest.index]
        if newer:
            return newer[0].complete_at_us
        return max(view.now_us + 1, newest.complete_at_us + view.period_us)
