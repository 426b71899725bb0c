"""`GroundTruthStages`: a SIMULATION of a BEV model, for studying policies without one.

Its "model" reads the ground truth of the sample whose frames it was given (looked up by the frame
arrays' identity, so it must be built on the very samples that are streamed), so every effect the
scheduler can have on accuracy is reproduced while the model's own errors are not:
- a camera not refreshed leaves its sector (cells and boxes nearest its mounting yaw) to the previous
  BEV, warped by ego motion with scheduler/warp.py — stale, and wrong for moving objects;
- no previous BEV (reset) leaves those sectors empty;
- the smaller variant sees a coarser grid and noisier box centres;
- it declares each variant's offline quality (scheduler.stages.DeclaresQuality): the mean BEV IoU
  of the smaller variant's grid against the ground truth over its samples, as a model would carry
  the figure measured on calibration data;
- its costs are declared (SimCost: fixed + per-camera ms per stage, the smaller variant a fraction of
  them, optional jitter) so runs are exact and fast; `SimCost.measure` busy-waits them instead, for
  exercising the timing path.
Full-variant output with every camera is exactly the ground truth: offline accuracy is 1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from edgert.bev.rig import Rig
from edgert.bev.schema import BOX_FIELDS, Pose, RigSample, empty_boxes
from edgert.errors import InputError
from scheduler.forecast import boxes_to_frame
from scheduler.scoring import IouAccumulator
from scheduler.stages import Motion
from scheduler.warp import warp_bev

_X, _Y = BOX_FIELDS.index("x"), BOX_FIELDS.index("y")


@dataclass(frozen=True)
class SimCost:
    """Declared stage costs in ms at speed factor 1."""
    backbone_fixed_ms: float = 2.0
    backbone_per_cam_ms: float = 10.0
    fuse_fixed_ms: float = 4.0
    fuse_per_cam_ms: float = 2.0
    heads_ms: float = 4.0
    small_scale: float = 0.35           # a smaller variant costs this fraction of the full one
    jitter: float = 0.0                 # relative, uniform in ±jitter
    seed: int = 0
    measure: bool = False               # busy-wait the cost and let the executor time it

    def cost_ms(self, stage: str, n_cams: int, small: bool) -> float:
        base = {"backbone": self.backbone_fixed_ms + self.backbone_per_cam_ms * n_cams,
                "fuse": self.fuse_fixed_ms + self.fuse_per_cam_ms * n_cams, "heads": self.heads_ms}.get(stage)
        if base is None:
            raise InputError(f"unknown stage {stage!r} (known: backbone, fuse, heads)")
        return base * (self.small_scale if small else 1.0)


@dataclass(frozen=True)
class OracleOptions:
    small_grid_factor: int = 2          # the smaller variant's grid is this many times coarser
    small_box_noise_m: float = 0.3      # and its box centres carry this much noise (std)
    stale_score: float = 0.5            # score multiplier of boxes carried over from the previous BEV
    seed: int = 0


@dataclass(frozen=True)
class _Feats:
    sample: RigSample
    cams: tuple[int, ...]


@dataclass(frozen=True)
class OracleBev:
    grid: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


class GroundTruthStages:
    """BevStages from ground truth (a simulation; see the module docstring)."""

    def __init__(self, samples: Iterable[RigSample], rig: Rig, cost: SimCost | None = None,
                 options: OracleOptions | None = None, variants: tuple[str, ...] = ("full", "small")):
        self.variants = variants
        self.rig, self.grid = rig, rig.grid
        self.cost, self.options = cost or SimCost(), options or OracleOptions()
        self._samples = list(samples)                   # keeps the frames alive: ids stay unique
        self._by_frame = {id(f): s for s in self._samples for f in s.frames if f is not None}
        self._yaws = np.radians([c.yaw_deg for c in rig.cameras])
        xy = self.grid.cell_centres()
        self._cell_cam = self._sector(xy[..., 0], xy[..., 1])
        self._rng = np.random.default_rng(self.cost.seed)
        self._quality: dict[str, float | None] = {}

    def _sector(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the camera whose mounting yaw is nearest each point's azimuth."""
        az = np.arctan2(y, x)[..., None]
        d = np.abs((az - self._yaws + np.pi) % (2 * np.pi) - np.pi)
        return np.argmin(d, axis=-1)

    # -- cost ----------------------------------------------------------------------------------
    def declared_cost_ms(self, stage: str, variant: str, n_cams: int) -> float | None:
        if self.cost.measure:
            return None
        return self._draw_cost_ms(stage, variant, n_cams)

    def declared_quality(self, variant: str) -> float | None:
        if variant == self.variants[0]:
            return 1.0
        if variant not in self._quality:
            acc = IouAccumulator()
            for s in self._samples[::4]:                 # every 4th sample is plenty for a mean IoU
                if s.gt_grid is not None:
                    acc.add(self._coarse(s.gt_grid), s.gt_grid)
            mean = acc.mean()
            self._quality[variant] = float(mean) if np.isfinite(mean) else None
        return self._quality[variant]

    def _draw_cost_ms(self, stage: str, variant: str, n_cams: int) -> float:
        ms = self.cost.cost_ms(stage, n_cams, variant != self.variants[0])
        if self.cost.jitter:
            ms *= 1.0 + self._rng.uniform(-self.cost.jitter, self.cost.jitter)
        return ms

    def _spend(self, stage: str, variant: str, n_cams: int) -> None:
        if self.cost.measure:
            end = time.perf_counter() + self._draw_cost_ms(stage, variant, n_cams) / 1000.0
            while time.perf_counter() < end:
                pass

    # -- stages --------------------------------------------------------------------------------
    def backbone(self, images: list[np.ndarray], cams: list[int], variant: str) -> object:
        self._spend("backbone", variant, len(cams))
        found = {id(self._by_frame.get(id(im))) for im in images}
        sample = self._by_frame.get(id(images[0])) if images else None
        if sample is None or len(found) != 1:
            raise InputError("GroundTruthStages got frames that are not (all) from one of its samples")
        return _Feats(sample, tuple(cams))

    def fuse(self, feats: object, cams: list[int], prev_bev: object | None, ego_motion: Motion | None,
             variant: str) -> object:
        self._spend("fuse", variant, len(cams))
        assert isinstance(feats, _Feats)
        s = feats.sample
        if s.gt_grid is None or s.gt_boxes is None:
            raise InputError(f"GroundTruthStages needs ground truth; sample {s.index} has none")
        small = variant != self.variants[0]
        fresh_grid = self._coarse(s.gt_grid) if small else s.gt_grid
        fresh = np.isin(self._cell_cam, cams)
        gt = np.asarray(s.gt_boxes, np.float32).reshape(-1, len(BOX_FIELDS))
        gt_fresh = np.isin(self._sector(gt[:, _X], gt[:, _Y]), cams) if len(gt) else np.zeros(0, bool)
        boxes = gt[gt_fresh].copy()
        scores = np.full(len(boxes), 0.9 if small else 1.0, np.float32)
        if small and len(boxes):
            rng = np.random.default_rng((self.options.seed, s.index))
            boxes[:, [_X, _Y]] += rng.normal(0.0, self.options.small_box_noise_m, (len(boxes), 2))
        if prev_bev is None or ego_motion is None:
            grid = np.where(fresh, fresh_grid, 0).astype(np.uint8)
            return OracleBev(grid, boxes, scores)
        assert isinstance(prev_bev, OracleBev)
        grid = np.where(fresh, fresh_grid, warp_bev(prev_bev.grid, ego_motion, self.grid)).astype(np.uint8)
        old = boxes_to_frame(prev_bev.boxes, Pose(0.0, 0.0, 0.0), Pose(*ego_motion))
        keep = ~np.isin(self._sector(old[:, _X], old[:, _Y]), cams) if len(old) else np.zeros(0, bool)
        return OracleBev(grid, np.concatenate([boxes, old[keep]]),
                         np.concatenate([scores, prev_bev.scores[keep] * self.options.stale_score]))

    def heads(self, bev: object, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert isinstance(bev, OracleBev)
        self._spend("heads", variant, 0)
        return bev.grid.copy(), bev.boxes.copy() if len(bev.boxes) else empty_boxes(), bev.scores.copy()

    def _coarse(self, grid: np.ndarray) -> np.ndarray:
        f = self.options.small_grid_factor
        n = grid.shape[0]
        return np.repeat(np.repeat(grid[::f, ::f], f, 0), f, 1)[:n, :n]
