"""tegrastats lines in the formats L4T prints (field layout per release; values plausible)."""
from __future__ import annotations

import queue

import pytest
from device_trees import build_orin_nano_jp6

from devices.sensors import open_sensor
from devices.sensors.tegrastats import (LineSource, Tegrastats, parse_tegrastats_line,
                                        parse_tegrastats_stats)
from edgert.errors import SensorError

# L4T R32 (JetPack 4), Jetson Nano: rails in mW as current/average with no unit
NANO_JP4 = ("RAM 2008/3956MB (lfb 1x4MB) SWAP 0/1978MB (cached 0MB) CPU [12%@1479,8%@1479,9%@1479,6%@1479] "
            "EMC_FREQ 0% GR3D_FREQ 0% PLL@27C CPU@29.5C PMIC@100C GPU@28C AO@36C thermal@28.75C "
            "POM_5V_IN 2591/2591 POM_5V_GPU 0/0 POM_5V_CPU 386/386")
# L4T R32, Xavier NX
XAVIER_NX_JP4 = ("RAM 1983/7772MB (lfb 1057x4MB) SWAP 0/3886MB (cached 0MB) "
                 "CPU [2%@1190,1%@1190,0%@1190,0%@1190,off,off] EMC_FREQ 0% GR3D_FREQ 0% AO@35.5C GPU@35C "
                 "PMIC@100C AUX@34.5C CPU@36.5C thermal@35.15C VDD_IN 3868/3700 VDD_CPU_GPU_CV 516/516 "
                 "VDD_SOC 1003/1003")
# L4T R36 (JetPack 6), Orin Nano: timestamp prefix, lower-case temps, rails with mW units
ORIN_NANO_JP6 = ("07-14-2025 10:29:36 RAM 2147/7620MB (lfb 2x4MB) SWAP 1476/3810MB (cached 1MB) "
                 "CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] GR3D_FREQ 0% cpu@47.687C soc2@46.718C "
                 "soc0@47.468C gpu@48.625C tj@48.625C soc1@48.25C VDD_IN 4556mW/4500mW "
                 "VDD_CPU_GPU_CV 483mW/483mW VDD_SOC 1451mW/1451mW")
# L4T R35 (JetPack 5), AGX Orin: offline zones at -256C, NC rails, no VDD_IN
AGX_ORIN_JP5 = ("RAM 2953/30536MB (lfb 6702x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,0%@729,off,off] "
                "EMC_FREQ 0%@2133 GR3D_FREQ 12%@[305,305] VIC_FREQ 115 APE 174 CV0@-256C CPU@44.406C "
                "Tboard@33C SOC2@40.937C GPU@-256C tj@44.406C VDD_GPU_SOC 3200mW/3200mW VDD_CPU_CV 798mW/798mW "
                "VIN_SYS_5V0 3124mW/3124mW NC 0mW/0mW VDDQ_VDD2_1V8AO 402mW/402mW NC 0mW/0mW")
# Jetson Nano 2GB: no INA3221, so no rails
NANO_2GB = ("RAM 1021/1980MB (lfb 25x4MB) SWAP 0/990MB (cached 0MB) CPU [5%@102,3%@102,off,off] "
            "EMC_FREQ 0% GR3D_FREQ 0% PLL@27C CPU@29.5C PMIC@50C GPU@28C AO@36C thermal@28.75C")


def test_parse_jp4_rails_current_not_average():
    assert parse_tegrastats_line(NANO_JP4) == {"POM_5V_IN": 2591.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 386.0}
    assert parse_tegrastats_line(XAVIER_NX_JP4)["VDD_IN"] == 3868.0


def test_parse_jp5_jp6_rails_with_units():
    assert parse_tegrastats_line(ORIN_NANO_JP6) == {"VDD_IN": 4556.0, "VDD_CPU_GPU_CV": 483.0, "VDD_SOC": 1451.0}
    agx = parse_tegrastats_line(AGX_ORIN_JP5)
    assert agx == {"VDD_GPU_SOC": 3200.0, "VDD_CPU_CV": 798.0, "VIN_SYS_5V0": 3124.0, "VDDQ_VDD2_1V8AO": 402.0}


def test_ram_swap_are_not_rails():
    assert parse_tegrastats_line(NANO_2GB) == {}


def test_parse_stats():
    st = parse_tegrastats_stats(AGX_ORIN_JP5)
    assert (st.ram_used_mb, st.ram_total_mb, st.gpu_util_pct) == (2953, 30536, 12.0)
    assert st.cpu_util_pct == [1.0, 0.0, None, None]
    assert st.temps_c == {"CPU": 44.406, "Tboard": 33.0, "SOC2": 40.937, "tj": 44.406}   # -256C dropped
    assert parse_tegrastats_stats(ORIN_NANO_JP6).temps_c["gpu"] == 48.625


class QueueLines:
    """A line source that yields what the test puts in, until None (the process exiting)."""
    def __init__(self):
        self.q: queue.Queue[str | None] = queue.Queue()
        self.argv: list[str] | None = None

    def factory(self, argv: list[str]) -> LineSource:
        self.argv = argv
        return LineSource(iter(self.q.get, None), stop=lambda: self.q.put(None))


def test_sensor_reads_latest_line_from_process(tmp_path):
    src = QueueLines()
    s = open_sensor("tegrastats", build_orin_nano_jp6(tmp_path), process_factory=src.factory, interval_ms=200)
    assert s.rate_hz == 5.0 and src.argv is None          # nothing spawned before the first read
    src.q.put(ORIN_NANO_JP6 + "\n")
    sample = s.read()
    assert src.argv == ["tegrastats", "--interval", "200"]
    assert sample.power_mw == 4556.0 and sample.rails_mw["VDD_SOC"] == 1451.0
    src.q.put(None)             # tegrastats exits
    s._thread.join(timeout=2)
    with pytest.raises(SensorError, match="output ended"):
        s.read()
    s.close()


def test_sensor_fed_lines_jp4_and_no_rails(clock):
    s = Tegrastats(["tegrastats"], process_factory=lambda argv: pytest.fail("must not spawn"))
    s.clock_ns = clock
    s.feed(NANO_JP4)
    assert s.read().power_mw == 2591.0                   # POM_5V_IN is the total
    s.feed(AGX_ORIN_JP5)
    assert s.read().power_mw == pytest.approx(3200 + 798 + 3124 + 402)   # no input rail: the sum
    s.feed(NANO_2GB)
    with pytest.raises(SensorError, match="no power rails in tegrastats line"):
        s.read()
    s.feed(NANO_JP4)
    clock.advance(5.0)                                    # no new line for 5 s
    with pytest.raises(SensorError, match="old"):
        s.read()


def test_open_needs_tegrastats_and_a_factory_for_fake_roots(tmp_path):
    with pytest.raises(SensorError, match="no tegrastats"):
        Tegrastats.open(tmp_path)
    with pytest.raises(SensorError, match="no process_factory"):
        Tegrastats.open(build_orin_nano_jp6(tmp_path))
