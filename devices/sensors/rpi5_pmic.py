"""Raspberry Pi 5 board power from its PMIC's ADC, via `vcgencmd pmic_read_adc`.

Output, one channel per line (Raspberry Pi firmware; e.g. in Jeff Geerling's Pi 5 notes):
     VDD_CORE_A current(7)=0.94657990A
     VDD_CORE_V volt(15)=0.72097620V
        EXT5V_V volt(24)=5.13720000V
Rail X has a current channel X_A and a voltage channel X_V; power = Σ V·A over rails with both.
EXT5V (the 5 V input) and BATT have a voltage only. The sum covers the PMIC's outputs, so it leaves
out the PMIC's own conversion loss and whatever draws straight from 5 V (USB devices, fan).
Each read spawns vcgencmd, hence ~10 Hz."""
from __future__ import annotations

import re
import time
from pathlib import Path

from devices._sysfs import Runner, pick_runner
from devices.detect import detect
from devices.sensors.base import PowerSample, PowerSensor, register_sensor
from edgert.errors import SensorError

COMMAND = ["vcgencmd", "pmic_read_adc"]
_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=(-?\d+(?:\.\d+)?)[AV]\s*$")


def parse_pmic_adc(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """(rail -> amps, rail -> volts) from `vcgencmd pmic_read_adc` output."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
    return amps, volts


def pmic_rails_mw(text: str) -> dict[str, float]:
    """Rail -> V·A in mW, over the rails that have both a current and a voltage channel."""
    amps, volts = parse_pmic_adc(text)
    return {rail: amps[rail] * volts[rail] * 1000.0 for rail in amps if rail in volts}


@register_sensor
class Rpi5Pmic(PowerSensor):
    name = "rpi5-pmic"
    priority = 30
    rate_hz = 10.0

    def __init__(self, runner: Runner):
        self.runner = runner

    @classmethod
    def open(cls, root: Path = Path("/"), runner: Runner | None = None, **_kw) -> "Rpi5Pmic":
        info = detect(root)
        if info.kind != "raspberry-pi-5":
            raise SensorError(f"the PMIC ADC is a Raspberry Pi 5 feature; this is {info.model!r}")
        sensor = cls(pick_runner(root, runner, "vcgencmd"))
        sensor.read()       # old firmware answers 'error=1 error_msg="Command not registered"'
        return sensor

    def read(self) -> PowerSample:
        text = self.runner(COMMAND)
        rails = pmic_rails_mw(text)
        if not rails:
            first = text.strip().splitlines()[0] if text.strip() else "(nothing)"
            raise SensorError(f"{' '.join(COMMAND)}: no current/voltage pairs in output: {first[:80]}")
        return PowerSample(t_ns=time.monotonic_ns(), power_mw=sum(rails.values()), rails_mw=rails)
