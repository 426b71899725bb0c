from __future__ import annotations

import pytest
from device_trees import build_agx_orin_jp5, build_nano_jp4, build_orin_nano_jp6, build_pi4, build_x86_rapl

from devices.sensors import open_sensor, probe_all, sensor_class, sensor_names
from devices.sensors.tegrastats import LineSource
from edgert.errors import SensorError


def test_names():
    assert sensor_names() == ["ina2xx", "ina3221-hwmon", "ina3221-iio", "rapl", "rpi5-pmic", "tegrastats",
                              "utilisation"]
    assert [sensor_class(n).estimated for n in sensor_names()].count(True) == 1


def test_unknown_name_lists_known():
    with pytest.raises(SensorError,
                       match=r"unknown power sensor 'ina4000' \(known: ina2xx, ina3221-hwmon, .*utilisation\)"):
        open_sensor("ina4000")


@pytest.mark.parametrize("build, expected", [
    (build_orin_nano_jp6, ["ina3221-hwmon", "tegrastats", "utilisation"]),
    (build_agx_orin_jp5, ["ina3221-hwmon", "utilisation"]),
    (build_nano_jp4, ["ina3221-iio", "utilisation"]),
    (build_x86_rapl, ["rapl", "utilisation"]),
    (build_pi4, ["utilisation"]),
])
def test_probe_all_best_first_ends_with_estimate(tmp_path, build, expected):
    found = probe_all(build(tmp_path), process_factory=lambda argv: LineSource([]))
    assert [s.name for s in found] == expected
    assert found[-1].estimated and not any(s.estimated for s in found[:-1])


def test_probe_all_never_empty():
    found = probe_all()
    assert found and found[-1].name == "utilisation"
    for s in found:
        s.close()
