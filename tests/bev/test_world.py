"""The synthetic world: deterministic per (seed, time), objects move with their velocities, ground
truth agrees with what the cameras see, the route stays on the road."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("cv2")

from edgert.bev.rig import nuscenes_like_rig  # noqa: E402
from edgert.bev.schema import BOX_FIELDS, CLASSES  # noqa: E402
from edgert.bev.world import World, WorldOptions  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return World(nuscenes_like_rig(96, 64), WorldOptions(seed=4))


def test_samples_are_deterministic_and_random_access(world):
    a = world.sample(30)
    b = World(nuscenes_like_rig(96, 64), WorldOptions(seed=4)).sample(30)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert np.array_equal(a.gt_grid, b.gt_grid) and np.array_equal(a.gt_boxes, b.gt_boxes)
    c = World(nuscenes_like_rig(96, 64), WorldOptions(seed=5)).sample(30)
    assert not np.array_equal(a.gt_grid, c.gt_grid)


def test_shapes_trigger_offsets_and_classes(world):
    s = world.sample(12)
    assert len(s.frames) == 6 and all(f.shape == (64, 96, 3) and f.dtype == np.uint8 for f in s.frames)
    assert s.t_us == 1_000_000
    offs = [t - s.t_us for t in s.frame_t_us]
    assert offs == [int(c.trigger_offset_ms * 1000) for c in world.rig.cameras]
    assert s.gt_grid.shape == (100, 100) and s.gt_grid.max() < len(CLASSES)
    assert s.gt_boxes.shape[1] == len(BOX_FIELDS)
    assert (s.gt_grid == CLASSES.index("road")).mean() > 0.1       # it drives on a road network


def test_ego_stays_on_its_lane_and_moves_at_speed(world):
    o = world.o
    for i in range(0, 1200, 37):
        p = world.pose(i / 12)
        L, half = o.road_spacing_m, o.road_width_m / 2
        on_road = abs(p.x - round(p.x / L) * L) < half or abs(p.y - round(p.y / L) * L) < half
        assert on_road, (i, p)
    a, b = world.pose(10.0), world.pose(11.0)
    assert 0.7 * o.ego_speed_mps < math.hypot(b.x - a.x, b.y - a.y) < 1.3 * o.ego_speed_mps


def test_boxes_match_the_grid_and_move_with_their_velocity(world):
    s0, s1 = world.sample(60), world.sample(61)
    cls_names = [CLASSES[int(c)] for c in s0.gt_boxes[:, 0]]
    assert {"car", "pedestrian"} & set(cls_names)
    for box in s0.gt_boxes:
        r, c = world.rig.grid.to_cell(box[None, 1:3])[0].astype(int)
        if 0 <= r < 100 and 0 <= c < 100:
            assert s0.gt_grid[r, c] in (int(box[0]), CLASSES.index("car"), CLASSES.index("truck"))
    # a moving car: its world position one sample later = position + velocity * dt
    w0 = {(int(b[0]), round(float(b[8]), 2), round(float(b[9]), 2)): b for b in s0.gt_boxes if abs(b[8]) + abs(b[9]) > 3}
    moved = 0
    for b in s1.gt_boxes:
        key = (int(b[0]), round(float(b[8]), 2), round(float(b[9]), 2))
        if key not in w0:
            continue
        p0 = s0.pose.to_world(w0[key][None, 1:3])[0]
        p1 = s1.pose.to_world(b[None, 1:3])[0]
        c, sn = math.cos(s0.pose.yaw), math.sin(s0.pose.yaw)
        v = np.array([c * w0[key][8] - sn * w0[key][9], sn * w0[key][8] + c * w0[key][9]])   # ego -> world
        if np.linalg.norm(p1 - (p0 + v / 12)) < 0.05:
            moved += 1
    assert moved >= 1


def test_objects_are_visible_in_the_cameras(world):
    s = world.sample(60)
    box = max(s.gt_boxes, key=lambda b: -np.hypot(b[1], b[2]) if CLASSES[int(b[0])] in ("car", "truck") else -1e9)
    hit = False
    for cam, img in zip(world.rig.cameras, s.frames):
        uv, z = cam.project(np.array([[box[1], box[2], box[3]]]))
        u, v = uv[0]
        if z[0] > 1 and 0 <= u < cam.width and 0 <= v < cam.height:
            # a vehicle's pixel is saturated paint, not grey asphalt or green grass
            px = img[int(v), int(u)].astype(int)
            hit = hit or (px.max() - px.min() > 40 or px.max() < 50 or px.min() > 190)
    assert hit
