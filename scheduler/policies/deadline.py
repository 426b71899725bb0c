"""`deadline`: meet every frame's deadline by degrading the work per frame, chosen for the best expected
streaming accuracy from measured latencies.

Each time the backbone lane is free the policy takes the newest sample (older ones are dropped) and
considers the configurations of a degradation ladder:

  full      every camera, full variant
  reuse     refresh k < n cameras: the top-priority camera and then the least recently refreshed
            ones; the rest of the BEV comes from the previous BEV warped by ego motion (temporal
            fusion inside `fuse` does the warp)
  drop_cams refresh only the k highest-priority cameras (direction of travel first, scheduler/priority.py)
  small     each smaller variant, on every camera or on fewer as in reuse and drop_cams
  forecast  no new output; consumers forecast the previous output to the query time (sAP's velocity update)
  skip      no new output and nothing to forecast

A configuration is feasible when its predicted finish — from the online latency model
(scheduler/latency.py), its conservative quantile by default, including the wait for the chosen
cameras' frames and for the BEV lane — is within its deadline: the budget counted from the capture
completion of the cameras it uses (SchedulerView.deadline_us; the rig's trigger spread is not the
model's to spend).  Among feasible configurations the policy takes the one with the highest expected
streaming accuracy (`expected_accuracy`), not the first rung that fits: which of "full on fewer
cameras" and "small on all" loses less depends on the model (how much the smaller variant loses) and
on the drive (how fast a reused sector goes stale), so both are estimated rather than ordered once.

Expected accuracy of an output is the mean over camera sectors of quality × freshness:
- quality: the offline accuracy of the variant that last refreshed the sector, relative to the full
  variant — declared by the stages (scheduler.stages.DeclaresQuality, measured when the model was
  built) or `Options.small_quality` — 0 for a sector never refreshed since a reset;
- freshness 1 / (1 + age / staleness_scale_ms), age the sector's staleness averaged over the queries
  the output will serve: from the first query at or after its predicted finish, for as many periods
  as its bottleneck stage keeps the next output away;
- for a reused sector, `warp_keep` per ego-motion warp it went through since its refresh: temporal
  fusion resamples it once per fused frame, and each resampling loses thin objects (one warp of a
  synthetic drive keeps ~0.75 of the mean IoU of a perfect grid, measured on world seed 3, not a
  benchmark seed; thin objects lose most, scheduler/metrics.py).  (The hyperbola's shape is a prior: on the
  synthetic world a perfect output keeps ~0.75 of its IoU one 12 Hz frame later and ~0.5 four later.)

It never starves: when no configuration is feasible, it still runs the one that finishes first on the
newest frame (a late output beats none, and the cheapest frees the lanes for the next frame to fit),
unless forecasting the previous output is predicted to score better; staleness stays bounded at
every speed factor.

A variant never measured is tried once when it is the best guess (optimism: otherwise the model could
never learn its cost).  With `forecast` on, every output is also marked for forecasting to the query
time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.policies import register_policy
from scheduler.policies.base import Decision, Pending, Policy, Run, Rung, SchedulerView, Skip

# Rungs allowed; the order only breaks ties in expected accuracy (best first).
DEFAULT_LADDER = (Rung.FULL, Rung.REUSE, Rung.DROP_CAMS, Rung.SMALL, Rung.FORECAST, Rung.SKIP)
_STAGES = ("backbone", "fuse", "heads")


@register_policy
class Deadline(Policy):
    name = "deadline"

    @dataclass(frozen=True)
    class Options:
        ladder: tuple[Rung, ...] = DEFAULT_LADDER
        conservative: bool = True           # check deadlines with the latency model's upper quantile
        margin_ms: float = 0.0              # extra slack kept before each deadline
        forecast: bool = True
        staleness_scale_ms: float = 250.0   # freshness 1 / (1 + age / scale): halved at this age
        small_quality: float = 0.7          # a smaller variant's relative accuracy when the stages declare none
        warp_keep: float = 0.75             # accuracy a reused sector keeps per extra ego-motion warp
        probe_samples: int = 1              # fewer fuse measurements than this past start-up: the cost is a guess
        reprobe_after: int = 180            # observations (3 per output, ~5 s at 12 Hz) after which a cost is stale

    def __init__(self, options: "Deadline.Options"):
        self.options = options
        self.forecast_outputs = options.forecast

    def decide(self, view: SchedulerView) -> Decision:
        target = view.pending[-1]
        runs = self.candidates(view, target)
        if not runs:
            return self._no_output(view, target)
        full = runs[0] if runs[0].rung is Rung.FULL else None
        if not view.latency.known("backbone", view.variants[0]):
            return full or runs[0]                           # nothing measured yet: learn the full cost
        # a variant measured only at start-up (scheduler/latency.py: warmup) is as good as untried:
        # its one figure includes one-off costs
        untried = [r for r in runs if view.latency.samples("backbone", r.variant) <= view.latency.options.warmup]
        scored = [(self.expected_accuracy(view, target, r), -i, r) for i, r in enumerate(runs)
                  if view.latency.known("backbone", r.variant)]
        feasible = [x for x in scored if self._fits(view, target, x[2])]
        if full is not None and not any(r is full for _, _, r in feasible) and self._should_probe(view, target, full):
            return full
        if feasible:
            return max(feasible)[2]
        if untried:
            return untried[0]                                # nothing known fits: maybe the unknown does
        # nothing fits the deadline conservatively: late beats none.  When some configurations fit on
        # their mean estimate, run the best of those by expected accuracy (not the one that finishes
        # first: on a model whose fuse stage is flat in camera count that was a one-camera refresh,
        # on time but with most of the BEV stale -- W4A6 model at x8: IoU 0.19 with 54% misses, against
        # 0.26 with 1% misses from the small variant on every camera).  When none does, every choice is late
        # anyway: run the one with the best expected accuracy (which counts its lateness and how long
        # it holds the lanes) — with a model whose fusion costs the same for any camera count,
        # refreshing one camera saves little time and loses most of the BEV.  Either way, keep the
        # previous output instead when forecasting it is predicted to score better.
        finish = {id(r): view.predict_finish_us(target, r.cams, r.variant, self.options.conservative)
                  for _, _, r in scored}
        likely = [x for x in scored if self._fits(view, target, x[2], conservative=False)]
        if likely:
            score, _, pick = max(likely)
        else:
            score, _, pick = max(scored)
        if self._may_forecast(view) and self.forecast_accuracy(view, target) > score:
            return Skip(target.index, Rung.FORECAST)
        return pick

    def _should_probe(self, view: SchedulerView, p: Pending, full: Run) -> bool:
        """Run the full configuration although its conservative estimate misses the deadline, when
        its mean estimate fits and that estimate rests on few or old measurements: one noisy or
        start-up measurement (or a load spike long gone) must not lock the best configuration out
        for the rest of the drive, since a policy that never runs it can never learn it fits."""
        lat, v = view.latency, full.variant
        since = lat.since("fuse", v)
        uncertain = lat.samples("fuse", v) < lat.options.warmup + self.options.probe_samples or (since or 0) > self.options.reprobe_after
        if not uncertain:
            return False
        finish = view.predict_finish_us(p, full.cams, v)
        return finish is not None and finish + self.options.margin_ms * 1000 <= view.deadline_us(p, full.cams)

    def _may_forecast(self, view: SchedulerView) -> bool:
        return Rung.FORECAST in self.options.ladder and self.options.forecast and view.has_prev_output

    def _no_output(self, view: SchedulerView, target: Pending) -> Skip:
        return Skip(target.index, Rung.FORECAST if self._may_forecast(view) else Rung.SKIP)

    # -- the configurations ------------------------------------------------------------------------
    def candidates(self, view: SchedulerView, p: Pending) -> list[Run]:
        """The ladder's computing configurations for `p`, best first by rung (not yet checked against
        the deadline), without duplicates."""
        n = len(p.cams)
        ladder = self.options.ladder
        ranked = [c for c in view.cam_priority if c in p.cams]
        out: list[Run] = []
        for vi, v in enumerate(view.variants):
            small = vi > 0
            if small and Rung.SMALL not in ladder:
                continue
            if (small or Rung.FULL in ladder) and n:
                out.append(Run(p.index, p.cams, v, Rung.SMALL if small else Rung.FULL))
            for k in range(n - 1, 0, -1):
                if small or Rung.REUSE in ladder:
                    out.append(Run(p.index, self._rotation(view, ranked, k), v, Rung.SMALL if small else Rung.REUSE))
                if small or Rung.DROP_CAMS in ladder:
                    out.append(Run(p.index, tuple(sorted(ranked[:k])), v, Rung.SMALL if small else Rung.DROP_CAMS))
        seen: set[tuple[tuple[int, ...], str]] = set()
        unique = []
        for r in out:
            if (r.cams, r.variant) not in seen:
                seen.add((r.cams, r.variant))
                unique.append(r)
        return unique

    @staticmethod
    def _rotation(view: SchedulerView, ranked: list[int], k: int) -> tuple[int, ...]:
        """The most important camera, then the least recently refreshed ones (never first)."""
        head, rest = ranked[:1], ranked[1:]
        rest.sort(key=lambda c: (view.cam_refreshed[c] is not None, view.cam_refreshed[c] or 0, ranked.index(c)))
        return tuple(sorted(head + rest[:k - 1]))

    def _fits(self, view: SchedulerView, p: Pending, run: Run, conservative: bool | None = None) -> bool:
        conservative = self.options.conservative if conservative is None else conservative
        finish = view.predict_finish_us(p, run.cams, run.variant, conservative)
        return finish is not None and finish + self.options.margin_ms * 1000 <= view.deadline_us(p, run.cams)

    # -- expected streaming accuracy ---------------------------------------------------------------
    def quality(self, view: SchedulerView, variant: str | None) -> float:
        """Offline accuracy of `variant` relative to the full one (0 for None: a sector never refreshed)."""
        if variant is None:
            return 0.0
        i = view.variants.index(variant) if variant in view.variants else len(view.variants)
        declared = view.variant_quality[i] if i < len(view.variant_quality) else None
        if declared is not None:
            return float(declared)
        return 1.0 if i == 0 else self.options.small_quality

    def _rewarps(self, view: SchedulerView, p: Pending, t_src: int) -> float:
        """What a sector reused since `t_src` keeps after being warped once per fused frame since
        (each resampling of a label grid or feature map loses thin objects; one per period assumed)."""
        warps = max(0, round((p.t_us - t_src) / view.period_us))
        return self.options.warp_keep ** warps

    def freshness(self, age_us: float) -> float:
        return 1.0 / (1.0 + max(0.0, age_us) / (self.options.staleness_scale_ms * 1000))

    def _first_query_us(self, view: SchedulerView, p: Pending, t_us: float) -> float:
        """Queries happen at sample times, p.t_us + m·period."""
        return p.t_us + max(0, math.ceil((t_us - p.t_us) / view.period_us)) * view.period_us

    def expected_accuracy(self, view: SchedulerView, p: Pending, run: Run) -> float:
        """Mean over camera sectors of quality × freshness for the output `run` would produce (mean
        latency predictions: this is an expectation, the deadline check is the conservative one)."""
        finish = view.predict_finish_us(p, run.cams, run.variant)
        costs = [view.latency.predict_ms(s, run.variant, len(run.cams)) or 0.0 for s in _STAGES]
        if finish is None:
            return 0.0
        # the output serves until the next one replaces it: at least a period, longer when the
        # bottleneck lane (backbone, or fuse + heads) takes more than one
        cycle_us = max(costs[0], costs[1] + costs[2]) * 1000
        extra_us = (max(1, math.ceil(cycle_us / view.period_us)) - 1) * view.period_us / 2
        q1 = self._first_query_us(view, p, finish)
        fresh = set(run.cams)
        total = 0.0
        n = len(p.cam_ready_us)
        for c in range(n):
            if c in fresh:
                t_src, variant = p.t_us, run.variant
            else:
                t_src = view.cam_refreshed_t_us[c] if c < len(view.cam_refreshed_t_us) else None
                variant = view.cam_refreshed_variant[c] if c < len(view.cam_refreshed_variant) else None
                if t_src is None:
                    continue
                if variant != run.variant and not view.variants_share_state:
                    continue                                 # fusing another variant resets the BEV
            total += self.quality(view, variant) * self.freshness(q1 - t_src + extra_us) * self._rewarps(view, p, t_src)
        return total / max(1, n)

    def forecast_accuracy(self, view: SchedulerView, p: Pending) -> float:
        """Expected accuracy of keeping the previous output (forecast) until the next decision's output."""
        q1 = self._first_query_us(view, p, view.now_us + view.period_us)
        n = len(p.cam_ready_us)
        total = sum(self.quality(view, view.cam_refreshed_variant[c]) * self.freshness(q1 - t) * self._rewarps(view, p, t)
                    for c, t in enumerate(view.cam_refreshed_t_us[:n]) if t is not None)
        return total / max(1, n)
