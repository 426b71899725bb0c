import json

import numpy as np
import pytest

from edgert.bev.rig import BevGrid
from edgert.bev.schema import BOX_FIELDS, BevOutput, Pose, RigSample
from scheduler.latency import LatencyModel
from scheduler.metrics import MetricsOptions, evaluate
from scheduler.policies.base import Rung
from scheduler.records import Fate, FrameRecord, OutputRecord, StreamResult

GRID = BevGrid(size=40, cell_m=0.5)
PERIOD_US = 100_000


def _box(x, y, cls=2, vx=0.0):
    b = np.zeros(len(BOX_FIELDS), np.float32)
    b[[0, 1, 2, 4, 5, 8]] = cls, x, y, 4.0, 2.0, vx
    return b


def _sample(i, pose, boxes, grid=None):
    g = np.zeros((GRID.size, GRID.size), np.uint8) if grid is None else grid
    if grid is None:
        g[:, 15:25] = 1
    return RigSample(i, i * PERIOD_US, [None], [i * PERIOD_US], pose, g, np.array(boxes, np.float32).reshape(-1, 10))


def _result(truth, outputs, budget_ms=100.0):
    """outputs: (source index, finish_us, forecast, boxes or None = the source's ground truth)."""
    recs = []
    for src, finish, forecast, boxes in outputs:
        s = truth[src]
        b = s.gt_boxes if boxes is None else np.array(boxes, np.float32).reshape(-1, 10)
        out = BevOutput(s.gt_grid.copy(), b, np.ones(len(b), np.float32), s.t_us, s.pose)
        recs.append(OutputRecord(out, src, s.t_us, s.t_us, s.t_us, s.t_us, finish, "full", (0,), Rung.FULL, False,
                                 forecast, finish <= s.t_us + budget_ms * 1000))
    done = {r.source_index for r in recs}
    frames = [FrameRecord(s.index, s.t_us, Fate.PROCESSED if s.index in done else Fate.DROPPED) for s in truth]
    return StreamResult("hand", budget_ms, 1.0, PERIOD_US, recs, frames, truth, [], 0, GRID, LatencyModel())


def test_perfect_prediction_scores_one():
    truth = [_sample(i, Pose(0, 0, 0), [_box(5, 2), _box(-6, -3, cls=4)]) for i in range(4)]
    m = evaluate(_result(truth, [(i, i * PERIOD_US, False, None) for i in range(4)]))
    assert m.streaming.iou_mean == pytest.approx(1.0)
    assert m.streaming.ap_mean == pytest.approx(1.0)
    assert m.streaming.ap_per_class["car"] == pytest.approx(1.0) and m.streaming.ap_per_class["truck"] is None
    assert m.deadline_miss_rate == 0.0 and m.staleness_frames_max == 0


def test_box_shifted_beyond_4_m_is_not_matched_and_1_5_m_only_at_2_and_4_m():
    truth = [_sample(0, Pose(0, 0, 0), [_box(5, 2)])]
    far = evaluate(_result(truth, [(0, 0, False, [_box(9.5, 2)])]))
    assert far.streaming.ap_per_class["car"] == 0.0
    near = evaluate(_result(truth, [(0, 0, False, [_box(6.5, 2)])]))
    assert near.streaming.ap_per_class["car"] == pytest.approx(0.5)


def test_no_output_yet_is_an_empty_prediction():
    truth = [_sample(i, Pose(0, 0, 0), [_box(5, 2)]) for i in range(3)]
    m = evaluate(_result(truth, [(2, 2 * PERIOD_US, False, None)]))     # only the last query sees it
    assert m.queries_without_output == 2
    assert m.streaming.iou_per_class["road"] == pytest.approx(1 / 3)
    assert m.streaming.ap_mean < 0.5
    assert m.deadline_miss_rate == pytest.approx(2 / 3)                 # frames 0 and 1 never got an output
    assert m.frames_dropped == 2


