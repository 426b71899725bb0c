"""Energy over arbitrary time windows from a list of power sensors, with fail-over.

A daemon thread samples the active sensor at its rate_hz (or the rate given) into a ring buffer
of the last `history_s` seconds. Energy is the integral of that series:
- between two samples of a power sensor, power is linear (the trapezoid rule), so a window edge
  inside a sampling interval integrates the interpolated power up to the edge;
- between two samples of one energy-counter sensor (RAPL), the counter difference is exact and
  an edge inside the interval interpolates the counter linearly;
- before the first sample / after the last, the nearest power is held.
`window()` takes a sample when it closes (and when it opens, if the thread is not running), so a
window shorter than one sampling period still gets power × duration.

Every time here (samples, window edges) is on the meter's `clock_ns` (time.monotonic_ns unless
given): a caller timing windows with another clock passes that clock in rather than converting
(edgert's eval harness passes time.perf_counter_ns). A caller that does not want a sample per
window waits until `last_sample_ns` passes the window's end before integrating it.

On SensorError from the active sensor the meter records the failure, calls
on_sensor_change(old, new, reason), moves to the next sensor in the list and carries on; the last
sensor (from probe_all: the utilisation model) is kept even when it fails."""
from __future__ import annotations

import bisect
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from devices.sensors.base import PowerSample, PowerSensor
from edgert.errors import SensorError

log = logging.getLogger(__name__)

_MW_NS_TO_J = 1e-12     # 1 mW · 1 ns = 1e-3 W · 1e-9 s
_UJ_TO_J = 1e-6
MAX_FAILURES = 1000     # failures kept (one line each); the oldest are dropped


@dataclass(frozen=True)
class EnergyWindow:
    joules: float
    duration_s: float
    mean_power_w: float
    estimated: bool         # any sample in the window came from an estimated sensor
    sensor: str             # the sensor(s) that produced it, "a+b" when it changed inside
    samples: int            # samples taken inside [t0, t1]
    t0_ns: int = 0
    t1_ns: int = 0


def _result_field(name: str) -> property:
    def get(self: "MeterWindow"):
        if self.result is None:
            raise SensorError(f"energy window still open: {name} is known once the with-block exits")
        return getattr(self.result, name)
    return property(get)


class MeterWindow:
    """What `EnergyMeter.window()` yields; the EnergyWindow fields are readable after the block."""
    joules = _result_field("joules")
    duration_s = _result_field("duration_s")
    mean_power_w = _result_field("mean_power_w")
    estimated = _result_field("estimated")
    sensor = _result_field("sensor")
    samples = _result_field("samples")

    def __init__(self, t0_ns: int):
        self.t0_ns = t0_ns
        self.result: EnergyWindow | None = None


