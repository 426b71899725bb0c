from __future__ import annotations

import json

import pytest
from device_trees import (build_nano_jp4, build_orin_nano_jp6, build_pi4, build_pi5, build_x86_rapl,
                           thermal_zone, write)

from devices.thermal import ThermalSnapshot, decode_throttled, read_thermal
from edgert.errors import SensorError


def test_orin_nano(tmp_path):
    snap = read_thermal(build_orin_nano_jp6(tmp_path))
    assert snap.temps_c == {"cpu-thermal": 47.687, "gpu-thermal": 48.625, "soc0-thermal": 47.468,
                            "tj-thermal": 48.625}                  # cv0 at -256 C is powered off
    assert snap.cpu_freq_khz == {n: 729600 for n in range(6)}
    assert snap.gpu_freq_hz == 306_000_000
    assert (snap.throttled, snap.throttle_flags) == (None, [])     # no such signal on a Jetson
    assert snap.max_temp_c() == 48.625


def test_nano_and_x86(tmp_path):
    nano = read_thermal(build_nano_jp4(tmp_path / "nano"))
    assert nano.temps_c["PMIC-Die"] == 100.0 and nano.gpu_freq_hz == 76_800_000 and len(nano.temps_c) == 6
    x86 = read_thermal(build_x86_rapl(tmp_path / "x86"))
    assert x86.temps_c == {"acpitz": 27.8, "x86_pkg_temp": 45.0} and x86.gpu_freq_hz is None
    assert x86.cpu_freq_khz == {0: 1800000, 1: 1800000, 2: 1800000, 3: 1800000}


@pytest.mark.parametrize("output, throttled, flags", [
    ("throttled=0x50005\n", True, ["under-voltage", "throttled", "under-voltage-occurred", "throttled-occurred"]),
    ("throttled=0x80000\n", False, ["soft-temp-limit-occurred"]),
    ("throttled=0x0\n", False, []),
])
def test_pi_throttle_flags(tmp_path, output, throttled, flags):
    calls = []
    snap = read_thermal(build_pi5(tmp_path), runner=lambda argv: calls.append(argv) or output)
    assert calls == [["vcgencmd", "get_throttled"]]
    assert (snap.throttled, snap.throttle_flags) == (throttled, flags)
    assert snap.temps_c == {"cpu-thermal": 61.25} and snap.cpu_freq_khz[3] == 2400000


def test_decode_bits():
    assert decode_throttled(0xF000F) == (True, ["under-voltage", "arm-frequency-capped", "throttled",
                                                "soft-temp-limit", "under-voltage-occurred",
                                                "arm-frequency-capped-occurred", "throttled-occurred",
                                                "soft-temp-limit-occurred"])


def test_missing_pieces_are_none_not_errors(tmp_path):
    def broken(argv):
        raise SensorError("vcgencmd not found on PATH")
    assert read_thermal(build_pi4(tmp_path / "a"), runner=broken).throttled is None
    assert read_thermal(build_pi4(tmp_path / "b")).throttled is None          # fake root: no command run
    assert read_thermal(build_pi4(tmp_path / "c"), runner=lambda a: "error=1\n").throttled is None
    empty = read_thermal(tmp_path / "nothing")
    assert empty == ThermalSnapshot() and empty.max_temp_c() is None


def test_malformed_numbers_are_skipped(tmp_path):
    root = build_pi4(tmp_path)
    write(root, {**thermal_zone(1, "cpu-thermal", "48.5C"),          # malformed
                 **thermal_zone(2, "cpu-thermal", "50000"),          # duplicate type: kept apart
                 "/sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq": "\n"})
    snap = read_thermal(root, runner=lambda a: "throttled=0x0\n")
    assert snap.temps_c == {"cpu-thermal": 48.686, "cpu-thermal.2": 50.0}
    assert snap.cpu_freq_khz == {0: 1500000, 2: 1500000, 3: 1500000}
    data = json.loads(json.dumps(snap.to_json()))
    assert data["cpu_freq_khz"]["0"] == 1500000 and data["throttled"] is False


def test_real_machine_does_not_crash():
    snap = read_thermal()
    assert isinstance(snap.temps_c, dict) and all(isinstance(v, float) for v in snap.temps_c.values())
