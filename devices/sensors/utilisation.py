"""The last resort: an estimate from CPU utilisation, power = idle + (max - idle) · util.

Always available and always labelled estimated. Utilisation is the busy share of CPU time between
two reads, from psutil on the real root, else from the "cpu" line of /proc/stat under root
(proc(5): user nice system idle iowait irq softirq steal ...; idle + iowait count as idle).

The default idle/max figures are rough published numbers, not measurements of this machine;
pass idle_mw / max_mw (or a PowerModel) when you know better:
- Raspberry Pi 4: ~2.7 W idle, ~6.3 W under full CPU load (chipwired.com, "How much power a
  Raspberry Pi uses", wall-meter readings).
- Raspberry Pi 5: ~3 W idle, ~8 W under a CPU stress test (figures reported in launch reviews;
  the official supply is rated 27 W to leave room for USB devices).
- Jetson: max = the default nvpmodel power budget in NVIDIA's module data sheets (Nano 10 W,
  Xavier NX 15 W, Orin Nano 15 W); idle is the module's VDD_IN at rest as reported by tegrastats
  users (order of 1.5 W Nano, 4.5 W Orin Nano).
- x86-64 and other CPUs: per core, ~10 W at full load (a 65 W desktop TDP over 6-8 cores) and a
  fifth of that idle."""
from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from devices._sysfs import is_real_root, read_text, under
from devices.detect import detect
from devices.sensors.base import PowerSample, PowerSensor, register_sensor
from edgert.errors import SensorError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PowerModel:
    idle_mw: float
    max_mw: float

    def power_mw(self, util: float) -> float:
        return self.idle_mw + (self.max_mw - self.idle_mw) * min(max(util, 0.0), 1.0)


# device kind (devices.detect) -> rough idle/max board power; see the module docstring.
DEFAULT_MODELS: dict[str, PowerModel] = {
    "raspberry-pi-4": PowerModel(idle_mw=2700, max_mw=6300),
    "raspberry-pi-5": PowerModel(idle_mw=3000, max_mw=8000),
    "jetson-nano": PowerModel(idle_mw=1500, max_mw=10000),
    "jetson-xavier-nx": PowerModel(idle_mw=3500, max_mw=15000),
    "jetson-orin": PowerModel(idle_mw=4500, max_mw=15000),
    "jetson": PowerModel(idle_mw=3500, max_mw=15000),
}
CpuTimes = Callable[[], tuple[float, float]]     # () -> (busy, total) CPU time
FALLBACK_UTIL = 0.5     # only when no CPU times can be read at all
PER_CORE_MAX_MW = 10000.0
PER_CORE_IDLE_MW = 2000.0


def default_model(kind: str, cpu_count: int) -> PowerModel:
    model = DEFAULT_MODELS.get(kind)
    if model is not None:
        return model
    return PowerModel(idle_mw=PER_CORE_IDLE_MW * cpu_count, max_mw=PER_CORE_MAX_MW * cpu_count)


def _proc_stat_times(path: Path) -> tuple[int, int]:
    """(busy, total) jiffies from the aggregate "cpu" line of /proc/stat."""
    text = read_text(path)
    line = text.splitlines()[0] if text else ""
    fields = line.split()
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        raise SensorError(f"{path}: expected a 'cpu user nice system idle ...' line, got {line[:60]!r}")
    try:
        values = [int(v) for v in fields[1:9]]      # guest time is already inside user
    except ValueError:
        raise SensorError(f"{path}: non-numeric CPU times in {line[:60]!r}") from None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values)
    return total - idle, total


def _psutil_times() -> tuple[float, float]:
    import psutil
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(getattr(t, f) for f in ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
                if hasattr(t, f))
    return total - idle, total


@register_sensor
class Utilisation(PowerSensor):
    name = "utilisation"
    estimated = True
    priority = 1000
    rate_hz = 10.0      # jiffies tick at 100-1000 Hz; faster reads see mostly noise

    def __init__(self, model: PowerModel, times: CpuTimes | None, source: str,
                 clock_ns: Callable[[], int] = time.monotonic_ns):
        self.model, self.times, self.source, self.clock_ns = model, times, source, clock_ns
        self._prev = times() if times is not None else (0.0, 0.0)
        self.util = 0.0 if times is not None else FALLBACK_UTIL

    @classmethod
    def open(cls, root: Path = Path("/"), idle_mw: float | None = None, max_mw: float | None = None,
             model: PowerModel | None = None, clock_ns: Callable[[], int] = time.monotonic_ns,
             **_kw) -> "Utilisation":
        if model is None:
            info = detect(root)
            model = default_model(info.kind, info.cpu_count)
        if idle_mw is not None or max_mw is not None:
            model = PowerModel(idle_mw if idle_mw is not None else model.idle_mw,
                               max_mw if max_mw is not None else model.max_mw)
        if model.max_mw < model.idle_mw or model.idle_mw < 0:
            raise SensorError(f"utilisation model needs 0 <= idle_mw <= max_mw, got {model}")
        times, source = cls._source(Path(root))
        return cls(model, times, source, clock_ns)

    @staticmethod
    def _source(root: Path) -> tuple[CpuTimes | None, str]:
        # psutil is optional (the `agent` extra); find_spec checks for it without importing it
        if is_real_root(root) and importlib.util.find_spec("psutil") is not None:
            return _psutil_times, "psutil"
        stat = under(root, "/proc/stat")
        try:
            _proc_stat_times(stat)
        except SensorError as e:
            # Never leave the meter without a sensor: with no CPU times at all the model reports
            # its midpoint, still labelled estimated.
            log.warning("utilisation model: %s; assuming %.0f%% utilisation", e, FALLBACK_UTIL * 100)
            return None, f"fixed {FALLBACK_UTIL:.0%}"
        return (lambda: _proc_stat_times(stat)), str(stat)

    def read(self) -> PowerSample:
        if self.times is not None:
            busy, total = self.times()
            busy0, total0 = self._prev
            if total > total0:      # no tick since the last read: keep the last utilisation
                self.util = min(max((busy - busy0) / (total - total0), 0.0), 1.0)
                self._prev = (busy, total)
        mw = self.model.power_mw(self.util)
        return PowerSample(t_ns=self.clock_ns(), power_mw=mw, rails_mw={"estimated": mw})
