from __future__ import annotations

import pytest
from device_trees import build_orin_nano_jp6, build_pi4, build_x86_rapl

from devices.sensors import open_sensor
from devices.sensors.utilisation import DEFAULT_MODELS, PowerModel, Utilisation
from edgert.errors import SensorError


def set_stat(root, user, system, idle, iowait=100):
    (root / "proc/stat").write_text(f"cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\n")


def test_pi4_model_from_proc_stat(tmp_path):
    root = build_pi4(tmp_path)          # cpu 1000 0 500 8000 100: busy 1500 of 9600
    s = open_sensor("utilisation", root)
    assert s.estimated and s.source.endswith("proc/stat") and s.model == DEFAULT_MODELS["raspberry-pi-4"]
    set_stat(root, user=1300, system=600, idle=8100)     # +400 busy, +100 idle: 80 % busy
    assert s.read().power_mw == pytest.approx(2700 + (6300 - 2700) * 0.8)
    assert s.util == pytest.approx(0.8)
    assert s.read().power_mw == pytest.approx(2700 + 3600 * 0.8)   # no tick since: same utilisation
    set_stat(root, user=1300, system=600, idle=8500)     # all idle
    assert s.read().power_mw == pytest.approx(2700)


def test_overrides_and_per_core_default(tmp_path):
    x86 = build_x86_rapl(tmp_path / "x86")
    assert Utilisation.open(x86).model == PowerModel(idle_mw=4 * 2000, max_mw=4 * 10000)
    s = Utilisation.open(build_orin_nano_jp6(tmp_path / "orin"), max_mw=25000)
    assert s.model == PowerModel(idle_mw=4500, max_mw=25000)
    with pytest.raises(SensorError, match="idle_mw <= max_mw"):
        Utilisation.open(x86, idle_mw=5000, max_mw=1000)


def test_malformed_proc_stat_raises(tmp_path):
    root = build_pi4(tmp_path)
    s = Utilisation.open(root)
    (root / "proc/stat").write_text("cpu  12 x 3 4\n")
    with pytest.raises(SensorError, match="non-numeric CPU times"):
        s.read()


def test_no_cpu_times_still_available(tmp_path):
    s = Utilisation.open(tmp_path, idle_mw=1000, max_mw=3000)
    assert s.source == "fixed 50%" and s.read().power_mw == 2000.0


def test_real_root_reads():
    s = Utilisation.open()
    assert s.source in ("psutil", "/proc/stat")
    p = s.read().power_mw
    assert s.model.idle_mw <= p <= s.model.max_mw
