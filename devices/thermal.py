"""A snapshot of temperatures, clocks and throttling, from files (and vcgencmd on a Pi).

Sources (relative to `root`):
- /sys/class/thermal/thermal_zone<N>/{type,temp}        millidegrees C (Linux thermal sysfs ABI).
  Jetson reports a powered-off zone as -256000 (tegrastats prints CV0@-256C); those are skipped.
- /sys/devices/system/cpu/cpu<N>/cpufreq/scaling_cur_freq   kHz (Linux cpufreq sysfs ABI).
- /sys/class/devfreq/<dev>/cur_freq                      Hz; the Jetson GPU is 57000000.gpu (Nano,
  gm20b), 17000000.gv11b (Xavier), 17000000.ga10b (Orin, JP5) or 17000000.gpu (Orin, JP6).
- `vcgencmd get_throttled` -> "throttled=0x50005" on a Raspberry Pi; bits from the Raspberry Pi
  documentation ("vcgencmd get_throttled"): 0-3 now, 16-19 since boot.
Missing pieces are empty / None, never errors; a malformed number is skipped (and logged)."""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devices._sysfs import Runner, pick_runner, read_optional, under
from devices.detect import detect
from edgert.errors import SensorError

log = logging.getLogger(__name__)

JETSON_OFFLINE_MC = -256000
_GPU_DEVFREQ = re.compile(r"(gpu|gv11b|ga10b|gp10b|gm20b)$")
_THROTTLED = re.compile(r"throttled=(0x[0-9a-fA-F]+)")

# vcgencmd get_throttled bits (Raspberry Pi documentation, "vcgencmd").
THROTTLE_BITS: dict[int, str] = {
    0: "under-voltage",
    1: "arm-frequency-capped",
    2: "throttled",
    3: "soft-temp-limit",
    16: "under-voltage-occurred",
    17: "arm-frequency-capped-occurred",
    18: "throttled-occurred",
    19: "soft-temp-limit-occurred",
}
THROTTLE_NOW_MASK = 0xF


@dataclass(frozen=True)
class ThermalSnapshot:
    temps_c: dict[str, float] = field(default_factory=dict)
    cpu_freq_khz: dict[int, int] = field(default_factory=dict)
    gpu_freq_hz: int | None = None
    throttled: bool | None = None           # None: no throttle signal on this machine
    throttle_flags: list[str] = field(default_factory=list)

    def max_temp_c(self) -> float | None:
        return max(self.temps_c.values(), default=None)

    def to_json(self) -> dict:
        d = asdict(self)
        d["cpu_freq_khz"] = {str(k): v for k, v in self.cpu_freq_khz.items()}
        return d


def _int_file(path: Path) -> int | None:
    text = read_optional(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        log.debug("skipping %s: not an integer: %r", path, text.strip()[:40])
        return None


def decode_throttled(value: int) -> tuple[bool, list[str]]:
    """(throttled now, flag names) from the get_throttled bit field."""
    return bool(value & THROTTLE_NOW_MASK), [n for bit, n in THROTTLE_BITS.items() if value >> bit & 1]


def parse_throttled(text: str) -> int | None:
    m = _THROTTLED.search(text)
    return int(m.group(1), 16) if m else None


def _temps(root: Path) -> dict[str, float]:
    temps: dict[str, float] = {}
    zones = under(root, "/sys/class/thermal").glob("thermal_zone*")
    for zone in sorted(zones, key=lambda p: int(re.sub(r"\D", "", p.name) or 0)):
        mc = _int_file(zone / "temp")
        if mc is None or mc == JETSON_OFFLINE_MC:
            continue
        name = (read_optional(zone / "type") or zone.name).strip() or zone.name
        if name in temps:       # two zones of one type: keep both
            name = f"{name}.{zone.name.removeprefix('thermal_zone')}"
        temps[name] = mc / 1000.0
    return temps


def _cpu_freqs(root: Path) -> dict[int, int]:
    freqs: dict[int, int] = {}
    for cur in under(root, "/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"):
        khz = _int_file(cur)
        if khz is not None:
            freqs[int(cur.parent.parent.name[3:])] = khz
    return dict(sorted(freqs.items()))


def _gpu_freq(root: Path) -> int | None:
    for dev in sorted(under(root, "/sys/class/devfreq").glob("*")):
        if _GPU_DEVFREQ.search(dev.name):
            hz = _int_file(dev / "cur_freq")
            if hz is not None:
                return hz
    return None


def read_thermal(root: Path = Path("/"), runner: Runner | None = None) -> ThermalSnapshot:
    root = Path(root)
    throttled: bool | None = None
    flags: list[str] = []
    if detect(root).is_raspberry_pi:
        try:
            text = pick_runner(root, runner, "vcgencmd")(["vcgencmd", "get_throttled"])
        except SensorError as e:
            log.debug("no throttle state: %s", e)
        else:
            value = parse_throttled(text)
            if value is None:
                log.debug("unexpected get_throttled output %r", text.strip()[:40])
            else:
                throttled, flags = decode_throttled(value)
    return ThermalSnapshot(temps_c=_temps(root), cpu_freq_khz=_cpu_freqs(root), gpu_freq_hz=_gpu_freq(root),
                           throttled=throttled, throttle_flags=flags)
