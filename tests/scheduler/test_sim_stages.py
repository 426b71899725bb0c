import numpy as np
import pytest

from bev_stream_helpers import make_stream, small_rig
from scheduler.metrics import offline_accuracy
from scheduler.policies import make_policy
from scheduler.sim_stages import GroundTruthStages
from scheduler.stream import StreamOptions, run_stream
from scheduler.warp import warp_bev

RIG = small_rig()


def test_full_output_is_the_ground_truth():
    s = make_stream(6, rig=RIG)
    r = run_stream(s, GroundTruthStages(s, RIG), make_policy("fifo"), StreamOptions(rig=RIG))
    acc = offline_accuracy(r)
    assert acc.iou_mean == 1.0 and acc.ap_mean == pytest.approx(1.0)


def test_cameras_not_refreshed_come_from_the_warped_previous_bev():
    s = make_stream(2, rig=RIG)
    st = GroundTruthStages(s, RIG)
    everything = list(range(6))
    bev0 = st.fuse(st.backbone(s[0].frames, everything, "full"), everything, None, None, "full")
    motion = s[1].pose.relative_to(s[0].pose)
    front = [0]
    bev1 = st.fuse(st.backbone([s[1].frames[0]], front, "full"), front, bev0, motion, "full")
    grid, boxes, scores = st.heads(bev1, "full")
    ahead = st._cell_cam == 0
    np.testing.assert_array_equal(grid[ahead], s[1].gt_grid[ahead])
    np.testing.assert_array_equal(grid[~ahead], warp_bev(s[0].gt_grid, motion, RIG.grid)[~ahead])
    assert set(np.round(scores, 3)) <= {1.0, 0.5} and (scores == 0.5).any()     # stale boxes score lower
    reset = st.fuse(st.backbone([s[1].frames[0]], front, "full"), front, None, None, "full")
    assert not reset.grid[~ahead].any()                  # no previous BEV: those sectors are unknown
