from __future__ import annotations

import builtins
import os

import pytest
from device_trees import build_x86_rapl, write

import devices._sysfs
from devices.sensors import open_sensor
from devices.sensors.rapl import Rapl
from edgert.errors import SensorError

PKG = "sys/class/powercap/intel-rapl:0/energy_uj"


def test_package_only_power_from_counter(tmp_path, clock):
    root = build_x86_rapl(tmp_path, energy_uj=1_000_000)
    s = open_sensor("rapl", root, clock_ns=clock)
    assert [z.name for z in s.zones] == ["package-0"]      # subzones and psys are not added
    first = s.read()
    assert (first.energy_uj, first.power_mw) == (1_000_000, None)
    (root / PKG).write_text("1500000\n")
    clock.advance(0.1)
    second = s.read()
    assert second.energy_uj == 1_500_000
    assert second.power_mw == pytest.approx(5000.0)         # 0.5 J in 0.1 s
    assert second.rails_mw == pytest.approx({"package-0": 5000.0})


def test_wraparound_is_unwrapped(tmp_path, clock):
    root = build_x86_rapl(tmp_path, energy_uj=999_900_000, max_range_uj=1_000_000_000)
    s = Rapl.open(root, clock_ns=clock)
    s.read()
    (root / PKG).write_text("100000\n")                      # wrapped past max_energy_range_uj
    clock.advance(0.05)
    after = s.read()
    assert after.energy_uj == 1_000_100_000                  # monotonic
    assert after.power_mw == pytest.approx(200_000 / 0.05 / 1000)   # 200 mJ in 50 ms = 4 W
    (root / PKG).write_text("300000\n")
    clock.advance(0.05)
    assert s.read().energy_uj == 1_000_300_000


def test_two_packages_are_summed(tmp_path, clock):
    root = build_x86_rapl(tmp_path, energy_uj=0)
    write(root, {"/sys/class/powercap/intel-rapl:1/name": "package-1\n",        # dual socket
                 "/sys/class/powercap/intel-rapl:1/energy_uj": "0\n"})
    s = Rapl.open(root, clock_ns=clock)
    s.read()
    (root / PKG).write_text("2000000\n")
    (root / "sys/class/powercap/intel-rapl:1/energy_uj").write_text("1000000\n")
    clock.advance(1.0)
    sample = s.read()
    assert sample.energy_uj == 3_000_000
    assert sample.rails_mw == pytest.approx({"package-0": 2000.0, "package-1": 1000.0})
    assert sample.power_mw == pytest.approx(3000.0)


def test_permission_denied_names_the_fix(tmp_path, monkeypatch):
    root = build_x86_rapl(tmp_path)
    target = root / PKG
    if os.geteuid() != 0:
        target.chmod(0)
    else:   # root reads anything: make open() refuse the way a non-root read fails since Linux 5.10
        def denying_open(path, *a, **kw):
            if str(path).endswith("intel-rapl:0/energy_uj"):
                raise PermissionError(13, "Permission denied", str(path))
            return builtins.open(path, *a, **kw)
        monkeypatch.setattr(devices._sysfs, "open", denying_open, raising=False)
    with pytest.raises(SensorError) as err:
        open_sensor("rapl", root)
    msg = str(err.value)
    assert "permission denied" in msg and "energy_uj" in msg
    assert "run as root" in msg and "sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj" in msg
    assert "\n" not in msg
    assert Rapl.probe(root) is None


def test_malformed_counter(tmp_path):
    root = build_x86_rapl(tmp_path)
    s = Rapl.open(root)
    (root / PKG).write_text("\n")
    with pytest.raises(SensorError, match=r"energy_uj: expected an integer, got ''"):
        s.read()
    assert Rapl.probe(tmp_path / "no-rapl") is None