class EnergyMeter:
    def __init__(self, sensors: list[PowerSensor], rate_hz: float | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 on_sensor_change: Callable[[str, str, str], None] | None = None,
                 history_s: float = 60.0):
        if not sensors:
            raise SensorError("EnergyMeter needs at least one power sensor (see devices.sensors.probe_all)")
        if rate_hz is not None and rate_hz <= 0:
            raise SensorError(f"EnergyMeter rate_hz must be > 0, got {rate_hz}")
        self._sensors = list(sensors)
        self._index = 0
        self._rate_hz = rate_hz
        self._clock_ns = clock_ns
        self._on_change = on_sensor_change
        self._history_ns = int(history_s * 1e9)
        self._lock = threading.RLock()
        # the series, one entry per sample (parallel lists: bisect on _t)
        self._t: list[int] = []
        self._p: list[float | None] = []   # mW; None only for a counter's first sample
        self._e: list[float] = []          # J, cumulative since the meter's first sample
        self._counter: list[bool] = []     # the interval ending here is a counter difference
        self._est: list[bool] = []
        self._name: list[str] = []
        self._last_counter: tuple[PowerSensor, int] | None = None
        self._pruned = False
        self.failures: list[str] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- sensors -------------------------------------------------------------------------------
    @property
    def active_sensor(self) -> PowerSensor:
        return self._sensors[self._index]

    @property
    def estimated(self) -> bool:
        return self.active_sensor.estimated

    @property
    def rate_hz(self) -> float:
        return self._rate_hz or self.active_sensor.rate_hz

    @property
    def last_sample_ns(self) -> int | None:
        """clock_ns() of the newest sample: a window ending by then is bracketed by samples, so its
        energy is interpolated, not extrapolated from the last power held."""
        with self._lock:
            return self._t[-1] if self._t else None

    @property
    def power_mw(self) -> float | None:
        """The latest power (for a counter sensor: over the latest sampling interval)."""
        with self._lock:
            return next((p for p in reversed(self._p) if p is not None), None)

    def _record(self, line: str) -> None:
        if not self.failures or self.failures[-1] != line:
            self.failures.append(line)
            del self.failures[:-MAX_FAILURES]
            log.warning("energy meter: %s", line)

    def _fail_over(self, sensor: PowerSensor, reason: str) -> bool:
        """Record a failure of the active sensor; move to the next. False when it was the last."""
        self._record(f"{sensor.name}: {reason}")
        if self._index + 1 >= len(self._sensors):
            return False
        try:
            sensor.close()
        except (SensorError, OSError) as e:
            self._record(f"{sensor.name}: close failed: {e}")
        self._index += 1
        self._last_counter = None
        new = self.active_sensor.name
        if self._on_change is not None:
            try:
                self._on_change(sensor.name, new, reason)
            except Exception as e:  # user code must not stop the sampling thread; it is recorded
                self._record(f"on_sensor_change raised {type(e).__name__}: {e}")
        return True

    # ---- sampling ------------------------------------------------------------------------------
    def sample(self) -> PowerSample | None:
        """Read the active sensor now (failing over as needed) and add the sample to the series.
        None when even the last sensor failed (the failure is in `failures`)."""
        with self._lock:
            while True:
                sensor = self.active_sensor
                try:
                    s = sensor.read()
                    if s.power_mw is None and s.energy_uj is None:
                        raise SensorError("sample has neither power_mw nor energy_uj")
                except SensorError as e:
                    if not self._fail_over(sensor, str(e)):
                        return None
                    continue
                except Exception as e:  # a bug in one sensor must not stop metering: recorded, next
                    if not self._fail_over(sensor, f"{type(e).__name__}: {e}"):
                        return None
                    continue
                self._append(self._clock_ns(), s, sensor)
                return s

    def _append(self, t: int, s: PowerSample, sensor: PowerSensor) -> None:
        if self._t and t <= self._t[-1]:
            return      # same instant as the last sample (a coarse or fake clock): nothing to add
        counter = (s.energy_uj is not None and self._last_counter is not None
                   and self._last_counter[0] is sensor and bool(self._t))
        if counter:
            assert s.energy_uj is not None and self._last_counter is not None
            de_uj = s.energy_uj - self._last_counter[1]
            p: float | None = de_uj / (t - self._t[-1]) * 1e6     # µJ/ns -> mW
            e = self._e[-1] + de_uj * _UJ_TO_J
        else:
            p = s.power_mw
            e = 0.0
            if self._t:
                pa, pb = self._pair(self._p[-1], p)
                e = self._e[-1] + (pa + pb) / 2 * (t - self._t[-1]) * _MW_NS_TO_J
        self._last_counter = (sensor, s.energy_uj) if s.energy_uj is not None else None
        self._t.append(t)
        self._p.append(p)
        self._e.append(e)
        self._counter.append(counter)
        self._est.append(sensor.estimated)
        self._name.append(sensor.name)
        self._prune(t)

    def _prune(self, now: int) -> None:
        # drop in chunks: amortised O(1), and bisect stays on plain lists
        cut = bisect.bisect_left(self._t, now - self._history_ns)
        if cut > 64 or (cut and cut * 2 > len(self._t)):
            for series in (self._t, self._p, self._e, self._counter, self._est, self._name):
                del series[:cut]
            self._pruned = True

    @staticmethod
    def _pair(pa: float | None, pb: float | None) -> tuple[float, float]:
        """Endpoint powers of a power interval; a missing one (a counter's first sample) holds
        the other."""
        pa = pb if pa is None else pa
        pb = pa if pb is None else pb
        return (pa or 0.0), (pb or 0.0)

    # ---- integration ---------------------------------------------------------------------------
    def _held_power(self, from_end: bool) -> float:
        seq = reversed(self._p) if from_end else iter(self._p)
        return next((p for p in seq if p is not None), 0.0)

    def _energy_at(self, t: int) -> float:
        """Cumulative energy (J) at time t."""
        T = self._t
        i = bisect.bisect_right(T, t)
        if i == 0:
            if self._pruned:
                raise SensorError(f"window starts {(T[0] - t) / 1e9:.3f} s before the meter's "
                                  f"{self._history_ns / 1e9:.0f} s history")
            return self._e[0] - self._held_power(False) * (T[0] - t) * _MW_NS_TO_J
        if i == len(T):
            return self._e[-1] + self._held_power(True) * (t - T[-1]) * _MW_NS_TO_J
        a, b = i - 1, i
        frac = (t - T[a]) / (T[b] - T[a])
        if self._counter[b]:
            return self._e[a] + (self._e[b] - self._e[a]) * frac
        pa, pb = self._pair(self._p[a], self._p[b])
        pt = pa + (pb - pa) * frac
        return self._e[a] + (pa + pt) / 2 * (t - T[a]) * _MW_NS_TO_J

    def now_ns(self) -> int:
        """The meter's clock now (window edges for energy_j are on this clock)."""
        return self._clock_ns()

    def energy_j(self, t0_ns: int, t1_ns: int) -> float:
        """Energy in joules between two clock_ns() readings."""
        if t1_ns < t0_ns:
            raise SensorError(f"energy window ends before it starts ({t0_ns} > {t1_ns})")
        with self._lock:
            if not self._t:
                raise SensorError("no power samples yet: start() the meter or call sample()")
            return self._energy_at(t1_ns) - self._energy_at(t0_ns)

    def summarise(self, t0_ns: int, t1_ns: int) -> EnergyWindow:
        """An EnergyWindow for [t0_ns, t1_ns] from the samples buffered so far."""
        with self._lock:
            joules = self.energy_j(t0_ns, t1_ns)
            # samples bracketing the window say which sensors contributed
            lo = max(bisect.bisect_left(self._t, t0_ns) - 1, 0)
            hi = bisect.bisect_right(self._t, t1_ns)
            hi = min(hi + 1, len(self._t))
            names = list(dict.fromkeys(self._name[lo:hi])) or [self.active_sensor.name]
            estimated = any(self._est[lo:hi]) or (lo >= hi and self.estimated)
            inside = bisect.bisect_right(self._t, t1_ns) - bisect.bisect_left(self._t, t0_ns)
            power_at = self._held_power(True)
        duration_s = (t1_ns - t0_ns) / 1e9
        mean_w = joules / duration_s if duration_s > 0 else power_at / 1000.0
        return EnergyWindow(joules=joules, duration_s=duration_s, mean_power_w=mean_w,
                            estimated=estimated, sensor="+".join(names), samples=inside,
                            t0_ns=t0_ns, t1_ns=t1_ns)

    @contextmanager
    def window(self) -> Iterator[MeterWindow]:
        """`with meter.window() as w: run()`, then w.joules, w.mean_power_w, ..."""
        if not self.running:
            self.sample()
        handle = MeterWindow(self._clock_ns())
        try:
            yield handle
        finally:
            t1 = self._clock_ns()
            self.sample()
            handle.result = self.summarise(handle.t0_ns, t1)

    # ---- thread --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as e:  # the thread must outlive any bug; the failure is recorded
                with self._lock:
                    self._record(f"meter: {type(e).__name__}: {e}")
            deadline += 1.0 / self.rate_hz
            delay = deadline - time.monotonic()
            if delay < 0:       # fell behind (slow sensor): do not try to catch up in a burst
                deadline, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def start(self) -> "EnergyMeter":
        if not self.running:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="edgert-energy-meter", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        """Stop, and close the sensors (the meter owns the sensors it was given; the ones it failed
        over from are closed already)."""
        self.stop()
        with self._lock:
            for sensor in self._sensors[self._index:]:
                try:
                    sensor.close()
                except (SensorError, OSError) as e:
                    self._record(f"{sensor.name}: close failed: {e}")

    def __enter__(self) -> "EnergyMeter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
