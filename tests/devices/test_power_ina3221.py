from __future__ import annotations

import shutil

import pytest
from device_trees import (ORIN_NANO_HWMON, build_agx_orin_jp5, build_nano_jp4, build_orin_nano_jp6,
                           build_xavier_nx_jp4)

from devices.sensors import open_sensor
from devices.sensors.ina3221_hwmon import Ina3221Hwmon
from devices.sensors.ina3221_iio import Ina3221Iio
from edgert.errors import SensorError


def test_iio_nano_total_is_pom_5v_in(tmp_path):
    s = open_sensor("ina3221-iio", build_nano_jp4(tmp_path))
    sample = s.read()
    assert sample.rails_mw == {"POM_5V_IN": 2591.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 386.0}
    assert sample.power_mw == 2591.0 and sample.energy_uj is None and sample.t_ns > 0


def test_iio_xavier_nx_total_is_vdd_in(tmp_path):
    s = Ina3221Iio.open(build_xavier_nx_jp4(tmp_path))
    assert s.read().power_mw == 3868.0
    assert list(s.read().rails_mw) == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]


def test_iio_two_chips_without_input_rail_sum(tmp_path):
    # AGX Xavier (L4T R32): 1-0040/iio:device0 and 1-0041/iio:device1, no input rail; NC skipped
    base = tmp_path / "sys/bus/i2c/drivers/ina3221x"
    for dev, rails in {"1-0040/iio:device0": [("GPU", 310), ("CPU", 620), ("SOC", 1400)],
                       "1-0041/iio:device1": [("CV", 0), ("VDDRQ", 155), ("NC", 999)]}.items():
        d = base / dev
        d.mkdir(parents=True)
        for k, (rail, mw) in enumerate(rails):
            (d / f"rail_name_{k}").write_text(rail + "\n")
            (d / f"in_power{k}_input").write_text(f"{mw}\n")
    sample = Ina3221Iio.open(tmp_path).read()
    assert "NC" not in sample.rails_mw and len(sample.rails_mw) == 5
    assert sample.power_mw == 310 + 620 + 1400 + 0 + 155


def test_iio_malformed_file_raises_naming_it(tmp_path):
    root = build_nano_jp4(tmp_path)
    s = Ina3221Iio.open(root)
    bad = root / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power1_input"
    bad.write_text("12ab\n")
    with pytest.raises(SensorError, match=r"in_power1_input: expected an integer, got '12ab'"):
        s.read()


def test_hwmon_orin_nano_v_times_i_and_channel_7_skipped(tmp_path):
    s = open_sensor("ina3221-hwmon", build_orin_nano_jp6(tmp_path))
    sample = s.read()
    assert sample.rails_mw == pytest.approx({"VDD_IN": 4560.0, "VDD_CPU_GPU_CV": 482.672, "VDD_SOC": 1452.992})
    assert sample.power_mw == pytest.approx(4560.0)       # VDD_IN, not the sum
    assert not any("shunt" in r for r in sample.rails_mw)


def test_hwmon_agx_orin_two_chips_nc_skipped_total_is_sum(tmp_path):
    s = Ina3221Hwmon.open(build_agx_orin_jp5(tmp_path))
    sample = s.read()
    assert sample.rails_mw == pytest.approx({"VDD_GPU_SOC": 3840.0, "VDD_CPU_CV": 1152.0,
                                             "VIN_SYS_5V0": 3500.0, "VDDQ_VDD2_1V8AO": 450.0})
    assert sample.power_mw == pytest.approx(3840 + 1152 + 3500 + 450)


def test_hwmon_number_is_globbed_not_fixed(tmp_path):
    root = build_orin_nano_jp6(tmp_path)
    old = root / ORIN_NANO_HWMON.lstrip("/")
    old.rename(old.parent / "hwmon7")            # another boot, another number
    assert Ina3221Hwmon.open(root).read().power_mw == pytest.approx(4560.0)


def test_hwmon_vanished_directory_raises(tmp_path):
    root = build_orin_nano_jp6(tmp_path)
    s = Ina3221Hwmon.open(root)
    shutil.rmtree(root / ORIN_NANO_HWMON.lstrip("/"))
    with pytest.raises(SensorError, match=r"cannot read .*hwmon3/in1_input"):
        s.read()


def test_absent_layouts_say_so(tmp_path):
    with pytest.raises(SensorError, match="not a JetPack 5/6 Jetson"):
        open_sensor("ina3221-hwmon", build_nano_jp4(tmp_path))
    assert Ina3221Iio.probe(tmp_path / "empty") is None
    assert Ina3221Hwmon.probe(build_nano_jp4(tmp_path)) is None
