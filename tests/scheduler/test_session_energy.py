"""run_session with an energy meter: energy per output = measured energy of each policy's run / its
outputs (a fake constant-power sensor on the real clock)."""
from __future__ import annotations

import time

import pytest

from devices.meter import EnergyMeter
from devices.sensors.base import PowerSample, PowerSensor
from scheduler.session import SessionOptions, run_session
from scheduler.sim_stages import GroundTruthStages, SimCost


class ConstantSensor(PowerSensor):
    name = "constant"

    def __init__(self, power_mw: float):
        self.power_mw = power_mw

    @classmethod
    def open(cls, root=None, **kw):
        raise NotImplementedError

    def read(self) -> PowerSample:
        return PowerSample(time.monotonic_ns(), self.power_mw)


def test_energy_per_output(bev_seq):
    d, world = bev_seq
    from edgert.bev.recording import Recording
    rec = Recording(d)
    samples = list(rec.samples())
    meter = EnergyMeter([ConstantSensor(5000.0)], rate_hz=200.0).start()
    try:
        t0 = time.monotonic()
        # busy-waited stage costs: the run takes real time the meter integrates
        res = run_session(samples, lambda s: GroundTruthStages(s, rec.rig, SimCost(measure=True)),
                          SessionOptions(policies=("latest",), offline_reference=False), rig=rec.rig, meter=meter)
        wall_s = time.monotonic() - t0
    finally:
        meter.stop()
    m = res.metrics["latest"]
    n = len(res.runs["latest"].outputs)
    assert n >= 1 and m.energy_per_output_mj is not None
    # 5 W over (at most) the session's wall time, shared by its outputs
    assert 0 < m.energy_per_output_mj <= 5000.0 * wall_s / n * 1.2
    assert m.energy_per_output_mj == pytest.approx(5000.0 * wall_s / n, rel=0.5)