def test_outputs_are_moved_into_the_query_pose_and_forecast_when_marked():
    # a static car at world x = 20 and a car driving at 10 m/s; the ego drives 5 m per frame
    def world(i):
        pose = Pose(5.0 * i, 0.0, 0.0)
        return _sample(i, pose, [_box(20 - 5.0 * i, 3.0), _box(10 + 10 * 0.1 * i - 5.0 * i, -4.0, cls=3, vx=10.0)])
    truth = [world(i) for i in range(4)]
    # frame 0 is answered at once, then each output is one frame stale (finishes at the next frame's time)
    outs = [(0, 0, False, None)] + [(i, (i + 1) * PERIOD_US, False, None) for i in range(3)]
    stale = evaluate(_result(truth, outs), options=MetricsOptions(thresholds_m=(0.5,)))
    assert stale.streaming.ap_per_class["car"] == pytest.approx(1.0)      # ego motion compensated
    assert stale.streaming.ap_per_class["truck"] < 0.3                     # moved 1 m since (only frame 0 fresh)
    fc = evaluate(_result(truth, [(i, f, True, b) for i, f, _, b in outs]), options=MetricsOptions(thresholds_m=(0.5,)))
    assert fc.streaming.ap_per_class["truck"] == pytest.approx(1.0)        # velocity update
    assert stale.staleness_ms_mean == pytest.approx(75.0) and stale.staleness_frames_max == 1
    assert stale.latency_ms_p99 == pytest.approx(100.0)
    # the road strip lines up after warping; only the 10 rows newly seen in front are unknown
    assert stale.streaming.iou_per_class["road"] == pytest.approx((1 + 3 * 30 / 40) / 4)


def test_late_outputs_miss_and_json_is_standard():
    truth = [_sample(i, Pose(0, 0, 0), [_box(5, 2)]) for i in range(2)]
    m = evaluate(_result(truth, [(0, 50_000, False, None), (1, PERIOD_US + 150_000, False, None)], budget_ms=100))
    assert m.late_outputs == 1 and m.deadline_miss_rate == pytest.approx(0.5)
    d = json.loads(json.dumps(m.to_json(), allow_nan=False))
    assert d["streaming"]["ap_per_class"]["truck"] is None and d["deadline_miss_rate"] == 0.5


def _static_scene(pose):
    """A road strip along world x and a 1 m block (an object two cells wide) on it, rasterised by cell
    centre in `pose`'s ego frame."""
    xy = pose.to_world(GRID.cell_centres().reshape(-1, 2)).reshape(GRID.size, GRID.size, 2)
    g = np.where(np.abs(xy[..., 1]) < 4.0, 1, 0).astype(np.uint8)
    g[(np.abs(xy[..., 0] - 6.0) < 1.0) & (np.abs(xy[..., 1] - 1.5) < 1.0)] = 5
    return g


@pytest.mark.parametrize("step_m", [1.0, 0.6])
def test_ego_motion_compensation_of_a_static_scene(step_m):
    # an output of a static scene one frame stale, the ego moving: after compensation it scores near 1
    # for the static classes (exactly 1 on whole-cell motion; sub-cell motion costs the quantisation)
    truth = [_sample(i, Pose(step_m * i, 0.0, 0.0), [], grid=_static_scene(Pose(step_m * i, 0.0, 0.0)))
             for i in range(4)]
    outs = [(0, 0, False, None)] + [(i, (i + 1) * PERIOD_US, False, None) for i in range(3)]
    m = evaluate(_result(truth, outs))
    seen = 1 - 3 * step_m / (GRID.size * GRID.cell_m) / 4      # rows newly seen in front are unknown
    assert m.streaming.iou_per_class["road"] >= seen - 0.02
    if step_m == 1.0:
        assert m.streaming.iou_per_class["cone"] == pytest.approx(1.0)
    else:
        assert m.streaming.iou_per_class["cone"] >= 0.6
    # without compensation (the same grid taken as is) the block would land 1 m off every time
    uncomp = [np.array(t.gt_grid) for t in truth]
    shifted = sum(int(((uncomp[i] == 5) & (uncomp[i + 1] == 5)).sum()) for i in range(3))
    assert shifted < 3 * int((uncomp[0] == 5).sum())
