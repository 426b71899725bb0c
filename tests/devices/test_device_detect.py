from __future__ import annotations

import json
import platform

import pytest
from device_trees import (build_agx_orin_jp5, build_nano_jp4, build_orin_nano_jp6, build_pi4, build_pi5,
                           build_x86_rapl, build_xavier_nx_jp4)

from devices import DeviceInfo, detect
from devices.detect import l4t_release


@pytest.mark.parametrize("build, kind, model, soc, l4t, arch, cpus", [
    (build_pi4, "raspberry-pi-4", "Raspberry Pi 4 Model B Rev 1.4", "bcm2711", None, "aarch64", 4),
    (build_pi5, "raspberry-pi-5", "Raspberry Pi 5 Model B Rev 1.0", "bcm2712", None, "aarch64", 4),
    (build_nano_jp4, "jetson-nano", "NVIDIA Jetson Nano Developer Kit", "tegra210", "R32.7.1", "aarch64", 4),
    (build_xavier_nx_jp4, "jetson-xavier-nx", "NVIDIA Jetson Xavier NX Developer Kit", "tegra194", "R32.7.3",
     "aarch64", 6),
    (build_orin_nano_jp6, "jetson-orin", "NVIDIA Jetson Orin Nano Developer Kit", "tegra234", "R36.3.0",
     "aarch64", 6),
    (build_agx_orin_jp5, "jetson-orin", "Jetson AGX Orin Developer Kit", "tegra234", "R35.4.1", "aarch64", 12),
    (build_x86_rapl, "x86_64", "Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz", None, None, "x86_64", 4),
])
def test_detect_boards(tmp_path, build, kind, model, soc, l4t, arch, cpus):
    info = detect(build(tmp_path))
    assert info == DeviceInfo(kind=kind, model=model, soc=soc, l4t_release=l4t, arch=arch, cpu_count=cpus)
    assert json.loads(json.dumps(info.to_json()))["kind"] == kind


def test_device_tree_nul_is_stripped_and_arch_override(tmp_path):
    info = detect(build_pi5(tmp_path), arch="armv7l")
    assert "\0" not in info.model and info.arch == "armv7l"
    assert info.kind == "raspberry-pi-5"      # the board, whatever userland the arch says


def test_unknown_machine_falls_back_to_arch(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nCPU architecture: 8\n\n"
                                               "processor\t: 1\nCPU architecture: 8\n")
    info = detect(tmp_path)
    assert (info.kind, info.model, info.soc, info.arch, info.cpu_count) == (
        "aarch64", "aarch64", None, "aarch64", 2)
    empty = detect(tmp_path / "nothing", arch="riscv64")
    assert (empty.kind, empty.cpu_count, empty.l4t_release) == ("riscv64", 1, None)


def test_l4t_release_malformed_is_none(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("garbage\n")
    assert l4t_release(tmp_path) is None
    assert detect(tmp_path).kind != "jetson"


def test_detect_real_root_uses_platform():
    info = detect()
    assert info.arch == platform.machine() and info.cpu_count >= 1 and info.model
