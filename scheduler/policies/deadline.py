"""`deadline`: meet every frame's deadline by degrading the work per frame, chosen from measured latencies.

Each time the backbone lane is free the policy takes the newest sample (older ones are dropped) and
walks a degradation ladder, best first, until the predicted finish — from the online latency model
(scheduler/latency.py), its conservative quantile by default, including the wait for the chosen
cameras' frames and for the BEV lane — is within the sample's `t_us + budget`:

  full      every camera, full variant
  reuse     refresh k < n cameras (at least `min_reuse_fraction` of them): the top-priority camera
            and then the least recently refreshed ones; the rest of the BEV comes from the previous
            BEV warped by ego motion (temporal fusion inside `fuse` does the warp)
  drop_cams refresh only the k highest-priority cameras (direction of travel first, scheduler/priority.py)
  small     each smaller variant: every camera, then fewer as in reuse and drop_cams
  forecast  no new output; consumers forecast the previous output to the query time (sAP's velocity update)
  skip      no new output and nothing to forecast

Cameras trigger one after another (nuScenes: 0 to 49 ms after the sweep), so a camera that captures
late may not leave time to process it; for each camera count the policy only considers cameras whose
frame arrives early enough for that count's predicted runtime, so rotation refreshes late cameras
whenever a cheaper configuration leaves room for them (RT-BEV's point about camera synchronisation).

A variant never measured is tried when its rung is reached (optimism: otherwise the model could never
learn its cost).  With `forecast` on, every output is also marked for forecasting to the query time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.policies import register_policy
from scheduler.policies.base import Decision, Pending, Policy, Run, Rung, SchedulerView, Skip

# Ordered by what the GroundTruthStages simulation shows each step costs in streaming accuracy: a
# smaller variant over every camera loses less than refreshing only the front ones.  Configurable.
DEFAULT_LADDER = (Rung.FULL, Rung.REUSE, Rung.SMALL, Rung.DROP_CAMS, Rung.FORECAST, Rung.SKIP)
_STAGES = ("backbone", "fuse", "heads")


@register_policy
class Deadline(Policy):
    name = "deadline"

    @dataclass(frozen=True)
    class Options:
        ladder: tuple[Rung, ...] = DEFAULT_LADDER
        min_reuse_fraction: float = 0.5     # reuse refreshes at least this share of the cameras
        conservative: bool = True           # plan with the latency model's upper quantile, not its mean
        margin_ms: float = 0.0              # extra slack kept before each deadline
        forecast: bool = True

    def __init__(self, options: "Deadline.Options"):
        self.options = options
        self.forecast_outputs = options.forecast

    def decide(self, view: SchedulerView) -> Decision:
        target = view.pending[-1]
        for run in self.candidates(view, target):
            if self._fits(view, target, run):
                return run
        if Rung.FORECAST in self.options.ladder and self.options.forecast and view.has_prev_output:
            return Skip(target.index, Rung.FORECAST)
        return Skip(target.index, Rung.SKIP)

    def candidates(self, view: SchedulerView, p: Pending) -> list[Run]:
        """The ladder's computing configurations for `p`, best first (not yet checked against the deadline)."""
        n = len(p.cams)
        k_reuse = max(1, math.ceil(n * self.options.min_reuse_fraction))
        full, smaller = view.variants[0], view.variants[1:]
        out: list[Run | None] = []
        for rung in self.options.ladder:
            if rung is Rung.FULL:
                out.append(Run(p.index, p.cams, full, rung))
            elif rung is Rung.REUSE:
                out += [self._rotation(view, p, full, k, rung) for k in range(n - 1, k_reuse - 1, -1)]
            elif rung is Rung.DROP_CAMS:
                out += [self._by_priority(view, p, full, k, rung) for k in range(k_reuse - 1, 0, -1)]
            elif rung is Rung.SMALL:
                for v in smaller:
                    out += [self._rotation(view, p, v, k, rung) for k in range(n, k_reuse - 1, -1)]
                    out += [self._by_priority(view, p, v, k, rung) for k in range(k_reuse - 1, 0, -1)]
        return [r for r in out if r is not None]

    def _fits(self, view: SchedulerView, p: Pending, run: Run) -> bool:
        if not view.latency.known("backbone", run.variant):
            return True                                  # never measured: try it once to learn it
        finish = view.predict_finish_us(p, run.cams, run.variant, self.options.conservative)
        return finish is not None and finish + self.options.margin_ms * 1000 <= p.t_us + view.budget_us

    def _in_time(self, view: SchedulerView, p: Pending, variant: str, k: int) -> list[int]:
        """`p`'s cameras, most important first, whose frames arrive early enough for a k-camera run."""
        ranked = [c for c in view.cam_priority if c in p.cams]
        costs = [view.latency.predict_ms(s, variant, k, self.options.conservative) for s in _STAGES]
        if not view.latency.known("backbone", variant) or any(c is None for c in costs):
            return ranked
        latest_ready_us = p.t_us + view.budget_us - self.options.margin_ms * 1000 - sum(costs) * 1000
        return [c for c in ranked if p.cam_ready_us[c] <= latest_ready_us]        # type: ignore[operator]

    def _by_priority(self, view: SchedulerView, p: Pending, variant: str, k: int, rung: Rung) -> Run | None:
        ok = self._in_time(view, p, variant, k)
        return Run(p.index, tuple(sorted(ok[:k])), variant, rung) if len(ok) >= k else None

    def _rotation(self, view: SchedulerView, p: Pending, variant: str, k: int, rung: Rung) -> Run | None:
        """The most important camera in time, then the least recently refreshed ones (never first)."""
        ok = self._in_time(view, p, variant, k)
        if len(ok) < k:
            return None
        head, rest = ok[:1], ok[1:]
        rest.sort(key=lambda c: (view.cam_refreshed[c] is not None, view.cam_refreshed[c] or 0, ok.index(c)))
        return Run(p.index, tuple(sorted(head + rest[:k - 1])), variant, rung)
