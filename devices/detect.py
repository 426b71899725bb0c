"""What machine is this? Board kind, model, SoC, L4T release, arch and CPU count from files only.

Sources (all relative to `root`, so tests use fake trees):
- /proc/device-tree/model       NUL-terminated board name ("Raspberry Pi 5 Model B Rev 1.0",
                                "NVIDIA Jetson Orin Nano Developer Kit"); a symlink into
                                /sys/firmware/devicetree/base on ARM boards, absent on x86.
- /proc/device-tree/compatible  NUL-separated, most specific first, SoC last
                                ("raspberrypi,5-model-b\\0brcm,bcm2712\\0").
- /etc/nv_tegra_release         written by L4T: "# R35 (release), REVISION: 4.1, GCID: ...".
- /proc/cpuinfo                 "model name" (x86), "Model" (Raspberry Pi OS), "processor" lines,
                                "CPU architecture: 8" (ARMv8), "flags ... lm ..." (x86-64).
"""
from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from devices._sysfs import is_real_root, read_optional, under

# compatible-string prefixes that name the SoC itself (kernel dt-bindings: arm/nvidia,tegra.yaml,
# arm/bcm/bcm2835.yaml).
_SOC_PREFIXES = ("nvidia,tegra", "brcm,bcm")
_L4T = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


@dataclass(frozen=True)
class DeviceInfo:
    kind: str              # "raspberry-pi-5" | "raspberry-pi-4" | "jetson-orin" | "jetson-xavier-nx" |
                           # "jetson-nano" | "jetson" | else the arch ("x86_64", "aarch64", ...)
    model: str             # device-tree model, else cpuinfo "Model" / "model name", else the arch
    soc: str | None        # "tegra234", "bcm2712", ... (from compatible)
    l4t_release: str | None  # "R35.4.1"
    arch: str
    cpu_count: int

    @property
    def is_jetson(self) -> bool:
        return self.kind.startswith("jetson")

    @property
    def is_raspberry_pi(self) -> bool:
        return self.kind.startswith("raspberry-pi") or self.model.startswith("Raspberry Pi")

    def to_json(self) -> dict:
        return asdict(self)


def _dt_strings(root: Path, name: str) -> list[str]:
    text = read_optional(under(root, f"/proc/device-tree/{name}"))
    return [s.strip() for s in (text or "").split("\0") if s.strip()]


def _cpuinfo(root: Path) -> tuple[dict[str, str], int]:
    """First value of each key in /proc/cpuinfo, and the number of "processor" entries."""
    fields: dict[str, str] = {}
    processors = 0
    for line in (read_optional(under(root, "/proc/cpuinfo")) or "").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            processors += 1
        fields.setdefault(key, value.strip())
    return fields, processors


def l4t_release(root: Path = Path("/")) -> str | None:
    """"R35.4.1" from /etc/nv_tegra_release, None when absent or unparsable."""
    m = _L4T.search(read_optional(under(root, "/etc/nv_tegra_release")) or "")
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def _arch_from_cpuinfo(cpu: dict[str, str], soc: str | None) -> str:
    # a 64-bit kernel reports "CPU architecture: 8"; a 32-bit one on the same ARMv8 core reports 7
    arm = cpu.get("CPU architecture", "")
    if arm == "8":
        return "aarch64"
    if arm.startswith("7"):
        return "armv7l"
    if " lm " in f" {cpu.get('flags', '')} ":   # "long mode": x86-64 capable
        return "x86_64"
    if (soc or "").startswith(("tegra", "bcm2711", "bcm2712")):
        return "aarch64"
    return "unknown"


def _kind(model: str, compatible: list[str], soc: str | None, l4t: str | None, arch: str) -> str:
    compat = " ".join(compatible)
    if soc == "bcm2712" or model.startswith("Raspberry Pi 5"):
        return "raspberry-pi-5"
    if soc == "bcm2711" or model.startswith("Raspberry Pi 4"):
        return "raspberry-pi-4"
    if soc == "tegra234":
        return "jetson-orin"
    if soc == "tegra194" and ("xavier-nx" in compat or "Xavier NX" in model):
        return "jetson-xavier-nx"
    if soc == "tegra210" and ("jetson-nano" in compat or "Nano" in model):
        return "jetson-nano"
    if (soc or "").startswith("tegra") or l4t is not None:
        return "jetson"
    return arch


def detect(root: Path = Path("/"), arch: str | None = None) -> DeviceInfo:
    """Describe the machine whose filesystem is at `root`. Missing files are not errors: an x86
    box simply has no device tree. `arch` overrides the architecture (platform.machine() on the
    real root, inferred from /proc/cpuinfo for a fake one)."""
    root = Path(root)
    real = is_real_root(root)
    model_dt = _dt_strings(root, "model")
    compatible = _dt_strings(root, "compatible")
    soc = next((c.split(",", 1)[1] for c in compatible if c.startswith(_SOC_PREFIXES)), None)
    cpu, processors = _cpuinfo(root)
    if arch is None:
        arch = platform.machine() if real else _arch_from_cpuinfo(cpu, soc)
    l4t = l4t_release(root)
    model = (model_dt[0] if model_dt else "") or cpu.get("Model") or cpu.get("model name") or arch
    cpu_count = (os.cpu_count() or processors or 1) if real else (processors or 1)
    return DeviceInfo(kind=_kind(model, compatible, soc, l4t, arch), model=model, soc=soc,
                      l4t_release=l4t, arch=arch, cpu_count=cpu_count)
