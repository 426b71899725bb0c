"""The executor's virtual clock and two-lane pipeline, with stages that record what they were given."""
import numpy as np
import pytest

from bev_stream_helpers import make_stream, small_rig
from edgert.bev.schema import Pose, empty_boxes
from edgert.errors import InputError
from scheduler.policies import Run, Wait, known_policies, make_policy
from scheduler.sim_stages import GroundTruthStages, SimCost
from scheduler.stream import StreamOptions, run_stream

RIG = small_rig()
COST_MS = {"backbone": 60.0, "fuse": 30.0, "heads": 10.0}


class FakeStages:
    variants = ("full", "small")

    def __init__(self):
        self.fuse_calls = []

    def declared_cost_ms(self, stage, variant, n_cams):
        return COST_MS[stage] * n_cams / 6

    def backbone(self, images, cams, variant):
        return list(cams)

    def fuse(self, feats, cams, prev_bev, ego_motion, variant):
        self.fuse_calls.append((tuple(cams), prev_bev, ego_motion))
        return len(self.fuse_calls)

    def heads(self, bev, variant):
        return np.zeros((RIG.grid.size, RIG.grid.size), np.uint8), empty_boxes(), np.zeros(0, np.float32)


@pytest.fixture(scope="module")
def stream():
    return make_stream(24, rig=RIG, n_objects=4)


def test_lanes_overlap_and_respect_dependencies(stream):
    r = run_stream(stream, FakeStages(), make_policy("fifo"), StreamOptions(rig=RIG, speed_factor=1.0))
    outs = r.outputs
    assert [o.source_index for o in outs] == list(range(24))
    for prev, o in zip(outs, outs[1:]):
        assert o.fuse_start_us >= o.backbone_start_us + 60_000           # needs its own backbone
        assert o.fuse_start_us >= prev.finish_us                         # and the previous BEV
    assert any(o.backbone_start_us < prev.finish_us for prev, o in zip(outs, outs[1:]))   # pipelined
    # a backbone starts once every camera it was given has captured (last trigger: 49 ms)
    assert all(o.backbone_start_us >= o.source_t_us + 49_000 for o in outs)
    first = outs[0]
    assert first.finish_us - first.source_t_us == 49_000 + 100_000


def test_speed_factor_stretches_runtimes(stream):
    r = run_stream(stream[:1], FakeStages(), make_policy("fifo"), StreamOptions(rig=RIG, speed_factor=3.0))
    out = r.outputs[0]
    assert out.latency_ms == pytest.approx(300)                     # from capture completion
    assert out.finish_us - out.source_t_us == 49_000 + 300_000      # staleness counts the trigger spread too


def test_temporal_fusion_gets_the_previous_bev_and_resets_on_a_pose_jump(stream):
    jumped = list(stream[:6])
    for i in (4, 5):                                    # the localisation jumps 50 m at sample 4
        s = jumped[i]
        jumped[i] = type(s)(s.index, s.t_us, s.frames, s.frame_t_us, Pose(s.pose.x + 50, s.pose.y, s.pose.yaw),
                            s.gt_grid, s.gt_boxes, ["pose_jump 50.0 m"] if i == 4 else [])
    fake = FakeStages()
    r = run_stream(jumped, fake, make_policy("fifo"), StreamOptions(rig=RIG))
    prevs = [c[1] for c in fake.fuse_calls]
    assert prevs == [None, 1, 2, 3, None, 5]
    motion = fake.fuse_calls[1][2]
    assert motion == pytest.approx(stream[1].pose.relative_to(stream[0].pose))
    assert r.fusion_resets == 1


def test_missing_frames_are_not_given_to_the_backbone(stream):
    s = stream[0]
    frames = list(s.frames)
    frames[3] = None
    holed = type(s)(s.index, s.t_us, frames, s.frame_t_us, s.pose, s.gt_grid, s.gt_boxes)
    fake = FakeStages()
    r = run_stream([holed], fake, make_policy("fifo"), StreamOptions(rig=RIG))
    assert fake.fuse_calls[0][0] == (0, 1, 2, 4, 5) and r.outputs[0].cams == (0, 1, 2, 4, 5)
    assert r.outputs[0].reused_prev is False


def test_measured_mode_times_the_calls(stream):
    cost = SimCost(backbone_fixed_ms=2, backbone_per_cam_ms=0.5, fuse_fixed_ms=1, fuse_per_cam_ms=0, heads_ms=1,
                   measure=True)
    stages = GroundTruthStages(stream[:4], RIG, cost=cost)
    r = run_stream(stream[:4], stages, make_policy("fifo"), StreamOptions(rig=RIG, speed_factor=2.0))
    measured = r.latency_model.predict_ms("backbone", "full", 6)
    assert 2 * 5.0 <= measured < 2 * 5.0 + 20          # busy-waited 5 ms, times 2


class _Bad:
    name, forecast_outputs = "bad", False

    def __init__(self, decision):
        self.decision = decision

    def decide(self, view):
        return self.decision(view)


def test_bad_decisions_and_names_are_reported(stream):
    with pytest.raises(InputError, match="not pending"):
        run_stream(stream[:3], FakeStages(), _Bad(lambda v: Run(99, (0,), "full")), StreamOptions(rig=RIG))
    with pytest.raises(InputError, match="variant 'tiny'"):
        run_stream(stream[:3], FakeStages(), _Bad(lambda v: Run(v.pending[0].index, (0,), "tiny")),
                   StreamOptions(rig=RIG))
    with pytest.raises(InputError, match="waited"):
        run_stream(stream[:3], FakeStages(), _Bad(lambda v: Wait(v.now_us)), StreamOptions(rig=RIG))
    with pytest.raises(InputError, match=r"known: deadline, fifo, latest, shrinking-tail"):
        make_policy("lastest")
    assert known_policies() == ["deadline", "fifo", "latest", "shrinking-tail"]
