"""Base class and registry for power sensors (one sensor per file in devices/sensors/).

A sensor class implements `open(root, **kw)`, which finds the hardware (walking sysfs once, like a
probe should) and raises SensorError naming what is missing; `probe` is `open` that answers None
instead. After that, each `read()` only reads the files found at open time."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from edgert.errors import SensorError
from edgert.registry import Registry

log = logging.getLogger(__name__)

# Rails that carry the whole module/board input; when one is present it is the total, otherwise
# the total is the sum of the rails (a lower bound on boards such as AGX Orin/Xavier that do not
# monitor their input). Names from NVIDIA's Jetson power docs: POM_5V_IN (Nano), VDD_IN (TX2,
# Xavier NX, Orin NX/Nano).
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


@dataclass(frozen=True)
class PowerSample:
    t_ns: int                       # time.monotonic_ns() when read
    power_mw: float | None          # instantaneous total power (None for pure energy counters)
    energy_uj: int | None = None    # cumulative counter (RAPL), unwrapped (monotonic)
    rails_mw: dict[str, float] = field(default_factory=dict)


def total_mw(rails_mw: dict[str, float]) -> float:
    """The input rail if one is monitored, else the sum of the rails."""
    for name in INPUT_RAILS:
        if name in rails_mw:
            return rails_mw[name]
    return sum(rails_mw.values())


class PowerSensor(ABC):
    name: ClassVar[str] = ""
    estimated: ClassVar[bool] = False   # True only for the utilisation model
    priority: ClassVar[int] = 100       # probe_all order: lower is better
    rate_hz: float = 50.0               # >= 50 for sysfs reads, ~10 where a read spawns a process

    @classmethod
    @abstractmethod
    def open(cls, root: Path = Path("/"), **kw) -> "PowerSensor":
        """Find the sensor under `root`; SensorError saying what is missing when it is absent."""

    @classmethod
    def probe(cls, root: Path = Path("/"), **kw) -> "PowerSensor | None":
        """`open`, or None when the sensor is absent on this machine."""
        try:
            return cls.open(root, **kw)
        except SensorError as e:
            log.debug("power sensor %s not available: %s", cls.name, e)
            return None

    @abstractmethod
    def read(self) -> PowerSample:
        """One sample; SensorError on malformed or vanished files."""

    def close(self) -> None:
        """Release what `open` took (processes, bus handles). Reading files holds nothing."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


_SENSORS: Registry[PowerSensor] = Registry("power sensor", "devices.sensors", SensorError)


def register_sensor(cls: type[PowerSensor]) -> type[PowerSensor]:
    return _SENSORS.register(cls.name, cls)
