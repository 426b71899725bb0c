"""The streaming executor: frames arrive at their capture times, a policy decides what runs, and every
stage really runs while a virtual clock (scheduler/clock.py) keeps time.

Two lanes model a two-core device (ANCHORS "Streaming BEV": the backbone dominates, so it gets its
own core): the backbone lane runs `backbone`, the BEV lane runs `fuse` + `heads`.  The backbone of
frame t+1 may run while fusion and heads of frame t run; fuse of a frame needs that frame's backbone
output and the previous BEV, so fusions happen in the order frames were taken.  The hand-off between
the lanes holds one frame: the backbone lane asks the policy for the next frame once its output has
been taken by the BEV lane, so queues build up among the pending samples, where the policy sees them.

A camera's frame arrives at its own capture time (RigSample.frame_t_us: trigger offsets); a backbone
starts once the frames of the cameras it was given are in.  Measured runtimes reach the latency model
at their virtual finish times, so no decision uses a measurement from its own future.

Deadlines and latency count from capture completion: an output is due `budget_ms` after the last
capture among the cameras it used (OutputRecord.capture_done_us), the moment its whole input existed.
Counting from the sample's reference time instead would charge the rig's trigger spread (up to 49 ms
on nuScenes) to the model's budget.  Staleness, what streaming accuracy depends on, still counts from
the reference time (scheduler/metrics.py).

Entry point: `run_stream(samples, stages, policy, options) -> StreamResult`.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import numpy as np

from edgert.bev.recording import discontinuity
from edgert.bev.rig import Rig, nuscenes_like_rig
from edgert.bev.schema import BOX_FIELDS, BevOutput, RigSample
from edgert.errors import InputError
from scheduler.clock import StageTimer
from scheduler.latency import LatencyModel, LatencyOptions
from scheduler.policies.base import Pending, Policy, Run, Rung, SchedulerView, Skip, Wait
from scheduler.priority import camera_priority
from scheduler.records import Fate, FrameRecord, OutputRecord, StreamResult
from scheduler.stages import BevStages, DeclaresCost, DeclaresQuality, Motion


@dataclass(frozen=True)
class StreamOptions:
    budget_ms: float = 83.0           # an output is due budget_ms after its frames' capture completion (12 Hz: one period)
    speed_factor: float = 1.0         # measured runtimes × this (emulate a slower device; 1 on the device)
    rig: Rig | None = None            # camera mounting, for priorities; default nuscenes_like_rig()
    reset_gap_ms: float = 500.0       # a longer gap between fused samples resets temporal fusion
    max_jump_m: float = 10.0          # so does an ego motion larger than this (a pose jump)
    keep_truth: bool = True           # keep image-less copies of the samples in the result (metrics)
    latency: LatencyOptions = field(default_factory=LatencyOptions)


@dataclass
class _Prev:
    bev: object
    sample: RigSample


def _first_capture_us(s: RigSample) -> int | None:
    times = [t for f, t in zip(s.frames, s.frame_t_us) if f is not None]
    return min(times) if times else None


def _without_images(s: RigSample) -> RigSample:
    return RigSample(s.index, s.t_us, [None] * len(s.frames), list(s.frame_t_us), s.pose, s.gt_grid,
                     s.gt_boxes, list(s.events))


class _Executor:
    def __init__(self, samples: Iterable[RigSample], stages: BevStages, policy: Policy, opts: StreamOptions):
        if not getattr(stages, "variants", None):
            raise InputError(f"{type(stages).__name__} declares no variants")
        self.stages, self.policy, self.opts = stages, policy, opts
        self.rig = opts.rig or nuscenes_like_rig()
        self.timer = StageTimer(stages, opts.speed_factor)
        # declared costs (simulations) are not timed, so they carry no start-up cost to discard
        self.latency = LatencyModel(replace(opts.latency, warmup=0) if isinstance(stages, DeclaresCost) else opts.latency)
        self.budget_us = round(opts.budget_ms * 1000)
        self._source: Iterator[RigSample] = iter(samples)
        self._lookahead: RigSample | None = None
        self._exhausted = False
        self._last_admitted: RigSample | None = None
        self._motion: Motion | None = None
        self._diffs: list[int] = []
        self.pending: list[tuple[Pending, RigSample]] = []
        self.frames: dict[int, FrameRecord] = {}
        self.outputs: list[OutputRecord] = []
        self.truth: list[RigSample] = []
        self.queue_depth: list[tuple[int, int]] = []
        self._observations: list[tuple[int, int, str, str, int, float]] = []
        self._seq = 0
        self.f_start = self.f_free = -1
        self._last_job: tuple[str, int] | None = None
        self.prev: _Prev | None = None
        self.resets = 0
        self.cam_refreshed: list[int | None] = []
        self.cam_refreshed_t_us: list[int | None] = []
        self.cam_refreshed_variant: list[str | None] = []
        self.variants_share_state = bool(getattr(stages, "variants_share_state", True))
        self.variant_quality = tuple(stages.declared_quality(v) if isinstance(stages, DeclaresQuality) else None
                                     for v in stages.variants)

    # -- arrivals ------------------------------------------------------------------------------
    def _peek(self) -> RigSample | None:
        if self._lookahead is None and not self._exhausted:
            self._lookahead = next(self._source, None)
            self._exhausted = self._lookahead is None
            if self._lookahead is not None:
                self._check(self._lookahead)
        return self._lookahead

    def _check(self, s: RigSample) -> None:
        if len(s.frame_t_us) != len(s.frames):
            raise InputError(f"sample {s.index}: {len(s.frames)} frames but {len(s.frame_t_us)} capture times")
        if len(s.frames) != len(self.rig.cameras):
            raise InputError(f"sample {s.index}: {len(s.frames)} cameras, the rig has {len(self.rig.cameras)}")
        last = self._last_admitted
        if last is not None and s.t_us <= last.t_us:
            raise InputError(f"sample {s.index}: time {s.t_us} us is not after sample {last.index} ({last.t_us} us)")

    def _admit(self, now_us: int) -> None:
        """Move every sample whose first camera has captured by `now_us` into pending."""
        while (s := self._peek()) is not None:
            first = _first_capture_us(s)
            if first is not None and first > now_us:
                return
            self._lookahead = None
            self._accept(s)

    def _accept(self, s: RigSample) -> None:
        """A sample whose first camera has captured joins the pending ones."""
        if not self.cam_refreshed:
            self.cam_refreshed = [None] * len(s.frames)
            self.cam_refreshed_t_us = [None] * len(s.frames)
            self.cam_refreshed_variant = [None] * len(s.frames)
        if self._last_admitted is not None:
            self._diffs = (self._diffs + [s.t_us - self._last_admitted.t_us])[-16:]
            self._motion = s.pose.relative_to(self._last_admitted.pose)
        self._last_admitted = s
        if self.opts.keep_truth:
            self.truth.append(_without_images(s))
        if _first_capture_us(s) is None:        # no readable frame at all
            self.frames[s.index] = FrameRecord(s.index, s.t_us, Fate.SKIPPED)
            return
        ready = tuple(t if f is not None else None for f, t in zip(s.frames, s.frame_t_us))
        self.pending.append((Pending(s.index, s.t_us, ready), s))

    @property
    def period_us(self) -> int:
        diffs = list(self._diffs)
        nxt = self._peek()
        if not diffs and nxt is not None and self._last_admitted is not None:
            diffs = [nxt.t_us - self._last_admitted.t_us]
        return int(np.median(diffs)) if diffs else self.budget_us

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> StreamResult:
        first = self._peek()
        now = (_first_capture_us(first) or first.t_us) if first is not None else 0
        while True:
            self._admit(now)
            if not self.pending:
                nxt = self._peek()
                if nxt is None:
                    break
                now = max(now, _first_capture_us(nxt) or nxt.t_us)
                continue
            self._deliver(now)
            decision = self._decide(now)
            if isinstance(decision, Wait):
                now = decision.until_us
            elif isinstance(decision, Skip):
                p, _ = self._take(decision.index)
                fate = Fate.FORECAST if decision.rung is Rung.FORECAST else Fate.SKIPPED
                self.frames[p.index] = FrameRecord(p.index, p.t_us, fate, decision.rung)
            elif isinstance(decision, Run):
                now = self._run(decision, now)
            else:
                raise InputError(f"policy {self.policy.name} returned {decision!r}, not Run, Skip or Wait")
        self._deliver(math.inf)
        return StreamResult(self.policy.name, self.opts.budget_ms, self.opts.speed_factor, self.period_us,
                            self.outputs, [self.frames[k] for k in sorted(self.frames)], self.truth,
                            self.queue_depth, self.resets, self.rig.grid, self.latency)

    def _decide(self, now: int):
        """Ask the policy (a Wait must be for a later time)."""
        decision = self.policy.decide(self._view(now))
        self.queue_depth.append((now, sum(p.complete_at_us <= now for p, _ in self.pending)))
        if isinstance(decision, Wait) and decision.until_us <= now:
            raise InputError(f"policy {self.policy.name} waited until {decision.until_us} us, not after "
                             f"now ({now} us)")
        return decision

    def _view(self, now: int) -> SchedulerView:
        return SchedulerView(
            now_us=now, pending=tuple(p for p, _ in self.pending),
            next_arrival_us=self._next_arrival_us(),
            period_us=self.period_us, budget_us=self.budget_us, variants=tuple(self.stages.variants),
            cam_priority=camera_priority(self.rig, self._motion), cam_refreshed=tuple(self.cam_refreshed),
            bev_free_us=self._bev_free_estimate(now),
            has_prev_output=bool(self.outputs) and self.outputs[0].finish_us <= now, latency=self.latency,
            cam_refreshed_t_us=tuple(self.cam_refreshed_t_us), cam_refreshed_variant=tuple(self.cam_refreshed_variant),
            variant_quality=self.variant_quality, variants_share_state=self.variants_share_state,
            last_variant=self._last_job[0] if self._last_job else None)

    def _next_arrival_us(self) -> int | None:
        nxt = self._peek()
        return _first_capture_us(nxt) if nxt is not None else None

    def _bev_free_estimate(self, now: int) -> int:
        """When the BEV lane will be free, as the scheduler itself could know it: the real finish once
        it has passed, otherwise the running job's start plus its predicted runtime."""
        if self.f_free <= now or self._last_job is None:
            return now
        variant, k = self._last_job
        costs = [self.latency.predict_ms(s, variant, k) for s in ("fuse", "heads")]
        if any(c is None for c in costs):
            return now
        return max(now, round(self.f_start + 1000 * sum(costs)))     # type: ignore[arg-type]

    def _take(self, index: int) -> tuple[Pending, RigSample]:
        pos = next((i for i, (p, _) in enumerate(self.pending) if p.index == index), None)
        if pos is None:
            raise InputError(f"policy {self.policy.name} chose sample {index}, which is not pending "
                             f"({[p.index for p, _ in self.pending]})")
        for p, _ in self.pending[:pos]:
            self.frames[p.index] = FrameRecord(p.index, p.t_us, Fate.DROPPED)
        taken = self.pending[pos]
        del self.pending[:pos + 1]
        return taken

    def _deliver(self, now: float) -> None:
        while self._observations and self._observations[0][0] <= now:
            _, _, stage, variant, k, ms = heapq.heappop(self._observations)
            self.latency.observe(stage, variant, k, ms)

    def _observe_at(self, t_us: int, stage: str, variant: str, k: int, cost_us: int) -> None:
        self._seq += 1
        heapq.heappush(self._observations, (t_us, self._seq, stage, variant, k, cost_us / 1000.0))

    def _prev_for(self, s: RigSample) -> tuple[object | None, Motion | None]:
        if self.prev is None:
            return None, None
        motion = s.pose.relative_to(self.prev.sample.pose)
        gap_ms = (s.t_us - self.prev.sample.t_us) / 1000.0
        if (gap_ms > self.opts.reset_gap_ms or math.hypot(motion[0], motion[1]) > self.opts.max_jump_m
                or discontinuity(s)):
            self.resets += 1
            return None, None
        return self.prev.bev, motion

    def _take_run(self, run: Run) -> tuple[Pending, RigSample, tuple[int, ...]]:
        """The sample a Run decision names, taken from pending, and its cameras that have a frame."""
        if run.variant not in self.stages.variants:
            raise InputError(f"policy {self.policy.name} chose variant {run.variant!r} "
                             f"(known: {', '.join(self.stages.variants)})")
        p, s = self._take(run.index)
        cams = tuple(c for c in run.cams if s.frames[c] is not None)
        if not cams:
            raise InputError(f"policy {self.policy.name} ran sample {p.index} with no readable camera of {run.cams}")
        return p, s, cams

    def _run(self, run: Run, now: int) -> int:
        p, s, cams = self._take_run(run)
        k, v = len(cams), run.variant
        b_start = max(now, p.ready_at_us(cams))
        feats = self.timer.call("backbone", v, k, self.stages.backbone, [s.frames[c] for c in cams], list(cams), v)
        b_end = b_start + feats.cost_us
        prev_bev, motion = self._prev_for(s)
        f_start = max(b_end, self.f_free)
        bev = self.timer.call("fuse", v, k, self.stages.fuse, feats.value, list(cams), prev_bev, motion, v)
        heads = self.timer.call("heads", v, k, self.stages.heads, bev.value, v)
        finish = f_start + bev.cost_us + heads.cost_us
        self._observe_at(b_end, "backbone", v, k, feats.cost_us)
        self._observe_at(f_start + bev.cost_us, "fuse", v, k, bev.cost_us)
        self._observe_at(finish, "heads", v, k, heads.cost_us)
        self._record(run, p, s, cams, prev_bev, bev.value, heads.value, b_start, f_start, finish)
        return max(b_end, f_start)

    def _record(self, run: Run, p: Pending, s: RigSample, cams: tuple[int, ...], prev_bev: object | None,
                bev: object, heads: object, b_start: int, f_start: int, finish: int) -> OutputRecord:
        """The bookkeeping after fuse + heads of `s`: temporal state, camera freshness, the output."""
        k, v = len(cams), run.variant
        switched = self._last_job is not None and self._last_job[0] != v and not self.variants_share_state
        self.f_start, self.f_free, self._last_job = f_start, finish, (v, k)
        self.prev = _Prev(bev, s)
        if prev_bev is None or switched:         # a reset: sectors not refreshed now are empty
            self.cam_refreshed = [None] * len(s.frames)
            self.cam_refreshed_t_us = [None] * len(s.frames)
            self.cam_refreshed_variant = [None] * len(s.frames)
        for c in cams:
            self.cam_refreshed[c], self.cam_refreshed_t_us[c], self.cam_refreshed_variant[c] = s.index, s.t_us, v
        grid, boxes, scores = _check_heads(heads, p.index)
        out = BevOutput(grid, boxes, scores, s.t_us, s.pose)
        captured = p.ready_at_us(cams)           # the deadline counts from here (SchedulerView.deadline_us)
        rec = OutputRecord(out, s.index, s.t_us, captured, b_start, f_start, finish, v, cams, run.rung,
                           prev_bev is not None and not switched and k < len(s.frames),
                           self.policy.forecast_outputs, finish <= captured + self.budget_us)
        self.outputs.append(rec)
        self.frames[p.index] = FrameRecord(p.index, p.t_us, Fate.PROCESSED, run.rung)
        return rec


def _check_heads(value: object, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        grid, boxes, scores = value            # type: ignore[misc]
    except (TypeError, ValueError):
        raise InputError(f"heads of sample {index} returned {type(value).__name__}, "
                         "not (grid, boxes, scores)") from None
    grid, boxes, scores = np.asarray(grid), np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    if grid.ndim != 2 or boxes.ndim != 2 or boxes.shape[1] < len(BOX_FIELDS) or scores.shape != (len(boxes),):
        raise InputError(f"heads of sample {index}: grid {list(grid.shape)}, boxes {list(boxes.shape)}, "
                         f"scores {list(scores.shape)}; want [S, S], [N, >={len(BOX_FIELDS)}], [N]")
    return grid, boxes, scores


def run_stream(samples: Iterable[RigSample], stages: BevStages, policy: Policy,
               options: StreamOptions | None = None) -> StreamResult:
    """Stream `samples` (in time order) through `stages` under `policy` on the virtual clock."""
    return _Executor(samples, stages, policy, options or StreamOptions()).run()
