import math

import numpy as np

from edgert.bev.schema import BOX_FIELDS, Pose
from scheduler.forecast import boxes_to_frame, forecast_boxes


def _box(x, y, yaw=0.0, vx=0.0, vy=0.0, cls=2):
    b = np.zeros((1, len(BOX_FIELDS)), np.float32)
    b[0, [0, 1, 2, 7, 8, 9]] = cls, x, y, yaw, vx, vy
    return b


def test_frame_change_round_trips_and_rotates_velocity():
    a, b = Pose(3.0, -2.0, 0.4), Pose(10.0, 1.0, 0.4 + math.pi / 2)
    box = _box(5.0, 1.0, yaw=0.1, vx=2.0)
    moved = boxes_to_frame(box, a, b)
    np.testing.assert_allclose(boxes_to_frame(moved, b, a), box, atol=1e-5)
    # dst is turned 90° left of src: a velocity along src's +x points along dst's −y
    np.testing.assert_allclose(moved[0, [8, 9]], [0.0, -2.0], atol=1e-5)
    assert math.isclose(moved[0, 7], 0.1 - math.pi / 2, abs_tol=1e-5)


def test_forecast_moves_by_velocity_then_changes_frame():
    box = _box(10.0, 0.0, vx=5.0, vy=1.0)
    out = forecast_boxes(box, 1.0, Pose(0, 0, 0), Pose(5.0, 0.0, 0.0))   # ego moved 5 m forward too
    np.testing.assert_allclose(out[0, [1, 2]], [10.0, 1.0], atol=1e-5)
    none = np.zeros((0, len(BOX_FIELDS)), np.float32)
    assert forecast_boxes(none, 1.0, Pose(0, 0, 0), Pose(1, 0, 0)).shape == (0, 10)
