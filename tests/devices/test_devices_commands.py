"""The real subprocess paths (default runner, tegrastats process) with stand-in commands."""
from __future__ import annotations

import sys
import time

import pytest
from devices._sysfs import run_command
from devices.sensors.tegrastats import Tegrastats, spawn_process
from edgert.errors import SensorError

NANO_JP4 = ("RAM 2008/3956MB (lfb 1x4MB) CPU [12%@1479,8%@1479,9%@1479,6%@1479] GR3D_FREQ 0% "
            "POM_5V_IN 2591/2591 POM_5V_GPU 0/0 POM_5V_CPU 386/386")


def test_run_command():
    assert run_command([sys.executable, "-c", "print('throttled=0x0')"]) == "throttled=0x0\n"
    with pytest.raises(SensorError, match="exited with 3: boom"):
        run_command([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
    with pytest.raises(SensorError, match="not found on PATH"):
        run_command(["edgert-no-such-command-xyz"])
    with pytest.raises(SensorError, match="did not finish within 0.2 s"):
        run_command([sys.executable, "-c", "import time; time.sleep(5)"], timeout_s=0.2)


def test_tegrastats_through_a_real_process():
    script = f"import time\nprint({NANO_JP4!r}, flush=True)\ntime.sleep(30)\n"
    s = Tegrastats([sys.executable, "-c", script], spawn_process, interval_ms=100)
    assert s.read().power_mw == 2591.0
    start = time.monotonic()
    s.close()                      # terminates the process and joins the reader
    assert time.monotonic() - start < 3 and not s._thread.is_alive()
