from __future__ import annotations

import shutil
import threading
import time

import pytest
from device_trees import ORIN_NANO_HWMON, build_orin_nano_jp6, build_x86_rapl, write

from devices.meter import EnergyMeter, EnergyWindow
from devices.sensors import open_sensor
from devices.sensors.base import PowerSample, PowerSensor
from edgert.errors import SensorError


class ProfileSensor(PowerSensor):
    """Power as a known function of the (injected) clock; can be told to fail."""
    name = "fake"

    def __init__(self, clock, power_mw, name="fake", estimated=False, rate_hz=50.0, fail_after=None):
        self.clock, self.power_mw = clock, power_mw
        self.name, self.estimated, self.rate_hz = name, estimated, rate_hz
        self.fail_after, self.reads, self.closed = fail_after, 0, False

    @classmethod
    def open(cls, root=None, **kw):
        raise NotImplementedError

    def read(self) -> PowerSample:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise SensorError(f"{self.name} gone")
        t = self.clock()
        return PowerSample(t, self.power_mw(t) if callable(self.power_mw) else self.power_mw)

    def close(self):
        self.closed = True


def run_samples(meter, clock, seconds, step):
    for _ in range(round(seconds / step)):
        clock.advance(step)
        meter.sample()


def test_constant_2w_for_half_a_second_is_1j(clock):
    meter = EnergyMeter([ProfileSensor(clock, 2000.0)], clock_ns=clock)
    t0 = clock()
    meter.sample()
    run_samples(meter, clock, 0.5, 0.1)
    assert meter.energy_j(t0, clock()) == pytest.approx(1.0, rel=1e-12)
    assert meter.power_mw == 2000.0 and not meter.estimated


def test_linear_profile_is_integrated_exactly_between_samples(clock):
    start = clock()
    ramp = lambda t: 1000.0 + 2000.0 * (t - start) / 1e9      # 1 W + 2 W/s
    meter = EnergyMeter([ProfileSensor(clock, ramp)], clock_ns=clock)
    meter.sample()
    run_samples(meter, clock, 0.4, 0.1)
    t = lambda s: start + round(s * 1e9)
    # ∫ 1 + 2s ds from 0.05 to 0.35 = 0.3 + (0.35² - 0.05²) = 0.42 J; edges fall inside intervals
    assert meter.energy_j(t(0.05), t(0.35)) == pytest.approx(0.42, rel=1e-9)
    # a window inside one 100 ms sampling interval: ∫ from 0.02 to 0.03 = 0.01 + 0.0005
    assert meter.energy_j(t(0.02), t(0.03)) == pytest.approx(0.0105, rel=1e-9)


def test_window_context_shorter_than_sample_period(clock):
    meter = EnergyMeter([ProfileSensor(clock, 2000.0, rate_hz=10.0)], clock_ns=clock)
    with meter.window() as w:
        with pytest.raises(SensorError, match="still open"):
            w.joules
        clock.advance(0.001)                       # 1 ms, a hundredth of the sampling period
    assert w.joules == pytest.approx(0.002, rel=1e-9)
    assert (w.duration_s, w.mean_power_w, w.estimated, w.sensor) == (pytest.approx(0.001), pytest.approx(2.0),
                                                                      False, "fake")
    assert isinstance(w.result, EnergyWindow) and w.samples == 2
    with meter.window() as w2:
        clock.advance(0.5)
    assert w2.joules == pytest.approx(1.0)


def test_ms_windows_between_50hz_samples_wait_for_the_next_sample(clock):
    """The eval harness's pattern: 1 ms windows, a 20 ms sampling period, each window integrated
    once `last_sample_ns` has passed its end.  Power 2 W at the sample before, 4 W at the one after."""
    power = {"mw": 2000.0}
    meter = EnergyMeter([ProfileSensor(clock, lambda t: power["mw"])], clock_ns=clock)
    start = clock()
    assert meter.last_sample_ns is None
    meter.sample()
    at = lambda ms: start + round(ms * 1e6)
    w = (at(5), at(6))
    assert meter.last_sample_ns == start < w[1]     # not yet bracketed: only held power would answer
    assert meter.energy_j(*w) == pytest.approx(0.002)
    power["mw"] = 4000.0
    clock.advance(0.020)
    meter.sample()
    assert meter.last_sample_ns == at(20) >= w[1]
    # power linear between the samples: 2.5 W at 5 ms, 2.6 W at 6 ms; 2.55 W for 1 ms
    assert meter.energy_j(*w) == pytest.approx(2.55e-3, rel=1e-12)
    # windows that tile the sampling interval add up to its trapezoid, 3 W · 20 ms
    assert sum(meter.energy_j(at(k), at(k + 1)) for k in range(20)) == pytest.approx(0.060, rel=1e-12)


