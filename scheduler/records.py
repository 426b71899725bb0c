"""What a streaming run records: one OutputRecord per output, one FrameRecord per input sample.

Kept apart from the executor so that metrics, reports and the CLI read runs without importing it."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from edgert.bev.rig import BevGrid
from edgert.bev.schema import BevOutput, RigSample
from scheduler.latency import LatencyModel
from scheduler.policies.base import Rung


class Fate(str, enum.Enum):
    PROCESSED = "processed"      # an output was computed from it
    DROPPED = "dropped"          # a newer sample was taken first
    FORECAST = "forecast"        # skipped on purpose; the previous output is forecast over it
    SKIPPED = "skipped"          # skipped on purpose (or no frame readable) with nothing to forecast


@dataclass(frozen=True)
class OutputRecord:
    output: BevOutput
    source_index: int                 # the sample whose frames it used
    source_t_us: int                  # that sample's reference time (what staleness counts from, as in sAP)
    capture_done_us: int              # the last capture among `cams`: the moment the input existed
    backbone_start_us: int            # virtual times
    fuse_start_us: int
    finish_us: int
    variant: str
    cams: tuple[int, ...]             # cameras refreshed from this sample
    rung: Rung
    reused_prev: bool                 # cameras not refreshed came from the previous BEV (ego-motion warped)
    forecast: bool                    # consumers forecast it to the query time (velocity update)
    deadline_met: bool

    @property
    def latency_ms(self) -> float:
        """End-to-end latency: finish − capture completion of the frames used (not the reference
        time: the rig's trigger spread is not the model's to spend; staleness keeps that)."""
        return (self.finish_us - self.capture_done_us) / 1000.0

    def to_json(self) -> dict:
        return {"source_index": self.source_index, "source_t_us": self.source_t_us,
                "capture_done_us": self.capture_done_us,
                "backbone_start_us": self.backbone_start_us, "fuse_start_us": self.fuse_start_us,
                "finish_us": self.finish_us, "latency_ms": round(self.latency_ms, 3), "variant": self.variant,
                "cams": list(self.cams), "rung": self.rung.value, "reused_prev": self.reused_prev,
                "forecast": self.forecast, "deadline_met": self.deadline_met}


@dataclass(frozen=True)
class FrameRecord:
    index: int
    t_us: int
    fate: Fate
    rung: Rung | None = None


@dataclass
class StreamResult:
    policy: str
    budget_ms: float
    speed_factor: float
    period_us: int
    outputs: list[OutputRecord]
    frames: list[FrameRecord]
    truth: list[RigSample]                 # the samples without their images (for metrics)
    queue_depth: list[tuple[int, int]]     # (virtual t_us, complete samples pending) at each decision
    fusion_resets: int                     # temporal fusion restarted (gap or pose jump) after the first
    grid: BevGrid                          # the rig's BEV grid (outputs and ground truth)
    latency_model: LatencyModel = field(repr=False)

    @property
    def max_queue_depth(self) -> int:
        return max((d for _, d in self.queue_depth), default=0)

    def to_json(self) -> dict:
        return {"policy": self.policy, "budget_ms": self.budget_ms, "speed_factor": self.speed_factor,
                "period_us": self.period_us, "max_queue_depth": self.max_queue_depth,
                "fusion_resets": self.fusion_resets, "outputs": [o.to_json() for o in self.outputs],
                "frames": [{"index": f.index, "t_us": f.t_us, "fate": f.fate.value,
                            "rung": f.rung.value if f.rung else None} for f in self.frames]}
