"""A multi-camera rig: intrinsics, extrinsics and trigger offsets, and the projections between the
ego frame, the cameras and the BEV grid.

Frames follow nuScenes' conventions: the ego frame has x forward, y left, z up (metres, origin on the
ground under the rear axle's centre); a camera frame has x right, y down, z along the optical axis.
`nuscenes_like_rig` mirrors nuScenes' six cameras (70° horizontal FOV, the rear one 110°) and their
trigger offsets after the lidar sweep (front-left 7 ms ... back-left 49 ms; ../shared/ANCHORS.md),
at a small image size so that six views render and run on a CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgert.errors import InputError


@dataclass(frozen=True)
class Camera:
    name: str
    width: int
    height: int
    hfov_deg: float
    yaw_deg: float              # mounting yaw about ego z (0 = looking forward, 90 = left)
    x_m: float                  # mounting position in the ego frame
    y_m: float
    z_m: float
    pitch_deg: float = 0.0      # positive looks down
    trigger_offset_ms: float = 0.0

    @property
    def focal_px(self) -> float:
        return 0.5 * self.width / math.tan(math.radians(self.hfov_deg) / 2)

    def intrinsics(self) -> np.ndarray:
        """K (3x3): square pixels, principal point at the image centre."""
        f = self.focal_px
        return np.array([[f, 0, self.width / 2], [0, f, self.height / 2], [0, 0, 1]], np.float64)

    def cam_to_ego(self) -> np.ndarray:
        """4x4 transform taking camera-frame points (x right, y down, z forward) to the ego frame."""
        # camera axes expressed in a forward-looking ego-aligned frame: z_cam = +x, x_cam = -y, y_cam = -z
        base = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], np.float64)
        p = math.radians(self.pitch_deg)
        pitch = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
        y = math.radians(self.yaw_deg)
        yaw = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
        m = np.eye(4)
        m[:3, :3] = yaw @ pitch @ base
        m[:3, 3] = (self.x_m, self.y_m, self.z_m)
        return m

    def ego_to_cam(self) -> np.ndarray:
        return np.linalg.inv(self.cam_to_ego())

    def project(self, pts_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ego-frame points [N, 3] -> (pixel coordinates [N, 2] (u right, v down), depth [N]); points
        behind the camera get depth <= 0 (their pixels are meaningless)."""
        pts = np.asarray(pts_ego, np.float64).reshape(-1, 3)
        m = self.ego_to_cam()
        c = pts @ m[:3, :3].T + m[:3, 3]
        z = c[:, 2]
        safe = np.where(np.abs(z) < 1e-6, 1e-6, z)
        uv = (c[:, :2] / safe[:, None]) * self.focal_px + (self.width / 2, self.height / 2)
        return uv, z

    def rays_ego(self) -> np.ndarray:
        """Unit ray directions [H, W, 3] in the ego frame through every pixel centre."""
        u = (np.arange(self.width) + 0.5 - self.width / 2) / self.focal_px
        v = (np.arange(self.height) + 0.5 - self.height / 2) / self.focal_px
        uu, vv = np.meshgrid(u, v)
        d = np.stack([uu, vv, np.ones_like(uu)], -1)
        d = d @ self.cam_to_ego()[:3, :3].T
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def to_json(self) -> dict:
        return {"name": self.name, "width": self.width, "height": self.height, "hfov_deg": self.hfov_deg,
                "yaw_deg": self.yaw_deg, "x_m": self.x_m, "y_m": self.y_m, "z_m": self.z_m,
                "pitch_deg": self.pitch_deg, "trigger_offset_ms": self.trigger_offset_ms,
                "K": self.intrinsics().round(6).tolist(), "cam_to_ego": self.cam_to_ego().round(9).tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Camera":
        try:
            cam = cls(name=str(d["name"]), width=int(d["width"]), height=int(d["height"]),
                      hfov_deg=float(d["hfov_deg"]), yaw_deg=float(d["yaw_deg"]), x_m=float(d["x_m"]),
                      y_m=float(d["y_m"]), z_m=float(d["z_m"]), pitch_deg=float(d.get("pitch_deg", 0.0)),
                      trigger_offset_ms=float(d.get("trigger_offset_ms", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"bad camera calibration {d!r:.80}: {e}") from None
        if not (8 <= cam.width <= 8192 and 8 <= cam.height <= 8192 and 1.0 <= cam.hfov_deg <= 179.0):
            raise InputError(f"camera {cam.name}: implausible size {cam.width}x{cam.height} or FOV {cam.hfov_deg}")
        return cam


@dataclass(frozen=True)
class BevGrid:
    """The ego-centred BEV grid: `size` x `size` cells of `cell_m`; row 0 is the front (+x), column 0
    the left (+y), so an image of the grid looks like a map with the vehicle driving up."""
    size: int = 100
    cell_m: float = 0.5

    @property
    def half_m(self) -> float:
        return self.size * self.cell_m / 2

    def cell_centres(self) -> np.ndarray:
        """Ego-frame (x, y) of every cell centre, [size, size, 2]."""
        c = (np.arange(self.size) + 0.5) * self.cell_m - self.half_m
        x = -c                                    # row r: x decreases going down
        y = -c                                    # column c: y decreases going right
        xx, yy = np.meshgrid(x, y, indexing="ij")
        return np.stack([xx, yy], -1)

    def source_cells(self, motion: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Backward warp by ego motion: for every cell of the current grid, the fractional (row, col)
        in the previous grid it comes from, each [size, size] (cell r spans [r - 0.5, r + 0.5]).
        `motion` = (dx, dy, dyaw): the current pose in the previous ego frame (Pose.relative_to), so a
        current point p sits at R(dyaw) p + (dx, dy) in the previous frame.  The one place this
        geometry lives: the model's warp (edgert.bev.decode) and the scheduler's (scheduler.warp)."""
        dx, dy, dyaw = motion
        xy = self.cell_centres()
        c, s = math.cos(dyaw), math.sin(dyaw)
        px = c * xy[..., 0] - s * xy[..., 1] + dx
        py = s * xy[..., 0] + c * xy[..., 1] + dy
        return (self.half_m - px) / self.cell_m - 0.5, (self.half_m - py) / self.cell_m - 0.5

    def to_cell(self, xy: np.ndarray) -> np.ndarray:
        """Ego (x, y) [N, 2] -> fractional (row, col) [N, 2]."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        return np.stack([(self.half_m - xy[:, 0]) / self.cell_m, (self.half_m - xy[:, 1]) / self.cell_m], -1)


@dataclass(frozen=True)
class Rig:
    cameras: tuple[Camera, ...]
    grid: BevGrid = field(default_factory=BevGrid)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise InputError(f"unknown camera {name!r}; the rig has {', '.join(self.names)}") from None

    def to_json(self) -> dict:
        return {"cameras": [c.to_json() for c in self.cameras],
                "grid": {"size": self.grid.size, "cell_m": self.grid.cell_m}}

    @classmethod
    def from_json(cls, d: dict) -> "Rig":
        try:
            cams = tuple(Camera.from_json(c) for c in d["cameras"])
            g = d.get("grid", {})
            grid = BevGrid(int(g.get("size", 100)), float(g.get("cell_m", 0.5)))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"bad rig calibration: {e}") from None
        if not cams or len({c.name for c in cams}) != len(cams):
            raise InputError("rig calibration needs one or more cameras with distinct names")
        if not (4 <= grid.size <= 1024 and 0.01 <= grid.cell_m <= 10):
            raise InputError(f"implausible BEV grid {grid.size} x {grid.cell_m} m")
        return cls(cams, grid)


# nuScenes order and trigger offsets (ms after the lidar sweep; ANCHORS.md "Streaming BEV facts")
_NUSCENES = (("CAM_FRONT", 0.0, 1.7, 0.0, 70.0, 15.0), ("CAM_FRONT_RIGHT", -55.0, 1.5, -0.5, 70.0, 22.0),
             ("CAM_BACK_RIGHT", -110.0, 1.0, -0.5, 70.0, 31.0), ("CAM_BACK", 180.0, 0.0, 0.0, 110.0, 40.0),
             ("CAM_BACK_LEFT", 110.0, 1.0, 0.5, 70.0, 49.0), ("CAM_FRONT_LEFT", 55.0, 1.5, 0.5, 70.0, 7.0))


def nuscenes_like_rig(width: int = 160, height: int = 96, grid: BevGrid | None = None) -> Rig:
    """Six cameras around the roof (1.6 m high, 4° down), nuScenes' yaws, FOVs and trigger offsets."""
    cams = tuple(Camera(name, width, height, fov, yaw, x, y, 1.6, pitch_deg=4.0, trigger_offset_ms=off)
                 for name, yaw, x, y, fov, off in _NUSCENES)
    return Rig(cams, grid or BevGrid())
