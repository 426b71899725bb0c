"""Each policy on a synthetic 12 Hz stream with declared stage costs (GroundTruthStages: full-variant
cost with six cameras 82 ms at speed factor 1; the speed factor stretches it)."""
import numpy as np
import pytest

from bev_stream_helpers import make_stream, small_rig
from scheduler.latency import LatencyModel
from scheduler.metrics import evaluate
from scheduler.policies import Pending, Rung, SchedulerView, Wait, make_policy
from scheduler.policies.base import Run
from scheduler.sim_stages import GroundTruthStages, OracleOptions
from scheduler.stream import StreamOptions, run_stream

RIG = small_rig()


@pytest.fixture(scope="module")
def stream():
    return make_stream(72, rig=RIG, seed=3)


def _run(stream, policy, speed_factor, budget_ms=120.0, small_grid_factor=1):
    stages = GroundTruthStages(stream, RIG, options=OracleOptions(small_grid_factor=small_grid_factor))
    return run_stream(stream, stages, policy, StreamOptions(budget_ms=budget_ms, speed_factor=speed_factor, rig=RIG))


def _stale_thirds(result) -> tuple[float, float]:
    m = evaluate(result)
    s = np.array(m.staleness_ms)
    k = len(s) // 3
    return float(s[:k].mean()), float(s[-k:].mean())


def test_fifo_falls_behind_without_bound_when_a_frame_costs_more_than_a_period(stream):
    slow = _run(stream, make_policy("fifo"), speed_factor=2.0)
    early, late = _stale_thirds(slow)
    assert late > 3 * early and late > 1000
    assert slow.max_queue_depth >= 15
    assert all(f.fate.value == "processed" for f in slow.frames)
    fast = _run(stream, make_policy("fifo"), speed_factor=0.5)
    assert fast.max_queue_depth <= 1 and evaluate(fast).staleness_frames_max <= 2


@pytest.mark.parametrize("speed_factor", [2.0, 4.0])
def test_latest_keeps_staleness_bounded_by_dropping_frames(stream, speed_factor):
    r = _run(stream, make_policy("latest"), speed_factor)
    m = evaluate(r)
    early, late = _stale_thirds(r)
    assert late < 1.3 * early
    # a query sees an output at most one latency (trigger spread + compute) plus one output interval
    # (the 62 ms backbone, the bottleneck lane) old
    bound_frames = ((49 + 82 * speed_factor) + 62 * speed_factor) / 83.3
    assert m.staleness_frames_max <= np.ceil(bound_frames) + 1
    # what waits at a decision is what arrived during one backbone; older frames were dropped
    assert m.frames_dropped > 0 and r.max_queue_depth <= np.ceil(62 * speed_factor / 83.3)


def _view(now_ms, newest_complete_ms, runtime_ms, period_ms=100):
    lat = LatencyModel()
    for stage, ms in (("backbone", runtime_ms - 2), ("fuse", 1), ("heads", 1)):
        lat.observe(stage, "full", 1, ms)
    p = Pending(0, 0, (round(newest_complete_ms * 1000),))
    return SchedulerView(now_us=round(now_ms * 1000), pending=(p,), next_arrival_us=round(period_ms * 1000),
                         period_us=period_ms * 1000, budget_us=period_ms * 1000, variants=("full",),
                         cam_priority=(0,), cam_refreshed=(None,), bev_free_us=0, has_prev_output=True, latency=lat)


def test_shrinking_tail_rule():
    st = make_policy("shrinking-tail")
    # Li et al.: idle iff tail(s + r) < tail(s).  Free at 0.3 frames with r = 1.5: now -> 1.8 (first
    # seen at query 2), waiting -> 2.5 (query 3) -> run
    assert not isinstance(st.decide(_view(30, 0, 150)), Wait)
    # free at 0.7 with r = 1.5: now -> 2.2 (query 3), waiting -> 2.5 (query 3) -> wait for frame 1
    assert st.decide(_view(70, 0, 150)) == Wait(100_000)
    # free at 0.3 with r = 1.8: now -> 2.1 (query 3), waiting -> 2.8 (query 3) -> wait; r = 1.6: 1.9 vs 2.6 -> run
    assert isinstance(st.decide(_view(30, 0, 180)), Wait)
    assert not isinstance(st.decide(_view(30, 0, 160)), Wait)
    # runtime under one frame: always run
    assert not isinstance(st.decide(_view(30, 0, 50)), Wait)


class _Recording:
    def __init__(self, policy):
        self.policy, self.decisions = policy, []
        self.name, self.forecast_outputs = policy.name, policy.forecast_outputs

    def decide(self, view):
        d = self.policy.decide(view)
        self.decisions.append((bool(view.complete()), d))
        return d

    def idles(self) -> list[Wait]:
        """Waits while a complete sample was there to run."""
        return [d for had_complete, d in self.decisions if had_complete and isinstance(d, Wait)]


def test_shrinking_tail_idles_and_is_never_staler_than_latest(stream):
    rec = _Recording(make_policy("shrinking-tail"))
    st = _run(stream, rec, speed_factor=2.0)
    latest = _run(stream, make_policy("latest"), speed_factor=2.0)
    assert len(rec.idles()) >= 10
    assert evaluate(st).staleness_ms_mean < evaluate(latest).staleness_ms_mean
    rec = _Recording(make_policy("shrinking-tail"))
    _run(stream, rec, speed_factor=0.5)                     # runtime < 1 frame: no idling
    assert rec.decisions and not rec.idles()


