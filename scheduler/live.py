"""Streaming in real time on real threads: the executor for live rigs (and real-time playback).

scheduler/stream.py runs the same policies on a virtual clock, one stage after the other, and keeps
time by adding up measured stage costs: reproducible, and a fast machine can stand in for a slow one.
A live rig cannot wait for that: its frames arrive in wall-clock time whether the model is ready or
not, and the two lanes must really run at once.  Here three threads share the executor's state
(scheduler.stream._Executor: pending samples, temporal fusion, camera freshness, the latency model,
the records), guarded by one condition variable:

  player    takes samples from the source as they come (a live rig paces itself; a recording or the
            synthetic world is played at its own timestamps) and admits each once all its frames are
            in -- frames that have arrived are in the past, so no stage ever waits on a capture
  backbone  (the calling thread) asks the policy whenever its hand-off slot is empty and runs the
            chosen sample's backbone: the backbone of frame t+1 runs while fuse + heads of frame t run
  BEV lane  takes the hand-off, warps the previous BEV by the ego motion (or resets), runs fuse and
            heads, records the output and hands it to `on_output` (outside the lock)

onnxruntime releases the GIL while a session runs, so on a two-core device the lanes use both cores.
Time is the monotonic clock mapped onto the source's time base at the first sample (its reference
time = the moment it was received), so records, deadlines and metrics mean what they mean on the
virtual clock.  Each stage's measured runtime goes to the latency model the moment it ends.

`speed_factor` > 1 emulates a slower device in real time: after a stage ends its thread sleeps
(factor - 1) x its runtime, and the stretched runtime is what the latency model learns (stages that
declare their cost, scheduler.stages.DeclaresCost, sleep their declared cost x factor instead).

Entry point: `run_live(samples, stages, policy, options, on_output=None, stop=None) -> StreamResult`.
It returns when the source ends, when `stop` is set, or on Ctrl-C (with everything recorded so far);
an exception in any thread stops the others and is raised here.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from edgert.bev.schema import RigSample
from edgert.errors import InputError
from scheduler.policies.base import Pending, Policy, Run, Rung, Skip, Wait
from scheduler.records import Fate, FrameRecord, OutputRecord, StreamResult
from scheduler.stages import BevStages
from scheduler.stream import StreamOptions, _Executor

_POLL_S = 0.05          # threads re-check stop / errors at least this often while waiting

OutputCallback = Callable[[OutputRecord], None]


@dataclass
class _Handoff:
    run: Run
    pending: Pending
    sample: RigSample
    cams: tuple[int, ...]
    feats: object
    b_start_us: int


class _LiveExecutor(_Executor):
    def __init__(self, samples: Iterable[RigSample], stages: BevStages, policy: Policy, opts: StreamOptions,
                 on_output: OutputCallback | None, stop: threading.Event | None):
        super().__init__(iter(()), stages, policy, opts)
        self._incoming = samples
        self._cond = threading.Condition()
        self._stop = stop or threading.Event()
        self._on_output = on_output
        self._handoff: _Handoff | None = None
        self._player_done = self._backbone_done = False
        self._bev_job: tuple[str, int, int] | None = None      # (variant, cams, start) of the running fuse
        self._errors: list[BaseException] = []
        self._base_us: int | None = None
        self._mono0_ns = 0

    # -- the clock -----------------------------------------------------------------------------
    def now_us(self) -> int:
        if self._base_us is None:
            return 0
        return self._base_us + (time.monotonic_ns() - self._mono0_ns) // 1000

    def _sleep_until(self, t_us: int) -> None:
        while not self._stop.is_set() and not self._errors:
            left = (t_us - self.now_us()) / 1e6
            if left <= 0:
                return
            self._stop.wait(min(left, _POLL_S))

    # -- what the virtual executor reads from its lookahead ------------------------------------
    def _peek(self) -> RigSample | None:
        return None                     # arrivals come from the player thread

    def _next_arrival_us(self) -> int | None:
        last = self._last_admitted
        return None if last is None or self._player_done else last.t_us + self.period_us

    def _bev_free_estimate(self, now: int) -> int:
        if self._bev_job is None:
            return now
        variant, k, start = self._bev_job
        costs = [self.latency.predict_ms(s, variant, k) for s in ("fuse", "heads")]
        if any(c is None for c in costs):
            return now
        return max(now, round(start + 1000 * sum(costs)))       # type: ignore[arg-type]

    # -- threads -------------------------------------------------------------------------------
    def _guard(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except Exception as e:       # noqa: BLE001 -- handed to the calling thread, re-raised there
                with self._cond:
                    self._errors.append(e)
                    self._cond.notify_all()
        return run

    def _play(self) -> None:
        try:
            for s in self._incoming:
                if self._stop.is_set() or self._errors:
                    return
                with self._cond:
                    if self._base_us is None:
                        self._base_us, self._mono0_ns = s.t_us, time.monotonic_ns()
                present = [t for f, t in zip(s.frames, s.frame_t_us) if f is not None]
                self._sleep_until(max(present, default=s.t_us))
                with self._cond:
                    self._check(s)
                    self._accept(s)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._player_done = True
                self._cond.notify_all()

    def _timed(self, stage: str, variant: str, k: int, fn: Callable, *args: object) -> tuple[object, int]:
        t0 = time.monotonic_ns()
        timed = self.timer.call(stage, variant, k, fn, *args)
        spent_us = (time.monotonic_ns() - t0) / 1000
        if timed.cost_us > spent_us:
            time.sleep((timed.cost_us - spent_us) / 1e6)          # emulate the slower device
        return timed.value, timed.cost_us

    def _backbone_lane(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stop.is_set() or self._errors:
                        return
                    if self._handoff is None and self.pending:
                        break
                    if self._player_done and not self.pending:
                        return
                    self._cond.wait(_POLL_S)
                now = self.now_us()
                decision = self._decide(now)
                if isinstance(decision, Wait):
                    self._cond.wait(min((decision.until_us - now) / 1e6, _POLL_S))   # or a new arrival
                    continue
                if isinstance(decision, Skip):
                    p, _ = self._take(decision.index)
                    fate = Fate.FORECAST if decision.rung is Rung.FORECAST else Fate.SKIPPED
                    self.frames[p.index] = FrameRecord(p.index, p.t_us, fate, decision.rung)
                    continue
                if not isinstance(decision, Run):
                    raise InputError(f"policy {self.policy.name} returned {decision!r}, not Run, Skip or Wait")
                run = decision
                p, s, cams = self._take_run(run)
            b_start = self.now_us()
            feats, cost_us = self._timed("backbone", run.variant, len(cams), self.stages.backbone,
                                         [s.frames[c] for c in cams], list(cams), run.variant)
            with self._cond:
                self.latency.observe("backbone", run.variant, len(cams), cost_us / 1000.0)
                self._handoff = _Handoff(run, p, s, cams, feats, b_start)
                self._cond.notify_all()

    def _bev_lane(self) -> None:
        while True:
            with self._cond:
                while self._handoff is None:
                    if self._errors or self._backbone_done:
                        return
                    self._cond.wait(_POLL_S)
                h, self._handoff = self._handoff, None
                v, k = h.run.variant, len(h.cams)
                prev_bev, motion = self._prev_for(h.sample)
                f_start = self.now_us()
                self._bev_job = (v, k, f_start)
                self._cond.notify_all()                            # the hand-off slot is free
            bev, fuse_us = self._timed("fuse", v, k, self.stages.fuse, h.feats, list(h.cams), prev_bev, motion, v)
            heads, heads_us = self._timed("heads", v, k, self.stages.heads, bev, v)
            with self._cond:
                finish = self.now_us()
                self.latency.observe("fuse", v, k, fuse_us / 1000.0)
                self.latency.observe("heads", v, k, heads_us / 1000.0)
                rec = self._record(h.run, h.pending, h.sample, h.cams, prev_bev, bev, heads, h.b_start_us,
                                   f_start, finish)
                self._bev_job = None
                self._cond.notify_all()
            if self._on_output is not None:
                self._on_output(rec)

    def run(self) -> StreamResult:
        player = threading.Thread(target=self._guard(self._play), name="edgert-live-player", daemon=True)
        bev = threading.Thread(target=self._guard(self._bev_lane), name="edgert-live-bev", daemon=True)
        player.start()
        bev.start()
        try:
            self._guard(self._backbone_lane)()     # an exception is kept in _errors and raised below
        except KeyboardInterrupt:
            self._stop.set()
        finally:
            with self._cond:
                self._backbone_done = True
                self._cond.notify_all()
            bev.join()
            self._stop.set()                     # the player may be waiting on a live source
            player.join(timeout=1.0)
        if self._errors:
            raise self._errors[0]
        for p, _ in self.pending:                # stopped with samples still waiting
            self.frames.setdefault(p.index, FrameRecord(p.index, p.t_us, Fate.DROPPED))
        return StreamResult(self.policy.name, self.opts.budget_ms, self.opts.speed_factor, self.period_us,
                            self.outputs, [self.frames[k] for k in sorted(self.frames)], self.truth,
                            self.queue_depth, self.resets, self.rig.grid, self.latency)


def run_live(samples: Iterable[RigSample], stages: BevStages, policy: Policy, options: StreamOptions | None = None,
             on_output: OutputCallback | None = None, stop: threading.Event | None = None) -> StreamResult:
    """Stream `samples` through `stages` under `policy` in real time, the backbone and BEV lanes on
    their own threads.  `on_output` is called (from the BEV lane) with every output as it is made."""
    opts = options or StreamOptions()
    if not math.isfinite(opts.speed_factor):
        raise InputError(f"speed factor must be finite, got {opts.speed_factor}")
    return _LiveExecutor(samples, stages, policy, opts, on_output, stop).run()
