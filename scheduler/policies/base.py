"""What a policy sees and what it may decide.

The executor (scheduler/stream.py) asks the policy whenever the backbone lane can take a new frame.
The policy sees the samples that have arrived (at least one camera captured) and were neither taken
nor dropped, the learnt latency model and the predicted time the BEV lane frees up, and answers with
one decision: run a sample (which cameras, which variant), skip a sample, or wait.  Taking or skipping
a sample drops every older one still pending — the latest frame wins, as in streaming perception.
Policies are stateless: everything they need is in the view, so one policy object can serve many runs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from edgert.errors import InputError
from scheduler.latency import LatencyModel


class Rung(str, enum.Enum):
    """The degradation ladder of the deadline policy, best first (the other policies only run FULL)."""
    FULL = "full"                  # every camera, full variant
    REUSE = "reuse"                # refresh some cameras (in rotation), the rest from the warped previous BEV
    DROP_CAMS = "drop_cams"        # refresh only the highest-priority cameras
    SMALL = "small"                # the smaller variant
    FORECAST = "forecast"          # no new output: the previous one is forecast to the query time
    SKIP = "skip"                  # no new output and nothing to forecast


@dataclass(frozen=True)
class Pending:
    """A sample that has (partly) arrived: per camera its capture time, None where the frame is missing."""
    index: int
    t_us: int
    cam_ready_us: tuple[int | None, ...]

    @property
    def cams(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.cam_ready_us) if t is not None)

    @property
    def complete_at_us(self) -> int:
        return max(t for t in self.cam_ready_us if t is not None)

    def ready_at_us(self, cams: tuple[int, ...]) -> int:
        return max(self.cam_ready_us[c] for c in cams)     # type: ignore[type-var]


@dataclass(frozen=True)
class SchedulerView:
    now_us: int
    pending: tuple[Pending, ...]           # oldest first
    next_arrival_us: int | None            # first capture of the next sample not yet arrived
    period_us: int                         # sample period (estimated from the stream)
    budget_us: int                         # an output is due budget_us after its frames' capture completion
    variants: tuple[str, ...]              # full first
    cam_priority: tuple[int, ...]          # most important first
    cam_refreshed: tuple[int | None, ...]  # per camera, the sample index it was last refreshed from
    bev_free_us: int                       # predicted time the BEV lane can start the next fuse
    has_prev_output: bool
    latency: LatencyModel
    cam_refreshed_t_us: tuple[int | None, ...] = ()     # per camera, that sample's reference time
    cam_refreshed_variant: tuple[str | None, ...] = ()  # and the variant that refreshed it
    variant_quality: tuple[float | None, ...] = ()      # per variant, declared offline accuracy (full = 1)
    variants_share_state: bool = True      # False: fusing with another variant than the last resets the BEV
    last_variant: str | None = None        # the variant of the latest fuse (None before any)

    def complete(self) -> list[Pending]:
        return [p for p in self.pending if p.complete_at_us <= self.now_us]

    def deadline_us(self, p: Pending, cams: tuple[int, ...]) -> int:
        """When an output of `p` from `cams` is due: the last of their captures + the budget (the
        trigger spread between cameras is not charged to the model)."""
        return p.ready_at_us(cams) + self.budget_us

    def predict_finish_us(self, p: Pending, cams: tuple[int, ...], variant: str,
                          conservative: bool = False) -> int | None:
        """When an output of `p` from `cams` with `variant` would be ready if started now; None if a
        stage of it was never measured."""
        costs = [self.latency.predict_ms(s, variant, len(cams), conservative) for s in ("backbone", "fuse", "heads")]
        if any(c is None for c in costs):
            return None
        b_end = max(self.now_us, p.ready_at_us(cams)) + costs[0] * 1000
        return round(max(b_end, self.bev_free_us) + (costs[1] + costs[2]) * 1000)


@dataclass(frozen=True)
class Run:
    index: int
    cams: tuple[int, ...]
    variant: str
    rung: Rung = Rung.FULL


@dataclass(frozen=True)
class Skip:
    index: int
    rung: Rung = Rung.SKIP


@dataclass(frozen=True)
class Wait:
    until_us: int


Decision = Run | Skip | Wait


class Policy:
    """Subclasses set `name`, take their own options dataclass and implement `decide`."""
    name: ClassVar[str] = ""
    forecast_outputs: bool = False    # consumers should forecast this policy's outputs to the query time

    def decide(self, view: SchedulerView) -> Decision:
        raise NotImplementedError(f"policy {type(self).__name__} does not implement decide()")


def wait_for_complete(view: SchedulerView) -> Wait:
    """The wait of a policy that only takes complete samples and has none yet."""
    if not view.pending:
        raise InputError("a policy was asked to decide with nothing pending")   # executor invariant
    return Wait(min(p.complete_at_us for p in view.pending))


def newest_full_run(view: SchedulerView) -> "Run | Wait":
    """The newest complete sample with all its cameras on the full variant, or the wait until one is
    complete (latest's whole decision, and shrinking-tail's candidate)."""
    complete = view.complete()
    if not complete:
        return wait_for_complete(view)
    newest = complete[-1]
    return Run(newest.index, newest.cams, view.variants[0])
