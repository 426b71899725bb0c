"""Fake sysfs/procfs trees of real boards, built in tmp_path, and a fake clock.

Paths and file formats follow the real layouts (cited in devices/*.py); the values are plausible
readings, not recordings from a particular board."""
from __future__ import annotations

from pathlib import Path

PROC_STAT_IDLE = "cpu  1000 0 500 8000 100 0 0 0 0 0\ncpu0 250 0 125 2000 25 0 0 0 0 0\n"

# x86 /proc/cpuinfo: "model name", "flags" with lm (long mode).
X86_CPUINFO = "".join(
    f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc rapl\n\n" for i in range(4))

# Raspberry Pi OS 64-bit /proc/cpuinfo: per-core entries, then Revision/Serial/Model.
def pi_cpuinfo(model: str, cores: int = 4) -> str:
    cores_txt = "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
                        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd0b\n\n"
                        for i in range(cores))
    return cores_txt + f"Revision\t: d04170\nSerial\t\t: 0000000000000000\nModel\t\t: {model}\n"


def jetson_cpuinfo(cores: int) -> str:
    return "".join(f"processor\t: {i}\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nBogoMIPS\t: 62.50\n"
                   "CPU implementer\t: 0x41\nCPU architecture: 8\n\n" for i in range(cores))


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def device_tree(model: str, *compatible: str) -> dict[str, bytes]:
    # /proc/device-tree strings are NUL-terminated; compatible is a NUL-separated list
    return {"/proc/device-tree/model": model.encode() + b"\0",
            "/proc/device-tree/compatible": b"".join(c.encode() + b"\0" for c in compatible)}


def thermal_zone(n: int, kind: str, millideg: str) -> dict[str, str]:
    return {f"/sys/class/thermal/thermal_zone{n}/type": kind + "\n",
            f"/sys/class/thermal/thermal_zone{n}/temp": millideg + "\n"}


def cpufreq(n: int, khz: int) -> dict[str, str]:
    return {f"/sys/devices/system/cpu/cpu{n}/cpufreq/scaling_cur_freq": f"{khz}\n"}


def build_pi4(root: Path) -> Path:
    return write(root, {**device_tree("Raspberry Pi 4 Model B Rev 1.4", "raspberrypi,4-model-b", "brcm,bcm2711"),
                        "/proc/cpuinfo": pi_cpuinfo("Raspberry Pi 4 Model B Rev 1.4"),
                        "/proc/stat": PROC_STAT_IDLE,
                        **thermal_zone(0, "cpu-thermal", "48686"),
                        **{k: v for n in range(4) for k, v in cpufreq(n, 1500000).items()}})


def build_pi5(root: Path) -> Path:
    return write(root, {**device_tree("Raspberry Pi 5 Model B Rev 1.0", "raspberrypi,5-model-b", "brcm,bcm2712"),
                        "/proc/cpuinfo": pi_cpuinfo("Raspberry Pi 5 Model B Rev 1.0"),
                        "/proc/stat": PROC_STAT_IDLE,
                        **thermal_zone(0, "cpu-thermal", "61250"),
                        **{k: v for n in range(4) for k, v in cpufreq(n, 2400000).items()}})


def ina2xx_hwmon(n: int, chip: str, power_uw: int, bus_mv: int = 5000) -> dict[str, str]:
    """The kernel ina2xx driver's hwmon device (drivers/hwmon/ina2xx.c): power1_input in µW, in1_input
    the bus voltage in mV, curr1_input in mA."""
    d = f"/sys/class/hwmon/hwmon{n}"
    return {f"{d}/name": chip + "\n", f"{d}/power1_input": f"{power_uw}\n", f"{d}/in1_input": f"{bus_mv}\n",
            f"{d}/curr1_input": f"{round(power_uw / bus_mv)}\n"}


def build_pi4_ina260(root: Path, power_uw: int) -> Path:
    """A Raspberry Pi 4 with an INA260 on its 5 V supply, bound to the kernel driver (the usual
    way to measure a Pi 4); hwmon0 is the SoC's own temperature sensor."""
    build_pi4(root)
    return write(root, {"/sys/class/hwmon/hwmon0/name": "cpu_thermal\n", **ina2xx_hwmon(1, "ina260", power_uw)})


