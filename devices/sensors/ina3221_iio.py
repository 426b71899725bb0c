"""Jetson INA3221 through NVIDIA's out-of-tree iio driver `ina3221x` (JetPack 4 / L4T R32).

Layout (L4T R32 drivers/staging/iio/meter/ina3221.c), one directory per sensor chip:
    /sys/bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:device<N>/
        rail_name_<K>          "POM_5V_IN" / "VDD_IN" / ...  (K = 0..2)
        in_power<K>_input      mW
        in_current<K>_input    mA
        in_voltage<K>_input    mV
Nano: 6-0040; Xavier NX: 7-0040; TX2: 0-0040 + 0-0041; AGX Xavier: 1-0040 + 1-0041."""
from __future__ import annotations

import re
import time
from pathlib import Path

from devices._sysfs import read_int, read_text, under
from devices.sensors.base import PowerSample, PowerSensor, register_sensor, total_mw
from edgert.errors import SensorError

DRIVER_DIR = "/sys/bus/i2c/drivers/ina3221x"
_RAIL = re.compile(r"rail_name_(\d+)$")


@register_sensor
class Ina3221Iio(PowerSensor):
    name = "ina3221-iio"
    priority = 11
    rate_hz = 50.0

    def __init__(self, rails: dict[str, Path]):
        self.rails = rails      # rail name -> in_power<K>_input

    @classmethod
    def open(cls, root: Path = Path("/"), **_kw) -> "Ina3221Iio":
        driver = under(root, DRIVER_DIR)
        rails: dict[str, Path] = {}
        # <bus>-0040, <bus>-0041: several chips per board (TX2, AGX Xavier)
        for dev in sorted(driver.glob("*-004*/iio:device*")):
            for label in sorted(dev.glob("rail_name_*")):
                m = _RAIL.search(label.name)
                rail = read_text(label)
                if not m or not rail or rail == "NC":    # "NC": channel not connected
                    continue
                power = dev / f"in_power{m.group(1)}_input"
                if not power.exists():
                    continue
                if rail in rails:   # the same label on two chips: keep both, tell them apart
                    rail = f"{rail}@{dev.parent.name}"
                rails[rail] = power
        if not rails:
            raise SensorError(f"no INA3221 rails under {driver} (not a JetPack 4 Jetson)")
        return cls(rails)

    def read(self) -> PowerSample:
        rails_mw = {rail: float(read_int(path)) for rail, path in self.rails.items()}
        return PowerSample(t_ns=time.monotonic_ns(), power_mw=total_mw(rails_mw), rails_mw=rails_mw)
