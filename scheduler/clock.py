"""The virtual clock: every stage call really runs, and its cost in virtual time is its measured wall
time × `speed_factor`.

Running the stages for real keeps the outputs honest (the scheduler's choices change what the model
sees), while advancing a virtual clock instead of sleeping makes runs reproducible and lets a fast
machine stand in for a slower device: `--speed-factor 4` stretches every measured runtime 4× (ASAP,
arXiv 2212.08914, simulates platforms the same way); it is 1 on the real device.  Stages that declare
their cost (simulations, scheduler.stages.DeclaresCost) are not timed: the declared cost is used.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from edgert.errors import InputError
from scheduler.stages import DeclaresCost

T = TypeVar("T")


@dataclass(frozen=True)
class Timed:
    value: object
    cost_us: int          # virtual time the call took (already scaled by the speed factor)


class StageTimer:
    def __init__(self, stages: object, speed_factor: float = 1.0):
        if not speed_factor > 0:
            raise InputError(f"speed factor must be > 0, got {speed_factor}")
        self.speed_factor = speed_factor
        self._declares = stages if isinstance(stages, DeclaresCost) else None

    def call(self, stage: str, variant: str, n_cams: int, fn: Callable[..., T], *args: object) -> Timed:
        """Run `fn(*args)` and return its result with its virtual cost."""
        t0 = time.perf_counter_ns()
        value = fn(*args)
        wall_ns = time.perf_counter_ns() - t0
        declared_ms = self._declares.declared_cost_ms(stage, variant, n_cams) if self._declares else None
        cost_us = declared_ms * 1000.0 if declared_ms is not None else wall_ns / 1000.0
        return Timed(value, max(1, round(cost_us * self.speed_factor)))
