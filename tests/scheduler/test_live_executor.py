"""The real-time executor (scheduler/live.py): real threads, the wall clock, stages that sleep their
declared cost (so the timings below are the threads' own, not arithmetic on a virtual clock)."""
import threading
import time

import numpy as np
import pytest

from bev_stream_helpers import make_stream, small_rig
from edgert.bev.schema import empty_boxes
from edgert.errors import InputError
from scheduler.live import run_live
from scheduler.metrics import evaluate
from scheduler.policies import make_policy
from scheduler.records import Fate
from scheduler.stream import StreamOptions

RIG = small_rig()
COST_MS = {"backbone": 50.0, "fuse": 40.0, "heads": 10.0}


class SleepStages:
    """Stages that really take their time (sleep, releasing the GIL like onnxruntime) and record which
    threads ran them and when."""
    variants = ("full", "small")

    def __init__(self, fail_at: int | None = None):
        self.calls: list[tuple[str, str, float, float]] = []      # stage, thread, start, end (monotonic s)
        self.fuse_prev: list[object] = []
        self.fail_at = fail_at
        self._lock = threading.Lock()

    def _work(self, stage: str, n_cams: int) -> None:
        t0 = time.monotonic()
        time.sleep(COST_MS[stage] * n_cams / 6 / 1000 if stage == "backbone" else COST_MS[stage] / 1000)
        with self._lock:
            self.calls.append((stage, threading.current_thread().name, t0, time.monotonic()))

    def backbone(self, images, cams, variant):
        self._work("backbone", len(cams))
        return list(cams)

    def fuse(self, feats, cams, prev_bev, ego_motion, variant):
        if self.fail_at is not None and len(self.fuse_prev) == self.fail_at:
            raise InputError("fuse failed on purpose")
        self._work("fuse", len(cams))
        self.fuse_prev.append(prev_bev)
        return len(self.fuse_prev)

    def heads(self, bev, variant):
        self._work("heads", 6)
        return np.zeros((RIG.grid.size, RIG.grid.size), np.uint8), empty_boxes(), np.zeros(0, np.float32)


@pytest.fixture(scope="module")
def stream():
    return make_stream(12, rig=RIG, n_objects=4)      # 1 s at 12 Hz


def test_fifo_runs_every_frame_on_two_real_threads_in_real_time(stream):
    stages, seen = SleepStages(), []
    t0 = time.monotonic()
    r = run_live(stream, stages, make_policy("fifo"), StreamOptions(rig=RIG), on_output=seen.append)
    wall_s = time.monotonic() - t0
    assert [o.source_index for o in r.outputs] == list(range(12))
    assert [o.source_index for o in seen] == list(range(12))          # delivered as made, in order
    # played at the stream's own pace: the last sample completes ~ 11/12 s + 49 ms trigger spread after the first
    assert wall_s >= (stream[-1].frame_t_us[-1] - stream[0].t_us) / 1e6 - 0.01
    threads = {stage: {t for s, t, _, _ in stages.calls if s == stage} for stage in COST_MS}
    assert threads["fuse"] == threads["heads"] and not threads["fuse"] & threads["backbone"]
    for o in r.outputs:                                                # real times in the stream's time base
        assert o.capture_done_us <= o.backbone_start_us < o.fuse_start_us < o.finish_us
        assert o.fuse_start_us - o.backbone_start_us >= 50_000 - 2_000    # its backbone ran first
        assert o.finish_us - o.fuse_start_us >= 50_000 - 2_000
    # fuse reuses the previous BEV from the second output on
    assert stages.fuse_prev[0] is None and all(p is not None for p in stages.fuse_prev[1:])


def test_the_lanes_really_overlap_under_load(stream):
    """At speed factor 2 the backbone (100 ms) and fuse + heads (100 ms) each take more than a frame
    period: the backbone of frame t+1 must run while fuse / heads of frame t run."""
    stages = SleepStages()
    r = run_live(stream, stages, make_policy("latest"), StreamOptions(rig=RIG, speed_factor=2.0))
    bb = [(a, b) for s, _, a, b in stages.calls if s == "backbone"]
    bev = [(a, b) for s, _, a, b in stages.calls if s in ("fuse", "heads")]
    overlap = sum(max(0.0, min(b1, b2) - max(a1, a2)) for a1, b1 in bb for a2, b2 in bev)
    busy = sum(b - a for a, b in bev)
    assert overlap > 0.4 * busy                       # the lanes ran concurrently most of the time
    m = evaluate(r)
    assert r.latency_model.predict_ms("backbone", "full", 6) >= 2 * 50 - 5      # learnt the stretched cost
    assert m.frames_dropped > 0                       # latest drops what it cannot keep up with
    assert {f.index for f in r.frames} == set(range(12))


def test_a_stage_error_stops_every_thread_and_is_raised(stream):
    before = threading.active_count()
    with pytest.raises(InputError, match="fuse failed on purpose"):
        run_live(stream, SleepStages(fail_at=2), make_policy("fifo"), StreamOptions(rig=RIG))
    time.sleep(0.2)
    assert threading.active_count() <= before


def test_stop_ends_a_run_early_with_what_was_made(stream):
    stop = threading.Event()
    timer = threading.Timer(0.35, stop.set)
    timer.start()
    t0 = time.monotonic()
    r = run_live(stream, SleepStages(), make_policy("fifo"), StreamOptions(rig=RIG), stop=stop)
    assert time.monotonic() - t0 < 0.8
    assert 0 < len(r.outputs) < 12
    assert all(f.fate in (Fate.PROCESSED, Fate.DROPPED) for f in r.frames)


def test_no_odometry_samples_reset_temporal_fusion(stream):
    live = [type(s)(s.index, s.t_us, s.frames, s.frame_t_us, s.pose, s.gt_grid, s.gt_boxes, ["no_odometry"])
            for s in stream[:4]]
    stages = SleepStages()
    r = run_live(live, stages, make_policy("fifo"), StreamOptions(rig=RIG))
    assert len(r.outputs) == 4 and stages.fuse_prev == [None] * 4
    assert not any(o.reused_prev for o in r.outputs)
