"""Rig geometry: projections agree with the calibration, rays and projections are inverse, the BEV
grid's cell convention, calibration JSON round-trips and rejects nonsense."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.bev.rig import BevGrid, Camera, Rig, nuscenes_like_rig
from edgert.bev.schema import Pose
from edgert.errors import InputError


def test_front_camera_sees_ahead_and_left_is_left():
    cam = nuscenes_like_rig().cameras[0]
    uv, z = cam.project(np.array([[20.0, 0.0, 1.6], [20.0, 3.0, 1.6], [-20.0, 0.0, 1.6]]))
    assert z[0] > 0 and z[2] < 0                               # behind the front camera: negative depth
    assert abs(uv[0, 0] - cam.width / 2) < 1e-6                # straight ahead: the centre column
    assert uv[1, 0] < uv[0, 0]                                 # +y (left) lands left in the image
    assert uv[0, 1] < cam.height / 2                           # pitched down: the horizon sits high


@pytest.mark.parametrize("c", range(6))
def test_rays_and_projection_are_inverse(c):
    cam = nuscenes_like_rig(64, 40).cameras[c]
    rays = cam.rays_ego()
    origin = cam.cam_to_ego()[:3, 3]
    pts = origin + rays.reshape(-1, 3) * 7.0                    # 7 m along every pixel's ray
    uv, z = cam.project(pts)
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    assert np.allclose(uv, np.stack([u, v], -1).reshape(-1, 2), atol=1e-6)
    assert (z > 0).all()


def test_rig_covers_all_directions():
    rig = nuscenes_like_rig()
    ang = np.radians(np.arange(0, 360, 5))
    pts = np.stack([15 * np.cos(ang), 15 * np.sin(ang), np.full_like(ang, 0.5)], -1)
    seen = np.zeros(len(pts), bool)
    for cam in rig.cameras:
        uv, z = cam.project(pts)
        seen |= (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    assert seen.all()


def test_grid_convention():
    g = BevGrid(100, 0.5)
    c = g.cell_centres()
    assert np.allclose(c[0, 0], (24.75, 24.75)) and np.allclose(c[-1, -1], (-24.75, -24.75))
    assert np.allclose(g.to_cell(c.reshape(-1, 2)), np.stack(np.meshgrid(np.arange(100), np.arange(100),
                                                                         indexing="ij"), -1).reshape(-1, 2) + 0.5)


def test_calibration_round_trip_and_validation():
    rig = nuscenes_like_rig(96, 64)
    back = Rig.from_json(rig.to_json())
    assert back == rig
    bad = rig.to_json()
    bad["cameras"][1]["name"] = bad["cameras"][0]["name"]
    with pytest.raises(InputError, match="distinct"):
        Rig.from_json(bad)
    with pytest.raises(InputError, match="implausible"):
        Camera.from_json({**rig.to_json()["cameras"][0], "hfov_deg": 0})
    with pytest.raises(InputError, match="bad camera"):
        Camera.from_json({"name": "x"})


def test_pose_transforms_are_inverse_and_relative_motion():
    p, q = Pose(10.0, -3.0, 0.7), Pose(12.0, -1.0, 0.9)
    pts = np.random.default_rng(0).normal(size=(20, 2)) * 10
    assert np.allclose(p.to_ego(p.to_world(pts)), pts)
    dx, dy, dyaw = q.relative_to(p)
    assert np.allclose(p.to_world(np.array([[dx, dy]]))[0], (q.x, q.y))
    assert dyaw == pytest.approx(0.2)


def test_source_cells_follow_the_pose_transform():
    """A current cell's source position in the previous grid is the previous ego frame's view of the
    same world point (Pose.relative_to / to_ego), for a turn plus a sideways and forward move."""
    g = BevGrid(100, 0.5)
    prev, now = Pose(3.0, 1.0, 0.3), Pose(5.5, 2.2, 0.45)
    rows, cols = g.source_cells(now.relative_to(prev))
    world = now.to_world(g.cell_centres().reshape(-1, 2))
    expect = g.to_cell(prev.to_ego(world)) - 0.5
    assert np.allclose(np.stack([rows.ravel(), cols.ravel()], -1), expect, atol=1e-9)
