"""Intel (and AMD Zen, same interface) RAPL package energy through the powercap framework.

Layout (Linux Documentation/power/powercap/powercap.rst):
    /sys/class/powercap/intel-rapl:<P>/name                 "package-<P>" (or "psys" on laptops)
    /sys/class/powercap/intel-rapl:<P>/energy_uj            cumulative µJ, wraps to 0
    /sys/class/powercap/intel-rapl:<P>/max_energy_range_uj  the wrap point
Subzones intel-rapl:<P>:<Z> (core, uncore, dram) are parts of the package and are not added again;
"psys" covers the whole platform, package included, so it is not added either.
energy_uj has been readable by root only since Linux 5.10 (CVE-2020-8694, the PLATYPUS attack)."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from devices._sysfs import read_int, read_text, under
from devices.sensors.base import PowerSample, PowerSensor, register_sensor
from edgert.errors import SensorError

POWERCAP_DIR = "/sys/class/powercap"
_PACKAGE = re.compile(r"intel-rapl:\d+$")
PERMISSION_FIX = ("RAPL energy is root-only since Linux 5.10: run as root, or "
                  "`sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj` (until reboot), "
                  "or a udev rule that does the same at boot")


@dataclass
class _Zone:
    name: str
    energy: Path
    max_range_uj: int
    last_raw_uj: int
    wraps: int = 0

    def unwrapped(self, raw_uj: int) -> int:
        if raw_uj < self.last_raw_uj:       # the counter wrapped past max_energy_range_uj
            self.wraps += 1
        self.last_raw_uj = raw_uj
        return raw_uj + self.wraps * self.max_range_uj


@register_sensor
class Rapl(PowerSensor):
    name = "rapl"
    priority = 40
    rate_hz = 50.0

    def __init__(self, zones: list[_Zone], clock_ns: Callable[[], int] = time.monotonic_ns):
        self.zones, self.clock_ns = zones, clock_ns
        self._prev: tuple[int, list[int]] | None = None     # (t_ns, unwrapped per zone)

    @classmethod
    def open(cls, root: Path = Path("/"), clock_ns: Callable[[], int] = time.monotonic_ns,
             **_kw) -> "Rapl":
        base = under(root, POWERCAP_DIR)
        zones = []
        for d in sorted(base.glob("intel-rapl:*")):
            if not _PACKAGE.fullmatch(d.name):
                continue                    # intel-rapl:0:0 etc. are subzones of a package
            name = read_text(d / "name")
            if name == "psys":
                continue
            energy = d / "energy_uj"
            zones.append(_Zone(name, energy, read_int(d / "max_energy_range_uj", PERMISSION_FIX),
                               read_int(energy, PERMISSION_FIX)))
        if not zones:
            raise SensorError(f"no RAPL package zones under {base}")
        return cls(zones, clock_ns)

    def read(self) -> PowerSample:
        t = self.clock_ns()
        per_zone = [z.unwrapped(read_int(z.energy, PERMISSION_FIX)) for z in self.zones]
        power_mw: float | None = None
        rails: dict[str, float] = {}
        if self._prev is not None and t > self._prev[0]:
            dt_ns = t - self._prev[0]
            # µJ/ns = 1e3 W = 1e6 mW
            rails = {z.name: (e - e0) / dt_ns * 1e6 for z, e, e0 in zip(self.zones, per_zone, self._prev[1])}
            power_mw = sum(rails.values())
        self._prev = (t, per_zone)
        return PowerSample(t_ns=t, power_mw=power_mw, energy_uj=sum(per_zone), rails_mw=rails)
