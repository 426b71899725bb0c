"""One `edgert bev run`: a rig source, a BEV model's stages, one or more policies on the virtual clock
(or, `realtime`, on real threads against the wall clock: scheduler/live.py), the streaming metrics of each against an offline run of every frame, and optional plots / MQTT.

Samples are read once and replayed to every policy (the same frames, the same ground truth), so the
policies differ only in what they schedule.  The offline reference is a `fifo` run without a
deadline: every frame processed, scored against its own ground truth.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterable

from edgert.bev.schema import RigSample
from edgert.errors import InputError
from scheduler.metrics import StreamMetrics, evaluate
from scheduler.policies import known_policies, make_policy
from scheduler.records import StreamResult
from scheduler.stages import BevStages
from scheduler.stream import StreamOptions, run_stream

StagesFactory = Callable[[list[RigSample]], BevStages]


@dataclass(frozen=True)
class SessionOptions:
    policies: tuple[str, ...] = ("deadline",)
    budget_ms: float = 83.0
    speed_factor: float = 1.0
    seconds: float | None = None          # read at most this much of the source (required for synthetic)
    offline_reference: bool = True
    realtime: bool = False                # real threads on the wall clock (scheduler/live.py), not the virtual clock

    def __post_init__(self):
        known = known_policies()
        for p in self.policies:
            if p not in known:
                raise InputError(f"unknown policy {p!r} (known: {', '.join(known)})")
        if not (self.speed_factor > 0 and self.budget_ms > 0):
            raise InputError("speed factor and budget must be positive")


@dataclass
class SessionResult:
    metrics: dict[str, StreamMetrics]
    runs: dict[str, StreamResult]
    offline: StreamResult | None
    samples: int
    events: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"samples": self.samples, "events": self.events,
                "policies": {k: m.to_json() for k, m in self.metrics.items()}}


def take(samples: Iterable[RigSample], seconds: float | None, rate_hz: float) -> list[RigSample]:
    n = None if seconds is None else max(1, int(round(seconds * rate_hz)))
    out = list(itertools.islice(samples, n))
    if not out:
        raise InputError("the source delivered no samples")
    return out


def run_session(samples: list[RigSample], make_stages: StagesFactory, options: SessionOptions,
                rig=None, on_policy: Callable[[str, StreamMetrics], None] | None = None,
                meter=None) -> SessionResult:
    """`meter`: a started devices.meter.EnergyMeter (a real power sensor); each policy's run is metered
    as a whole and reported as energy per output (the stages really run; the speed factor stretches
    only the virtual clock, so this is the energy of the work done, not of an emulated device)."""
    events = [f"sample {s.index}: {e}" for s in samples for e in s.events]
    offline = None
    if options.offline_reference:
        offline = run_stream(samples, make_stages(samples), make_policy("fifo"),
                             StreamOptions(budget_ms=1e9, speed_factor=1.0, rig=rig))
    metrics, runs = {}, {}
    for name in options.policies:
        t0 = meter.now_ns() if meter is not None else 0
        stream_opts = StreamOptions(budget_ms=options.budget_ms, speed_factor=options.speed_factor, rig=rig)
        if options.realtime:
            from scheduler.live import run_live
            res = run_live(samples, make_stages(samples), make_policy(name), stream_opts)
        else:
            res = run_stream(samples, make_stages(samples), make_policy(name), stream_opts)
        energy_mj = _energy_mj(meter, t0)
        runs[name] = res
        metrics[name] = evaluate(res, offline, energy_mj=energy_mj)
        if on_policy:
            on_policy(name, metrics[name])
    return SessionResult(metrics, runs, offline, len(samples), events)


def _energy_mj(meter, t0_ns: int) -> float | None:
    if meter is None:
        return None
    from edgert.errors import SensorError
    meter.sample()                                 # close the window with a fresh sample
    try:
        return meter.energy_j(t0_ns, meter.now_ns()) * 1000.0
    except SensorError:
        return None
