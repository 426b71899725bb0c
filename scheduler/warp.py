"""Warp a BEV grid or BEV feature map from a previous ego frame into the current one.

Temporal fusion (BEVFormer's "previous BEV aligned by ego motion") and the scheduler's reuse of the
previous BEV for cameras not refreshed both need the same operation, so it lives here once and the
model side imports it.

Grid convention (edgert.bev.rig.BevGrid): `size` x `size` cells of `cell_m`; row 0 is the front
(+x), column 0 the left (+y); cell (r, c) has its centre at x = half_m − (r + 0.5)·cell_m,
y = half_m − (c + 0.5)·cell_m (BevGrid.cell_centres).  Driving forward by k cells therefore moves
everything k rows down (towards larger r).

`motion` = (dx_m, dy_m, dyaw_rad) is the current pose in the previous pose's ego frame
(Pose.relative_to).  A current-frame point p maps to the previous frame as R(dyaw)·p + (dx, dy); each
output cell samples the previous map there (backward warping, so every cell gets exactly one value).
Cells that fall outside the previous map get `fill`.
"""
from __future__ import annotations

import math

import numpy as np

from edgert.bev.rig import BevGrid
from edgert.errors import InputError
from scheduler.stages import Motion


def invert_motion(motion: Motion) -> Motion:
    """The previous pose in the current frame: the motion that undoes `motion`."""
    dx, dy, dyaw = motion
    c, s = math.cos(dyaw), math.sin(dyaw)
    return (-(c * dx + s * dy), -(-s * dx + c * dy), -dyaw)


def source_cells(motion: Motion, grid: BevGrid) -> tuple[np.ndarray, np.ndarray]:
    """For every cell of the current grid, the fractional (row, col) it comes from in the previous
    grid (BevGrid.source_cells), each [size, size]."""
    return grid.source_cells(motion)


def warp_bev(bev: np.ndarray, motion: Motion, grid: BevGrid, *, interpolation: str = "nearest",
             fill: float = 0) -> np.ndarray:
    """`bev` [size, size] (a class grid) or [C, size, size] (features) from the previous ego frame,
    resampled into the current one.  `interpolation` "nearest" (class grids: no invented classes) or
    "bilinear" (features).  Same dtype and shape as the input."""
    arr = np.asarray(bev)
    if arr.ndim not in (2, 3) or arr.shape[-2:] != (grid.size, grid.size):
        raise InputError(f"BEV map must be [{grid.size}, {grid.size}] or [C, {grid.size}, {grid.size}], "
                         f"got {list(arr.shape)}")
    maps = arr[None] if arr.ndim == 2 else arr
    rows, cols = source_cells(motion, grid)
    n = grid.size
    if interpolation == "nearest":
        r, c = np.floor(rows + 0.5).astype(np.int64), np.floor(cols + 0.5).astype(np.int64)
        inside = (r >= 0) & (r < n) & (c >= 0) & (c < n)
        out = maps[:, np.clip(r, 0, n - 1), np.clip(c, 0, n - 1)]
        out = np.where(inside[None], out, np.asarray(fill, arr.dtype))
    elif interpolation == "bilinear":
        r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
        fr, fc = rows - r0, cols - c0
        out = np.zeros(maps.shape, np.float64)
        weight = np.zeros(rows.shape, np.float64)
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            rr, cc = r0 + dr, c0 + dc
            ok = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
            w = np.where(ok, w, 0.0)
            out += w[None] * maps[:, np.clip(rr, 0, n - 1), np.clip(cc, 0, n - 1)]
            weight += w
        out = np.where(weight[None] > 0.999, out, fill)   # a corner outside the map: fill, not a dimmed edge
        out = out.astype(arr.dtype) if np.issubdtype(arr.dtype, np.floating) else np.rint(out).astype(arr.dtype)
    else:
        raise InputError(f"unknown interpolation {interpolation!r} (known: bilinear, nearest)")
    return out[0] if arr.ndim == 2 else out
