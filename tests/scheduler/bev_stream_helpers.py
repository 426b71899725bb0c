"""A small synthetic BEV stream for scheduler tests: an ego vehicle on a curve at 12 Hz, objects of
the four classes moving in the world, a ground-truth grid (road + objects) and boxes per sample, and
one tiny distinct image per camera (GroundTruthStages finds samples by the frames' identity)."""
from __future__ import annotations

import math

import numpy as np

from edgert.bev.rig import BevGrid, Rig, nuscenes_like_rig
from edgert.bev.schema import BOX_FIELDS, CLASSES, Pose, RigSample

SIZES_M = {"car": (4.5, 1.9), "truck": (8.0, 2.5), "pedestrian": (0.8, 0.8), "cone": (0.5, 0.5)}
SPEEDS_MPS = {"car": 9.0, "truck": 7.0, "pedestrian": 1.4, "cone": 0.0}


def small_rig() -> Rig:
    return nuscenes_like_rig(grid=BevGrid(size=64, cell_m=1.0))


def make_stream(n: int = 96, hz: float = 12.0, speed_mps: float = 8.0, yaw_rate: float = 0.06,
                n_objects: int = 48, seed: int = 0, rig: Rig | None = None) -> list[RigSample]:
    rig = rig or small_rig()
    rng = np.random.default_rng(seed)
    names = list(SIZES_M)
    cls = rng.integers(0, len(names), n_objects)
    length_m = speed_mps * n / hz
    pos = np.stack([rng.uniform(-30, length_m + 30, n_objects), rng.uniform(-25, 25, n_objects)], -1)
    heading = rng.uniform(-math.pi, math.pi, n_objects)
    speed = np.array([SPEEDS_MPS[names[c]] for c in cls]) * rng.uniform(0.5, 1.0, n_objects)
    vel = np.stack([np.cos(heading), np.sin(heading)], -1) * speed[:, None]
    radius = speed_mps / yaw_rate
    xy_cells = rig.grid.cell_centres()
    out = []
    for i in range(n):
        t = i / hz
        pose = Pose(radius * math.sin(yaw_rate * t), radius * (1 - math.cos(yaw_rate * t)), yaw_rate * t)
        world = pos + vel * t
        ego = pose.to_ego(world)
        c, s = math.cos(-pose.yaw), math.sin(-pose.yaw)
        boxes = np.zeros((n_objects, len(BOX_FIELDS)), np.float32)
        boxes[:, 0] = [CLASSES.index(names[k]) for k in cls]
        boxes[:, 1:3] = ego
        boxes[:, 3] = 0.8
        boxes[:, 4:6] = [SIZES_M[names[k]] for k in cls]
        boxes[:, 6] = 1.6
        boxes[:, 7] = (heading - pose.yaw + math.pi) % (2 * math.pi) - math.pi
        boxes[:, 8], boxes[:, 9] = c * vel[:, 0] - s * vel[:, 1], s * vel[:, 0] + c * vel[:, 1]
        cells_world = pose.to_world(xy_cells.reshape(-1, 2)).reshape(xy_cells.shape)
        d_centre = np.hypot(cells_world[..., 0], cells_world[..., 1] - radius)
        grid = np.where(np.abs(d_centre - radius) < 5.0, CLASSES.index("road"), 0).astype(np.uint8)
        for b in boxes:
            rel = xy_cells - b[1:3]
            cy, sy = math.cos(b[7]), math.sin(b[7])
            along, across = rel[..., 0] * cy + rel[..., 1] * sy, -rel[..., 0] * sy + rel[..., 1] * cy
            half_l, half_w = max(b[4] / 2, rig.grid.cell_m / 2), max(b[5] / 2, rig.grid.cell_m / 2)
            inside = (np.abs(along) <= half_l) & (np.abs(across) <= half_w)
            grid[inside] = int(b[0])
        t_us = round(t * 1e6)
        out.append(RigSample(index=i, t_us=t_us, frames=[np.zeros((1, 1, 3), np.uint8) for _ in rig.cameras],
                             frame_t_us=[t_us + round(cam.trigger_offset_ms * 1000) for cam in rig.cameras],
                             pose=pose, gt_grid=grid, gt_boxes=boxes))
    return out
