import math

import numpy as np
import pytest

from edgert.bev.rig import BevGrid
from edgert.bev.schema import Pose
from edgert.errors import InputError
from scheduler.warp import invert_motion, warp_bev

GRID = BevGrid(size=40, cell_m=0.5)


def _blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = np.zeros((GRID.size, GRID.size), np.uint8)
    for _ in range(12):
        r, c = rng.integers(0, GRID.size - 4, 2)
        g[r:r + 4, c:c + 4] = rng.integers(1, 6)
    return g


@pytest.mark.parametrize("k", [1, 3, 7])
def test_driving_forward_k_cells_shifts_k_rows_down(k):
    g = _blobs()
    out = warp_bev(g, (k * GRID.cell_m, 0.0, 0.0), GRID)
    np.testing.assert_array_equal(out[k:], g[:-k])
    assert not out[:k].any()                          # the newly visible strip in front is unknown


def test_moving_left_shifts_columns_right():
    g = _blobs(1)
    out = warp_bev(g, (0.0, 2 * GRID.cell_m, 0.0), GRID)
    np.testing.assert_array_equal(out[:, 2:], g[:, :-2])


def test_round_trip_by_inverse_motion_restores_the_interior():
    g = _blobs(2)
    m = (1.5, -0.5, math.pi / 2)                      # exact cell moves: nearest is a permutation
    back = warp_bev(warp_bev(g, m, GRID), invert_motion(m), GRID)
    np.testing.assert_array_equal(back[8:-8, 8:-8], g[8:-8, 8:-8])
    m = (1.3, -0.7, 0.2)
    field = np.fromfunction(lambda c, r, q: np.sin(r / 6.0 + c) + np.cos(q / 7.0), (3, GRID.size, GRID.size))
    back = warp_bev(warp_bev(field.astype(np.float32), m, GRID, interpolation="bilinear"),
                    invert_motion(m), GRID, interpolation="bilinear")
    assert back.shape == field.shape and back.dtype == np.float32
    np.testing.assert_allclose(back[:, 10:-10, 10:-10], field[:, 10:-10, 10:-10], atol=0.05)


def test_matches_the_pose_transform_of_a_point():
    prev, cur = Pose(10.0, 5.0, 0.3), Pose(12.0, 6.5, 0.55)
    g = np.zeros((GRID.size, GRID.size), np.uint8)
    g[12, 25] = 3
    xy_prev = GRID.cell_centres()[12, 25]
    out = warp_bev(g, cur.relative_to(prev), GRID)
    expect = GRID.to_cell(cur.to_ego(prev.to_world(xy_prev)))[0]
    (r,), (c,) = np.nonzero(out == 3)[0][:1], np.nonzero(out == 3)[1][:1]
    assert abs(r + 0.5 - expect[0]) <= 1.0 and abs(c + 0.5 - expect[1]) <= 1.0


def test_bad_shape_and_interpolation_are_rejected():
    with pytest.raises(InputError, match="BEV map"):
        warp_bev(np.zeros((10, 10)), (0, 0, 0), GRID)
    with pytest.raises(InputError, match="interpolation"):
        warp_bev(np.zeros((40, 40)), (0, 0, 0), GRID, interpolation="cubic")