def test_deadline_degrades_to_meet_deadlines_and_beats_latest(stream):
    r = _run(stream, make_policy("deadline"), speed_factor=2.0)
    m = evaluate(r)
    full_ms = 49 + 82 * 2.0
    assert full_ms > r.budget_ms                             # the full configuration cannot make it
    assert m.deadline_miss_rate <= 0.05
    assert m.rungs.get(Rung.FULL.value, 0) <= 2              # only while the latency model knows nothing
    latest = evaluate(_run(stream, make_policy("latest"), speed_factor=2.0))
    assert latest.deadline_miss_rate > 0.9
    assert m.streaming.iou_mean > latest.streaming.iou_mean
    assert m.streaming.ap_mean > latest.streaming.ap_mean + 0.1


def test_deadline_does_not_degrade_when_everything_fits(stream):
    # (the smaller variant here sees a coarser grid: with the same accuracy and a lower latency it
    # would rightly be preferred)
    m = evaluate(_run(stream, make_policy("deadline"), speed_factor=0.5, small_grid_factor=2))
    assert m.deadline_miss_rate == 0.0 and Rung.SMALL.value not in m.rungs
    # it may leave out the last-triggered camera now and then (refreshed from the warped previous BEV)
    # when that makes the output one query earlier, but only if it scores at least as well
    latest = evaluate(_run(stream, make_policy("latest"), speed_factor=0.5, small_grid_factor=2))
    assert m.streaming.iou_mean >= latest.streaming.iou_mean - 0.01


def test_deadline_never_starves_when_nothing_fits(stream):
    # speed 8: not even the smaller variant on one camera fits a 60 ms budget; the policy still
    # runs the cheapest configuration on the newest frame instead of skipping (a late output beats none)
    r = _run(stream, make_policy("deadline"), speed_factor=8.0, budget_ms=60.0)
    m = evaluate(r)
    assert m.frames_processed >= len(stream) // 3
    first_ms = 49 + 82 * 8.0                                  # the first frame runs in full to learn its cost
    assert m.queries_without_output <= first_ms / 83.3 + 1
    early, late = _stale_thirds(r)
    assert late < 1.5 * early                                 # bounded, not growing
    latest = evaluate(_run(stream, make_policy("latest"), speed_factor=8.0, budget_ms=60.0))
    assert m.staleness_ms_mean < latest.staleness_ms_mean


def test_deadline_counts_from_capture_completion(stream):
    # full model 82 ms at speed 1; the last camera captures 49 ms after the reference time, so an 83 ms
    # budget from the reference time would not fit, but from capture completion it does: no degrading
    r = _run(stream, make_policy("deadline"), speed_factor=1.0, budget_ms=83.0, small_grid_factor=2)
    m = evaluate(r)
    assert m.deadline_miss_rate == 0.0
    assert m.rungs.get(Rung.FULL.value, 0) >= len(stream) - 2
    for o in r.outputs:
        assert o.capture_done_us == max(s for s in r.truth[o.source_index].frame_t_us)
        assert o.latency_ms == pytest.approx((o.finish_us - o.capture_done_us) / 1000)
        assert o.deadline_met == (o.finish_us <= o.capture_done_us + 83_000)
    assert m.latency_ms_p99 <= 83.0 and m.staleness_ms_mean > 83.0   # staleness still counts the spread


def test_deadline_prefers_the_configuration_with_better_expected_accuracy():
    pol = make_policy("deadline")
    view = _view(0, 0, 50)
    p = view.pending[0]
    full = pol.expected_accuracy(view, p, pol.candidates(view, p)[0])
    worse = type(view)(**{**view.__dict__, "variant_quality": (0.5,)})
    assert pol.expected_accuracy(worse, p, pol.candidates(worse, p)[0]) == pytest.approx(full * 0.5)
    assert pol.freshness(0) == 1.0 and pol.freshness(250_000) == pytest.approx(0.5)


def test_deadline_counts_no_reused_sector_across_a_variant_switch_that_resets():
    # a real model's variants keep separate BEV states: fusing "small" after "full" starts from zero,
    # so sectors last refreshed by "full" contribute nothing to a partial "small" refresh
    pol = make_policy("deadline")
    lat = LatencyModel()
    for v in ("full", "small"):
        for stage in ("backbone", "fuse", "heads"):
            lat.observe(stage, v, 3, 5.0)
    p = Pending(4, 400_000, (400_000,) * 3)
    view = SchedulerView(now_us=400_000, pending=(p,), next_arrival_us=500_000, period_us=100_000,
                         budget_us=100_000, variants=("full", "small"), cam_priority=(0, 1, 2),
                         cam_refreshed=(3, 3, 3), bev_free_us=0, has_prev_output=True, latency=lat,
                         cam_refreshed_t_us=(300_000,) * 3, cam_refreshed_variant=("full",) * 3,
                         variant_quality=(1.0, 0.7))
    part = Run(p.index, (0,), "small", Rung.SMALL)
    shared = pol.expected_accuracy(view, p, part)
    reset_view = SchedulerView(**{**view.__dict__, "variants_share_state": False})
    reset = pol.expected_accuracy(reset_view, p, part)
    alone = pol.expected_accuracy(view, p, Run(p.index, (0, 1, 2), "small", Rung.SMALL)) / 3
    assert reset == pytest.approx(alone) and reset < shared