def set_power_uw(root: Path, hwmon: str, power_uw: int) -> None:
    """Change a hwmon power1_input atomically (rename over it), as a reader thread may be reading it."""
    path = root / hwmon.lstrip("/") / "power1_input"
    tmp = path.with_name("power1_input.tmp")
    tmp.write_text(f"{power_uw}\n")
    tmp.replace(path)


def build_nano_jp4(root: Path) -> Path:
    """Jetson Nano, L4T R32.7.1: ina3221x iio at 6-0040, GPU devfreq 57000000.gpu."""
    iio = "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    files: dict[str, str | bytes] = {
        **device_tree("NVIDIA Jetson Nano Developer Kit", "nvidia,p3450-0000", "nvidia,jetson-nano",
                      "nvidia,tegra210"),
        "/etc/nv_tegra_release": "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, "
                                 "EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n",
        "/proc/cpuinfo": jetson_cpuinfo(4), "/proc/stat": PROC_STAT_IDLE,
        "/sys/class/devfreq/57000000.gpu/cur_freq": "76800000\n",
        **thermal_zone(0, "AO-therm", "36500"), **thermal_zone(1, "CPU-therm", "29500"),
        **thermal_zone(2, "GPU-therm", "28000"), **thermal_zone(3, "PLL-therm", "27000"),
        **thermal_zone(4, "PMIC-Die", "100000"), **thermal_zone(5, "thermal-fan-est", "28600"),
    }
    for k, (rail, mw, ma, mv) in enumerate([("POM_5V_IN", 2591, 519, 4992), ("POM_5V_GPU", 0, 0, 4992),
                                            ("POM_5V_CPU", 386, 77, 4992)]):
        files[f"{iio}/rail_name_{k}"] = rail + "\n"
        files[f"{iio}/in_power{k}_input"] = f"{mw}\n"
        files[f"{iio}/in_current{k}_input"] = f"{ma}\n"
        files[f"{iio}/in_voltage{k}_input"] = f"{mv}\n"
        files[f"{iio}/crit_current_limit_{k}"] = "4000\n"
    return write(root, files)


def build_xavier_nx_jp4(root: Path) -> Path:
    """Jetson Xavier NX, L4T R32.7: ina3221x iio at 7-0040 (VDD_IN is the module input)."""
    iio = "/sys/bus/i2c/drivers/ina3221x/7-0040/iio:device0"
    files: dict[str, str | bytes] = {
        **device_tree("NVIDIA Jetson Xavier NX Developer Kit", "nvidia,p3509-0000+p3668-0001",
                      "nvidia,jetson-xavier-nx", "nvidia,tegra194"),
        "/etc/nv_tegra_release": "# R32 (release), REVISION: 7.3, GCID: 31982016, BOARD: t186ref, "
                                 "EABI: aarch64, DATE: Tue Nov 22 17:32:54 UTC 2022\n",
        "/proc/cpuinfo": jetson_cpuinfo(6), "/proc/stat": PROC_STAT_IDLE,
        "/sys/class/devfreq/17000000.gv11b/cur_freq": "114750000\n",
    }
    for k, (rail, mw) in enumerate([("VDD_IN", 3868), ("VDD_CPU_GPU_CV", 516), ("VDD_SOC", 1003)]):
        files[f"{iio}/rail_name_{k}"] = rail + "\n"
        files[f"{iio}/in_power{k}_input"] = f"{mw}\n"
    return write(root, files)


def _hwmon_chip(hwmon: str, rails: list[tuple[str, int, int]]) -> dict[str, str]:
    """in1..in3 rails (label, mV, mA), in4..in6 shunt voltages, in7 the shunt sum, curr4 the sum."""
    files = {f"{hwmon}/name": "ina3221\n"}
    for k, (label, mv, ma) in enumerate(rails, start=1):
        files[f"{hwmon}/in{k}_label"] = label + "\n"
        files[f"{hwmon}/in{k}_input"] = f"{mv}\n"
        files[f"{hwmon}/curr{k}_input"] = f"{ma}\n"
        files[f"{hwmon}/in{k + 3}_input"] = "12\n"
    files[f"{hwmon}/in7_label"] = "sum of shunt voltages\n"
    files[f"{hwmon}/in7_input"] = "36\n"
    files[f"{hwmon}/curr4_input"] = "1800\n"
    return files


ORIN_NANO_HWMON = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"