def test_samples_are_stamped_with_the_meters_clock_not_the_sensors(tmp_path, clock):
    """Sensors stamp PowerSample.t_ns with time.monotonic_ns; the meter stamps with its clock_ns,
    so a caller timing windows on another clock (the eval harness: perf_counter_ns) passes it in."""
    root = write(tmp_path, {"/sys/class/hwmon/hwmon0/name": "ina260\n",
                            "/sys/class/hwmon/hwmon0/power1_input": "1500000\n"})     # µW
    meter = EnergyMeter([open_sensor("ina2xx", root)], clock_ns=clock)
    t0 = clock()
    meter.sample()
    clock.advance(0.001)
    meter.sample()
    assert meter.last_sample_ns == t0 + 1_000_000
    assert meter.energy_j(t0, clock()) == pytest.approx(1.5e-3, rel=1e-12)


def test_counter_sensor_interpolates_the_counter(tmp_path, clock):
    root = build_x86_rapl(tmp_path, energy_uj=0)
    counter = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    meter = EnergyMeter([open_sensor("rapl", root, clock_ns=clock)], clock_ns=clock)
    t0 = clock()
    meter.sample()
    for uj in (300_000, 400_000):                   # 3 W then 1 W over two 100 ms intervals
        counter.write_text(f"{uj}\n")
        clock.advance(0.1)
        meter.sample()
    assert meter.energy_j(t0, clock()) == pytest.approx(0.4)
    # half of each interval: 0.15 J + 0.05 J
    assert meter.energy_j(t0 + 50_000_000, t0 + 150_000_000) == pytest.approx(0.2)
    assert meter.power_mw == pytest.approx(1000.0)


def test_vanished_hwmon_switches_to_utilisation_and_keeps_integrating(tmp_path, clock):
    root = build_orin_nano_jp6(tmp_path)
    changes = []
    meter = EnergyMeter([open_sensor("ina3221-hwmon", root), open_sensor("utilisation", root)],
                        clock_ns=clock, on_sensor_change=lambda *a: changes.append(a))
    t0 = clock()
    meter.sample()
    run_samples(meter, clock, 0.2, 0.1)             # VDD_IN 4560 mW
    shutil.rmtree(root / ORIN_NANO_HWMON.lstrip("/"))
    run_samples(meter, clock, 0.2, 0.1)             # /proc/stat unchanged: idle, 4500 mW (Orin model)
    assert meter.active_sensor.name == "utilisation" and meter.estimated
    assert len(changes) == 1 and changes[0][:2] == ("ina3221-hwmon", "utilisation")
    assert "cannot read" in changes[0][2]
    assert len(meter.failures) == 1 and meter.failures[0].startswith("ina3221-hwmon: cannot read")
    expected = 0.2 * 4.560 + 0.1 * (4.560 + 4.500) / 2 + 0.1 * 4.500
    w = meter.summarise(t0, clock())
    assert w.joules == pytest.approx(expected)
    assert (w.estimated, w.sensor, w.samples) == (True, "ina3221-hwmon+utilisation", 5)
    assert meter.summarise(t0, t0 + 100_000_000).estimated is False


def test_last_sensor_failing_is_recorded_once_and_meter_survives(clock):
    only = ProfileSensor(clock, 1000.0, fail_after=2)
    meter = EnergyMeter([only], clock_ns=clock)
    assert meter.sample() is not None and meter.sample() is not None
    assert meter.sample() is None and meter.sample() is None
    assert meter.failures == ["fake: fake gone"]
    clock.advance(1.0)
    assert meter.energy_j(clock() - 1_000_000_000, clock()) == pytest.approx(1.0)   # last power held


def test_history_is_bounded(clock):
    meter = EnergyMeter([ProfileSensor(clock, 1000.0)], clock_ns=clock, history_s=1.0)
    t0 = clock()
    meter.sample()
    run_samples(meter, clock, 20.0, 0.1)
    assert len(meter._t) < 100
    with pytest.raises(SensorError, match="before the meter's 1 s history"):
        meter.energy_j(t0, clock())
    assert meter.energy_j(clock() - 500_000_000, clock()) == pytest.approx(0.5)


def test_errors():
    with pytest.raises(SensorError, match="at least one power sensor"):
        EnergyMeter([])
    meter = EnergyMeter([ProfileSensor(time.monotonic_ns, 1.0)])
    with pytest.raises(SensorError, match="no power samples yet"):
        meter.energy_j(0, 1)
    with pytest.raises(SensorError, match="ends before it starts"):
        meter.energy_j(2, 1)


def test_background_thread_fails_over_and_serves_concurrent_windows():
    clk = time.monotonic_ns
    first = ProfileSensor(clk, 2000.0, name="first", rate_hz=200.0, fail_after=10)
    second = ProfileSensor(clk, 2000.0, name="second", rate_hz=200.0)
    changes = []
    results: list[float] = []

    def worker():
        for _ in range(5):
            with meter.window() as w:
                time.sleep(0.01)
            results.append(w.mean_power_w)

    with EnergyMeter([first, second], on_sensor_change=lambda *a: changes.append(a)) as meter:
        assert meter.running
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        time.sleep(0.05)
        assert meter.running and meter.active_sensor is second
    assert not meter.running and second.closed and first.closed
    assert [c[:2] for c in changes] == [("first", "second")]
    assert len(results) == 20 and results == pytest.approx([2.0] * 20)   # constant power: exact
    assert second.reads > 5
