"""Which cameras matter most right now: the ones looking along the direction of travel.

When the deadline policy must drop cameras it drops the ones whose view matters least for what the
vehicle is about to do (RT-BEV, RTSS 2024, prioritises regions by time to collision; the direction of
travel is the simple version): CAM_FRONT first when driving forward, then front-left/right, and so on
around to the back; when reversing, the order turns round.
"""
from __future__ import annotations

import math

from edgert.bev.rig import Rig
from scheduler.stages import Motion


def camera_priority(rig: Rig, motion: Motion | None = None, min_motion_m: float = 0.05) -> tuple[int, ...]:
    """Camera indices (rig order), most important first.  `motion` is the latest ego motion; below
    `min_motion_m` (standing still) forward is assumed."""
    heading = 0.0
    if motion is not None and math.hypot(motion[0], motion[1]) >= min_motion_m:
        heading = math.atan2(motion[1], motion[0])

    def off_axis(i: int) -> float:
        d = math.radians(rig.cameras[i].yaw_deg) - heading
        return abs((d + math.pi) % (2 * math.pi) - math.pi)

    return tuple(sorted(range(len(rig.cameras)), key=lambda i: (round(off_axis(i), 6), i)))
