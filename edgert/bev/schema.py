"""What flows through BEV perception: rig samples (six frames + pose + ground truth) and model outputs.

Boxes are rows of BOX_FIELDS in the ego frame of their sample (metres, radians, m/s): class index,
centre (x, y, z), size (length along the heading, width, height), yaw about z (0 = facing +x) and the
velocity (vx, vy) relative to the ground, expressed in the ego frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# BEV grid classes (index = value in a ground-truth or predicted grid)
CLASSES = ("background", "road", "car", "truck", "pedestrian", "cone")
OBJECT_CLASSES = ("car", "truck", "pedestrian", "cone")          # the ones that also come as boxes
BOX_FIELDS = ("cls", "x", "y", "z", "length", "width", "height", "yaw", "vx", "vy")


def empty_boxes() -> np.ndarray:
    return np.zeros((0, len(BOX_FIELDS)), np.float32)


@dataclass(frozen=True)
class Pose:
    """Ego pose in the world: position (m) and heading (rad, counter-clockwise from world +x)."""
    x: float
    y: float
    yaw: float

    def to_world(self, xy: np.ndarray) -> np.ndarray:
        """Ego (x, y) [N, 2] -> world (x, y)."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        return np.stack([self.x + c * xy[:, 0] - s * xy[:, 1], self.y + s * xy[:, 0] + c * xy[:, 1]], -1)

    def to_ego(self, xy: np.ndarray) -> np.ndarray:
        """World (x, y) [N, 2] -> ego (x, y)."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        xy = np.asarray(xy, np.float64).reshape(-1, 2) - (self.x, self.y)
        return np.stack([c * xy[:, 0] + s * xy[:, 1], -s * xy[:, 0] + c * xy[:, 1]], -1)

    def relative_to(self, earlier: "Pose") -> tuple[float, float, float]:
        """This pose in `earlier`'s ego frame: (dx, dy, dyaw) -- the ego motion since `earlier`."""
        d = earlier.to_ego(np.array([[self.x, self.y]]))[0]
        dyaw = (self.yaw - earlier.yaw + np.pi) % (2 * np.pi) - np.pi
        return float(d[0]), float(d[1]), float(dyaw)


@dataclass
class RigSample:
    """One timestamp of a rig: a frame per camera (None where it is missing or unreadable), each
    camera's own capture time, the ego pose, and ground truth where the source has it."""
    index: int
    t_us: int                                   # the sample's reference time (the sweep)
    frames: list[np.ndarray | None]             # per camera, (H, W, 3) uint8 RGB, rig order
    frame_t_us: list[int]                       # per camera capture time (reference + trigger offset)
    pose: Pose
    gt_grid: np.ndarray | None = None           # [size, size] uint8 class indices (CLASSES)
    gt_boxes: np.ndarray | None = None          # [N, len(BOX_FIELDS)] float32
    events: list[str] = field(default_factory=list)   # e.g. "corrupt_frame CAM_BACK", "pose_jump 14.2 m"


@dataclass
class BevOutput:
    """What a BEV model produces for one sample: a class grid and boxes, both in the ego frame of the
    sample whose frames it used (`source_t_us`)."""
    grid: np.ndarray                            # [size, size] uint8 class indices
    boxes: np.ndarray                           # [N, len(BOX_FIELDS)]; cls as in CLASSES, + score in extra col
    scores: np.ndarray                          # [N] detection confidence
    source_t_us: int
    pose: Pose
