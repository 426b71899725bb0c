"""An external TI INA219 / INA260 current monitor (the usual way to measure a Raspberry Pi 4).

Two ways in:
- the kernel `ina2xx` hwmon driver (Linux drivers/hwmon/ina2xx.c, bound by a device-tree overlay):
  /sys/class/hwmon/hwmon<N>/name == "ina219" | "ina226" | "ina260" | ..., power1_input (µW),
  in1_input (bus mV), curr1_input (mA);
- direct register reads over I2C with the optional `smbus2` package (bus 1, address 0x40 by default).
Register maps and LSBs from the datasheets: INA219 (TI SBOS448), INA260 (TI SBOS656)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from devices._sysfs import read_int, read_text, under
from devices.sensors.base import PowerSample, PowerSensor, register_sensor
from edgert.errors import SensorError

HWMON_NAMES = ("ina219", "ina220", "ina226", "ina230", "ina231", "ina260")

# INA260 (SBOS656): integrated 2 mΩ shunt, fixed LSBs.
INA260_CURRENT, INA260_BUS_VOLTAGE, INA260_POWER = 0x01, 0x02, 0x03
INA260_CURRENT_LSB_MA, INA260_BUS_LSB_MV, INA260_POWER_LSB_MW = 1.25, 1.25, 10.0
INA260_MANUFACTURER_ID, INA260_DIE_ID = 0xFE, 0xFF
TI_MANUFACTURER_ID = 0x5449         # "TI"
INA260_DIE = 0x227                  # die ID register bits 15:4 (revision in 3:0)

# INA219 (SBOS448): external shunt; current and power need the calibration register.
INA219_SHUNT_VOLTAGE, INA219_BUS_VOLTAGE, INA219_POWER, INA219_CURRENT, INA219_CALIBRATION = (
    0x01, 0x02, 0x03, 0x04, 0x05)
INA219_BUS_LSB_MV = 4.0             # bus voltage register bits 15:3
INA219_OVF = 0x0001                 # math overflow: power/current are meaningless
INA219_CAL_SCALE = 0.04096          # Cal = trunc(0.04096 / (Current_LSB · R_shunt)), eq. 1
INA219_POWER_LSB_FACTOR = 20        # Power_LSB = 20 · Current_LSB, eq. 3


class SMBusLike(Protocol):
    """The part of smbus2.SMBus used here (tests inject a fake)."""
    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...
    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None: ...
    def close(self) -> None: ...


def _smbus2(bus: int) -> SMBusLike:
    try:
        import smbus2
    except ImportError:
        raise SensorError("INA219/INA260 over I2C needs the smbus2 package: pip install smbus2") from None
    try:
        return smbus2.SMBus(bus)
    except OSError as e:
        raise SensorError(f"cannot open /dev/i2c-{bus}: {e.strerror or e}") from e


@dataclass(frozen=True)
class Ina219Calibration:
    shunt_ohm: float = 0.1          # the common breakout boards (e.g. Adafruit 904) fit 0.1 Ω
    max_current_a: float = 3.2      # 320 mV full scale (PGA /8, the power-on default) / 0.1 Ω

    def register(self) -> int:
        """Calibration register value: eq. 1-2 of SBOS448, bit 0 is void (always 0)."""
        current_lsb_a = self.max_current_a / 2**15
        cal = int(INA219_CAL_SCALE / (current_lsb_a * self.shunt_ohm)) & 0xFFFE
        if not 0 < cal <= 0xFFFE:
            raise SensorError(f"INA219 calibration {cal} out of range for shunt {self.shunt_ohm} Ω "
                              f"and {self.max_current_a} A")
        return cal

    def current_lsb_a(self) -> float:
        """The LSB the chip actually uses once the truncated calibration value is written."""
        return INA219_CAL_SCALE / (self.register() * self.shunt_ohm)


def _signed16(v: int) -> int:
    return v - 0x10000 if v & 0x8000 else v


class _Chip:
    """Big-endian 16-bit registers over SMBus (the INA2xx send MSB first)."""
    def __init__(self, bus: SMBusLike, address: int):
        self.bus, self.address = bus, address

    def read(self, reg: int) -> int:
        try:
            msb, lsb = self.bus.read_i2c_block_data(self.address, reg, 2)
        except OSError as e:
            raise SensorError(f"I2C read of register 0x{reg:02x} at 0x{self.address:02x} failed: "
                              f"{e.strerror or e}") from e
        return (msb << 8) | lsb

    def write(self, reg: int, value: int) -> None:
        try:
            self.bus.write_i2c_block_data(self.address, reg, [(value >> 8) & 0xFF, value & 0xFF])
        except OSError as e:
            raise SensorError(f"I2C write of register 0x{reg:02x} at 0x{self.address:02x} failed: "
                              f"{e.strerror or e}") from e


@register_sensor
class Ina2xx(PowerSensor):
    name = "ina2xx"
    priority = 20
    rate_hz = 50.0

    def __init__(self, chip: str, *, hwmon: Path | None = None, i2c: _Chip | None = None,
                 calibration: Ina219Calibration | None = None):
        self.chip, self.hwmon, self.i2c, self.calibration = chip, hwmon, i2c, calibration
        self._cal = calibration.register() if calibration else 0

    @classmethod
    def open(cls, root: Path = Path("/"), bus: int = 1, address: int = 0x40, chip: str | None = None,
             calibration: Ina219Calibration = Ina219Calibration(),
             smbus_factory: Callable[[int], SMBusLike] | None = None, **_kw) -> "Ina2xx":
        """The kernel driver's hwmon device if one is bound, else the chip over I2C. An INA260 is
        recognised by its ID registers; the INA219 has none, so it is used only when asked for by
        `chip="ina219"` (0x40 is a popular address, and calibration is a register write)."""
        for name_file in sorted(under(root, "/sys/class/hwmon").glob("hwmon*/name")):
            hw_chip = read_text(name_file)
            if hw_chip in HWMON_NAMES and (chip is None or chip == hw_chip):
                return cls(hw_chip, hwmon=name_file.parent)
        if chip not in (None, "ina219", "ina260"):
            raise SensorError(f"unknown INA chip {chip!r} (known: ina219, ina260)")
        dev = under(root, f"/dev/i2c-{bus}")
        if not dev.exists():
            raise SensorError(f"no ina2xx hwmon device and no {dev} (enable I2C, e.g. raspi-config)")
        i2c = _Chip((smbus_factory or _smbus2)(bus), address)
        if chip == "ina219":
            sensor = cls("ina219", i2c=i2c, calibration=calibration)
            sensor.i2c.write(INA219_CALIBRATION, sensor._cal)
            return sensor
        maker, die = i2c.read(INA260_MANUFACTURER_ID), i2c.read(INA260_DIE_ID) >> 4
        if maker != TI_MANUFACTURER_ID or die != INA260_DIE:
            i2c.bus.close()
            raise SensorError(f"no INA260 at 0x{address:02x} on {dev} (IDs 0x{maker:04x}/0x{die:03x}); "
                              "an INA219 has no ID registers: pass chip='ina219'")
        return cls("ina260", i2c=i2c)

    def read(self) -> PowerSample:
        if self.hwmon is not None:
            return self._read_hwmon(self.hwmon)
        return self._read_ina260() if self.chip == "ina260" else self._read_ina219()

    def _read_hwmon(self, d: Path) -> PowerSample:
        power = d / "power1_input"      # µW; older drivers may lack it: mV · mA = µW
        mw = (read_int(power) if power.exists() else self.bus_voltage_mv() * self.current_ma()) / 1000.0
        return PowerSample(time.monotonic_ns(), mw, rails_mw={self.chip: mw})

    def _read_ina260(self) -> PowerSample:
        assert self.i2c is not None
        mw = self.i2c.read(INA260_POWER) * INA260_POWER_LSB_MW
        return PowerSample(time.monotonic_ns(), mw, rails_mw={self.chip: mw})

    def _read_ina219(self) -> PowerSample:
        assert self.i2c is not None and self.calibration is not None
        if self.i2c.read(INA219_CALIBRATION) != self._cal:
            # the chip lost its calibration (brown-out / reset): current and power read 0 until rewritten
            self.i2c.write(INA219_CALIBRATION, self._cal)
        bus = self.i2c.read(INA219_BUS_VOLTAGE)
        if bus & INA219_OVF:
            raise SensorError(f"INA219 at 0x{self.i2c.address:02x}: math overflow (OVF); the current "
                              f"exceeds {self.calibration.max_current_a} A or the shunt value is wrong")
        mw = self.i2c.read(INA219_POWER) * INA219_POWER_LSB_FACTOR * self.calibration.current_lsb_a() * 1000.0
        return PowerSample(time.monotonic_ns(), mw, rails_mw={self.chip: mw})

    def bus_voltage_mv(self) -> float:
        if self.hwmon is not None:
            return float(read_int(self.hwmon / "in1_input"))
        assert self.i2c is not None
        if self.chip == "ina260":
            return self.i2c.read(INA260_BUS_VOLTAGE) * INA260_BUS_LSB_MV
        return (self.i2c.read(INA219_BUS_VOLTAGE) >> 3) * INA219_BUS_LSB_MV

    def current_ma(self) -> float:
        if self.hwmon is not None:
            return float(read_int(self.hwmon / "curr1_input"))
        assert self.i2c is not None
        if self.chip == "ina260":
            return _signed16(self.i2c.read(INA260_CURRENT)) * INA260_CURRENT_LSB_MA
        assert self.calibration is not None
        return _signed16(self.i2c.read(INA219_CURRENT)) * self.calibration.current_lsb_a() * 1000.0

    def close(self) -> None:
        if self.i2c is not None:
            self.i2c.bus.close()
