"""The contract between the streaming scheduler and a BEV model: three separately runnable stages.

The scheduler never looks inside features or BEV states; it only decides which frame, which cameras
and which variant each stage gets, and when.  Splitting the model this way is what lets the backbone
of frame t+1 run on one core while fusion and heads of frame t run on the other, and lets a frame
refresh only some cameras while the rest of the BEV comes from the previous state warped by ego
motion (scheduler/warp.py holds that warp, shared with the model side).

`zoo/bev/` implements `BevStages` for the real model; `scheduler/sim_stages.py` implements it from
ground truth (a simulation for studying policies without a model).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

# The ego motion between two samples: the later pose in the earlier one's ego frame,
# (dx_m, dy_m, dyaw_rad), as edgert.bev.schema.Pose.relative_to returns it.
Motion = tuple[float, float, float]

STAGES = ("backbone", "fuse", "heads")


@runtime_checkable
class BevStages(Protocol):
    """A BEV model as three stages.  Camera indices are in rig order (edgert.bev.rig.Rig.cameras)."""

    variants: tuple[str, ...]          # full first, then cheaper ones, e.g. ("full", "small")
    # Optional (read with getattr, default True): whether `fuse` of one variant can take another
    # variant's BEV state as `prev_bev`.  A real model's variants have different BEV grids and
    # channels, so switching variant is a reset: the scheduler must know what a switch throws away.
    # variants_share_state: bool

    def backbone(self, images: list[np.ndarray], cams: list[int], variant: str) -> object:
        """Per-camera image features of `images` [(H, W, 3) uint8 RGB], one per index in `cams`."""
        ...

    def fuse(self, feats: object, cams: list[int], prev_bev: object | None, ego_motion: Motion | None,
             variant: str) -> object:
        """View transform + temporal fusion: the BEV state of this sample.  The BEV of cameras not in
        `cams` comes from `prev_bev` warped by `ego_motion` (this pose in the previous one's frame);
        `prev_bev` None means reset (start, gap or pose jump)."""
        ...

    def heads(self, bev: object, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(grid [size, size] uint8 class indices, boxes [N, len(BOX_FIELDS)] float32, scores [N])."""
        ...


@runtime_checkable
class DeclaresCost(Protocol):
    """Optional: stages that declare what a call costs instead of being timed (simulations).  None =
    time the call as usual.  The executor multiplies either by its speed factor."""

    def declared_cost_ms(self, stage: str, variant: str, n_cams: int) -> float | None:
        ...


@runtime_checkable
class DeclaresQuality(Protocol):
    """Optional: the offline accuracy of each variant relative to the full one (1.0), as measured when
    the model was built (e.g. BEV IoU of each variant on calibration data).  The deadline policy
    weighs a cheaper variant's accuracy against fresher output with it; without it, its prior."""

    def declared_quality(self, variant: str) -> float | None:
        ...
