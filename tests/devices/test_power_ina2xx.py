"""INA219 / INA260: the kernel hwmon path on a fake tree, the register path on a fake I2C bus that
computes its registers the way the datasheets say the chips do."""
from __future__ import annotations

import sys

import pytest
from device_trees import build_pi4, write

from devices.sensors import open_sensor, probe_all
from devices.sensors.ina2xx import Ina219Calibration, Ina2xx
from edgert.errors import SensorError


class FakeINA219:
    """INA219 (SBOS448) register model: shunt LSB 10 µV, bus LSB 4 mV (bits 15:3),
    current = shunt · Cal / 4096 (eq. 4), power = current · bus / 5000 (eq. 5)."""
    def __init__(self, amps: float, volts: float, shunt_ohm: float = 0.1, address: int = 0x40):
        self.amps, self.volts, self.shunt_ohm, self.address = amps, volts, shunt_ohm, address
        self.cal = 0
        self.writes: list[tuple[int, list[int]]] = []
        self.closed = False

    def regs(self) -> dict[int, int]:
        shunt = round(self.amps * self.shunt_ohm / 10e-6)
        bus = round(self.volts / 4e-3)
        current = int(shunt * self.cal / 4096)
        power = int(current * bus / 5000)
        ovf = 1 if abs(shunt) > 32000 else 0
        return {0x00: 0x399F, 0x01: shunt & 0xFFFF, 0x02: (bus << 3) | 0b10 | ovf, 0x03: power & 0xFFFF,
                0x04: current & 0xFFFF, 0x05: self.cal}

    def read_i2c_block_data(self, addr, reg, length):
        assert addr == self.address and length == 2
        v = self.regs()[reg]
        return [v >> 8, v & 0xFF]          # MSB first, as the chip sends it

    def write_i2c_block_data(self, addr, reg, data):
        assert addr == self.address
        self.writes.append((reg, data))
        if reg == 0x05:
            self.cal = (data[0] << 8) | data[1]

    def close(self):
        self.closed = True


class FakeINA260(FakeINA219):
    """INA260 (SBOS656): current LSB 1.25 mA (signed), bus LSB 1.25 mV, power LSB 10 mW; IDs."""
    def regs(self):
        current = round(self.amps / 1.25e-3)
        return {0x01: current & 0xFFFF, 0x02: round(self.volts / 1.25e-3),
                0x03: round(abs(self.amps * self.volts) / 10e-3), 0xFE: 0x5449, 0xFF: 0x2270}


class NotAnINA(FakeINA219):
    """Something else at 0x40 (a PCA9685 PWM driver, say): no TI ID."""
    def regs(self):
        return {0xFE: 0x0000, 0xFF: 0x0000}


def i2c_root(tmp_path):
    return write(build_pi4(tmp_path), {"/dev/i2c-1": ""})


def test_ina219_calibration_and_power(tmp_path):
    chip = FakeINA219(amps=1.0, volts=5.0)
    s = open_sensor("ina2xx", i2c_root(tmp_path), chip="ina219", smbus_factory=lambda bus: chip)
    cal = Ina219Calibration()
    assert cal.register() == 4194                  # trunc(0.04096 / (3.2/32768 · 0.1)), bit 0 clear
    assert chip.writes == [(0x05, [0x10, 0x62])]   # 4194 = 0x1062, MSB first
    assert s.current_ma() == pytest.approx(1000.0, rel=1e-3)
    assert s.bus_voltage_mv() == 5000.0
    assert s.read().power_mw == pytest.approx(5000.0, rel=1e-3)
    chip.cal = 0                                    # chip reset: calibration lost
    assert s.read().power_mw == pytest.approx(5000.0, rel=1e-3) and chip.cal == 4194
    chip.amps = 3.5                                 # 350 mV over 0.1 Ω: beyond the 320 mV range
    with pytest.raises(SensorError, match="overflow"):
        s.read()
    s.close()
    assert chip.closed


def test_ina260_recognised_by_id_without_writes(tmp_path):
    chip = FakeINA260(amps=1.0, volts=5.0)
    s = Ina2xx.open(i2c_root(tmp_path), smbus_factory=lambda bus: chip)
    assert s.chip == "ina260" and chip.writes == []
    assert s.read().power_mw == 5000.0
    assert s.bus_voltage_mv() == 5000.0
    chip.amps = -0.5                                 # current register is two's complement
    assert s.current_ma() == -500.0


def test_unknown_chip_at_0x40_is_left_alone(tmp_path):
    other = NotAnINA(0, 0)
    with pytest.raises(SensorError, match="chip='ina219'"):
        Ina2xx.open(i2c_root(tmp_path), smbus_factory=lambda bus: other)
    assert other.writes == [] and other.closed
    assert Ina2xx.probe(i2c_root(tmp_path), smbus_factory=lambda bus: other) is None


def test_kernel_hwmon_driver(tmp_path):
    root = write(tmp_path, {"/sys/class/hwmon/hwmon0/name": "cpu_thermal\n",
                            "/sys/class/hwmon/hwmon1/name": "ina219\n",
                            "/sys/class/hwmon/hwmon1/power1_input": "4990000\n",     # µW
                            "/sys/class/hwmon/hwmon1/in1_input": "4990\n",
                            "/sys/class/hwmon/hwmon1/curr1_input": "1000\n"})
    s = Ina2xx.open(root)
    assert s.chip == "ina219" and s.read().power_mw == 4990.0
    assert (s.bus_voltage_mv(), s.current_ma()) == (4990.0, 1000.0)
    (root / "sys/class/hwmon/hwmon1/power1_input").unlink()
    assert s.read().power_mw == pytest.approx(4990.0)          # mV · mA / 1000
    assert [x.name for x in probe_all(root)][0] == "ina2xx"


def test_smbus2_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "smbus2", None)            # import smbus2 -> ImportError
    with pytest.raises(SensorError, match="pip install smbus2"):
        open_sensor("ina2xx", i2c_root(tmp_path))
    assert Ina2xx.probe(i2c_root(tmp_path)) is None


def test_no_i2c_device(tmp_path):
    with pytest.raises(SensorError, match="i2c-1"):
        open_sensor("ina2xx", build_pi4(tmp_path))
