"""Move boxes between ego frames and forecast them in time (the deadline policy's "forecast" rung).

An output is expressed in the ego frame of the sample it was computed from; the vehicle acts on it
later, from another pose.  `boxes_to_frame` re-expresses it (centre, yaw and velocity) in the query
pose's frame; `forecast_boxes` first moves every box by its velocity over the elapsed time — the
velocity update of streaming AP (Li et al. ECCV 2020; ASAP, arXiv 2212.08914: it consistently helps
stale outputs).  Velocities in BOX_FIELDS are relative to the ground, expressed in the ego frame.
"""
from __future__ import annotations

import numpy as np

from edgert.bev.schema import BOX_FIELDS, Pose

_X, _Y, _YAW, _VX, _VY = (BOX_FIELDS.index(f) for f in ("x", "y", "yaw", "vx", "vy"))


def boxes_to_frame(boxes: np.ndarray, src: Pose, dst: Pose) -> np.ndarray:
    """Boxes in `src`'s ego frame -> the same boxes in `dst`'s ego frame (a copy; extra columns kept)."""
    out = np.array(boxes, np.float32, copy=True)
    if out.ndim != 2:
        out = out.reshape(-1, len(BOX_FIELDS))
    if not len(out):
        return out
    out[:, [_X, _Y]] = dst.to_ego(src.to_world(out[:, [_X, _Y]]))
    dyaw = src.yaw - dst.yaw
    c, s = np.cos(dyaw), np.sin(dyaw)
    vx, vy = out[:, _VX].copy(), out[:, _VY].copy()
    out[:, _VX], out[:, _VY] = c * vx - s * vy, s * vx + c * vy
    out[:, _YAW] = (out[:, _YAW] + dyaw + np.pi) % (2 * np.pi) - np.pi
    return out


def forecast_boxes(boxes: np.ndarray, dt_s: float, src: Pose, dst: Pose) -> np.ndarray:
    """Boxes observed in `src`'s frame, moved by velocity × `dt_s`, expressed in `dst`'s frame."""
    moved = np.array(boxes, np.float32, copy=True)
    if len(moved):
        moved[:, _X] += moved[:, _VX] * dt_s
        moved[:, _Y] += moved[:, _VY] * dt_s
    return boxes_to_frame(moved, src, dst)
