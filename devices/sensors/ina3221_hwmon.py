"""Jetson INA3221 through the mainline hwmon driver `ina3221` (JetPack 5/6, L4T R35/R36).

Layout (Linux drivers/hwmon/ina3221.c, Documentation/hwmon/ina3221.rst):
    /sys/bus/i2c/drivers/ina3221/<bus>-<addr>/hwmon/hwmon<N>/
        in<K>_label   rail name from the device tree, K = 1..3   ("VDD_IN", "NC", ...)
        in<K>_input   bus voltage, mV
        curr<K>_input current, mA
        in4..in6_input are shunt voltages, in7 ("sum of shunt voltages") is the summation channel.
hwmon<N> is numbered at boot and changes between boots, so it is globbed at open, not hardcoded.
Orin Nano/NX: one chip at 1-0040; AGX Orin: 1-0040 and 1-0041 (NVIDIA Jetson Linux developer
guide, "Platform Power and Performance")."""
from __future__ import annotations

import re
import time
from pathlib import Path

from devices._sysfs import read_int, read_text, under
from devices.sensors.base import PowerSample, PowerSensor, register_sensor, total_mw
from edgert.errors import SensorError

DRIVER_DIR = "/sys/bus/i2c/drivers/ina3221"
SUM_CHANNEL = 7     # summation of the shunt channels, not a rail
_LABEL = re.compile(r"in(\d+)_label$")


@register_sensor
class Ina3221Hwmon(PowerSensor):
    name = "ina3221-hwmon"
    priority = 10
    rate_hz = 50.0

    def __init__(self, rails: dict[str, tuple[Path, Path]]):
        self.rails = rails      # rail name -> (in<K>_input mV, curr<K>_input mA)

    @classmethod
    def open(cls, root: Path = Path("/"), **_kw) -> "Ina3221Hwmon":
        driver = under(root, DRIVER_DIR)
        rails: dict[str, tuple[Path, Path]] = {}
        for hwmon in sorted(driver.glob("*-004*/hwmon/hwmon*")):
            for label in sorted(hwmon.glob("in*_label")):
                m = _LABEL.search(label.name)
                if not m or int(m.group(1)) == SUM_CHANNEL:
                    continue
                k = m.group(1)
                rail = read_text(label)
                volt, curr = hwmon / f"in{k}_input", hwmon / f"curr{k}_input"
                if rail == "NC" or not curr.exists() or not volt.exists():
                    continue    # "NC": not connected (AGX Orin 0x41 channels 1 and 3)
                if rail in rails:
                    rail = f"{rail}@{hwmon.parent.parent.name}"
                rails[rail] = (volt, curr)
        if not rails:
            raise SensorError(f"no INA3221 hwmon rails under {driver} (not a JetPack 5/6 Jetson)")
        return cls(rails)

    def read(self) -> PowerSample:
        # mV * mA = µW; a vanished hwmon directory surfaces as SensorError from read_int
        rails_mw = {rail: read_int(v) * read_int(c) / 1000.0 for rail, (v, c) in self.rails.items()}
        return PowerSample(t_ns=time.monotonic_ns(), power_mw=total_mw(rails_mw), rails_mw=rails_mw)