def build_orin_nano_jp6(root: Path) -> Path:
    """Jetson Orin Nano devkit, L4T R36.3: ina3221 hwmon at 1-0040, GPU devfreq 17000000.gpu."""
    return write(root, {
        **device_tree("NVIDIA Jetson Orin Nano Developer Kit", "nvidia,p3768-0000+p3767-0005",
                      "nvidia,p3767-0005", "nvidia,tegra234"),
        "/etc/nv_tegra_release": "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, "
                                 "EABI: aarch64, DATE: Fri Jul 19 23:24:25 UTC 2024\n",
        "/proc/cpuinfo": jetson_cpuinfo(6), "/proc/stat": PROC_STAT_IDLE,
        "/usr/bin/tegrastats": "#!/bin/sh\n",
        "/sys/class/devfreq/17000000.gpu/cur_freq": "306000000\n",
        **thermal_zone(0, "cpu-thermal", "47687"), **thermal_zone(1, "gpu-thermal", "48625"),
        **thermal_zone(2, "cv0-thermal", "-256000"), **thermal_zone(3, "soc0-thermal", "47468"),
        **thermal_zone(4, "tj-thermal", "48625"),
        **{k: v for n in range(6) for k, v in cpufreq(n, 729600).items()},
        # VDD_IN 5000 mV x 912 mA = 4560 mW; 4976 x 97 = 482.672; 4976 x 292 = 1452.992
        **_hwmon_chip(ORIN_NANO_HWMON, [("VDD_IN", 5000, 912), ("VDD_CPU_GPU_CV", 4976, 97),
                                        ("VDD_SOC", 4976, 292)]),
    })


def build_agx_orin_jp5(root: Path) -> Path:
    """Jetson AGX Orin devkit, L4T R35.4.1: two ina3221 at 1-0040 and 1-0041, no VDD_IN rail."""
    return write(root, {
        **device_tree("Jetson AGX Orin Developer Kit", "nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005",
                      "nvidia,tegra234"),
        "/etc/nv_tegra_release": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, "
                                 "EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n",
        "/proc/cpuinfo": jetson_cpuinfo(12), "/proc/stat": PROC_STAT_IDLE,
        "/sys/class/devfreq/17000000.ga10b/cur_freq": "305000000\n",
        **_hwmon_chip("/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon4",
                      [("VDD_GPU_SOC", 19200, 200), ("VDD_CPU_CV", 19200, 60), ("VIN_SYS_5V0", 5000, 700)]),
        **_hwmon_chip("/sys/bus/i2c/drivers/ina3221/1-0041/hwmon/hwmon5",
                      [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 1800, 250), ("NC", 0, 0)]),
    })


def build_x86_rapl(root: Path, energy_uj: int = 1_000_000, max_range_uj: int = 262_143_328_850) -> Path:
    """x86 laptop: RAPL package-0 with core/uncore subzones and a psys zone (not added)."""
    rapl = "/sys/class/powercap/intel-rapl:0"
    return write(root, {
        "/proc/cpuinfo": X86_CPUINFO, "/proc/stat": PROC_STAT_IDLE,
        f"{rapl}/name": "package-0\n", f"{rapl}/energy_uj": f"{energy_uj}\n",
        f"{rapl}/max_energy_range_uj": f"{max_range_uj}\n",
        f"{rapl}:0/name": "core\n", f"{rapl}:0/energy_uj": "400000\n",
        f"{rapl}:0/max_energy_range_uj": f"{max_range_uj}\n",
        f"{rapl}:1/name": "uncore\n", f"{rapl}:1/energy_uj": "100000\n",
        f"{rapl}:1/max_energy_range_uj": f"{max_range_uj}\n",
        "/sys/class/powercap/intel-rapl:1/name": "psys\n",
        "/sys/class/powercap/intel-rapl:1/energy_uj": "9000000\n",
        "/sys/class/powercap/intel-rapl:1/max_energy_range_uj": f"{max_range_uj}\n",
        **thermal_zone(0, "acpitz", "27800"), **thermal_zone(1, "x86_pkg_temp", "45000"),
        **{k: v for n in range(4) for k, v in cpufreq(n, 1800000).items()},
    })


class FakeClock:
    """An injectable clock_ns that only moves when told."""
    def __init__(self, t_ns: int = 1_000_000_000):
        self.t_ns = t_ns

    def __call__(self) -> int:
        return self.t_ns

    def advance(self, seconds: float) -> None:
        self.t_ns += round(seconds * 1e9)
