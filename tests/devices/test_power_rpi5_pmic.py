"""`vcgencmd pmic_read_adc` in the format the Pi 5 firmware prints (right-aligned names)."""
from __future__ import annotations

import pytest
from device_trees import build_pi4, build_pi5

from devices.sensors import open_sensor, probe_all
from devices.sensors.rpi5_pmic import Rpi5Pmic, parse_pmic_adc, pmic_rails_mw
from edgert.errors import SensorError

PMIC_ADC = """\
 3V7_WL_SW_A current(0)=0.00780744A
   3V3_SYS_A current(1)=0.12199130A
   1V8_SYS_A current(2)=0.24300660A
  DDR_VDD2_A current(3)=0.02147046A
  DDR_VDDQ_A current(4)=0.00000000A
   1V1_SYS_A current(5)=0.18640260A
   0V8_SYS_A current(6)=0.26935670A
  VDD_CORE_A current(7)=0.94657990A
   3V3_DAC_A current(17)=0.00042735A
   3V3_ADC_A current(18)=0.00048840A
   0V8_AON_A current(16)=0.00384930A
      HDMI_A current(22)=0.02176200A
 3V7_WL_SW_V volt(8)=3.71866800V
   3V3_SYS_V volt(9)=3.30229800V
   1V8_SYS_V volt(10)=1.79906100V
  DDR_VDD2_V volt(11)=1.11120000V
  DDR_VDDQ_V volt(12)=0.60734400V
   1V1_SYS_V volt(13)=1.10616300V
   0V8_SYS_V volt(14)=0.80005680V
  VDD_CORE_V volt(15)=0.72097620V
   3V3_DAC_V volt(20)=3.31021500V
   3V3_ADC_V volt(21)=3.31021500V
   0V8_AON_V volt(19)=0.80030100V
      HDMI_V volt(23)=5.13720000V
     EXT5V_V volt(24)=5.13720000V
      BATT_V volt(25)=0.00000000V
"""


def _expected_mw() -> float:
    amps, volts = parse_pmic_adc(PMIC_ADC)
    return sum(a * volts[r] for r, a in amps.items()) * 1000


def test_parse_pairs_rails_and_skips_voltage_only():
    amps, volts = parse_pmic_adc(PMIC_ADC)
    assert len(amps) == 12 and len(volts) == 14
    assert volts["EXT5V"] == 5.1372 and "EXT5V" not in amps
    rails = pmic_rails_mw(PMIC_ADC)
    assert set(rails) == set(amps) and "EXT5V" not in rails and "BATT" not in rails
    assert rails["VDD_CORE"] == pytest.approx(0.94657990 * 0.72097620 * 1000)
    assert sum(rails.values()) == pytest.approx(_expected_mw())
    # the twelve V·A products of the lines above, written out
    by_hand = (0.00780744 * 3.718668 + 0.1219913 * 3.302298 + 0.2430066 * 1.799061 + 0.02147046 * 1.1112
               + 0.0 * 0.607344 + 0.1864026 * 1.106163 + 0.2693567 * 0.8000568 + 0.9465799 * 0.7209762
               + 0.00042735 * 3.310215 + 0.0004884 * 3.310215 + 0.0038493 * 0.800301 + 0.021762 * 5.1372)
    assert sum(rails.values()) == pytest.approx(by_hand * 1000)
    assert by_hand * 1000 == pytest.approx(2114.99, abs=0.01)


def test_sensor_on_pi5_with_recorded_runner(tmp_path):
    calls = []

    def runner(argv):
        calls.append(argv)
        return PMIC_ADC

    s = open_sensor("rpi5-pmic", build_pi5(tmp_path), runner=runner)
    sample = s.read()
    assert calls[-1] == ["vcgencmd", "pmic_read_adc"] and s.rate_hz == 10.0
    assert sample.power_mw == pytest.approx(_expected_mw())
    assert [x.name for x in probe_all(tmp_path, runner=runner)] == ["rpi5-pmic", "utilisation"]


def test_not_on_pi4_and_old_firmware(tmp_path):
    with pytest.raises(SensorError, match="Raspberry Pi 5 feature"):
        Rpi5Pmic.open(build_pi4(tmp_path / "pi4"), runner=lambda argv: PMIC_ADC)
    pi5 = build_pi5(tmp_path / "pi5")
    with pytest.raises(SensorError, match="Command not registered"):
        Rpi5Pmic.open(pi5, runner=lambda argv: 'error=1 error_msg="Command not registered"\n')
    with pytest.raises(SensorError, match="no runner was given"):
        Rpi5Pmic.open(pi5)            # a fake root never runs the host's vcgencmd
