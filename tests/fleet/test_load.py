"""Load: 200 simulated devices at 10 msg/s each for 60 s through a real Mosquitto on loopback.

The fleet monitor must account for every device and every message (seq-exact, no gaps).  Bounded:
200 x 600 telemetry messages + births + deaths, loopback only, ~75 s wall."""
from __future__ import annotations

import os
import time

import pytest

from edgert.fleet.monitor import FleetMonitor, MonitorOptions
from edgert.fleet.simulate import SimOptions, device_ids, simulate
from edgert.telemetry.mqtt import BrokerOptions

pytestmark = pytest.mark.slow

DEVICES = int(os.environ.get("EDGERT_LOAD_DEVICES", "200"))
RATE_HZ = 10.0
DURATION_S = float(os.environ.get("EDGERT_LOAD_DURATION_S", "60"))


def test_monitor_accounts_for_every_device_and_message(mosquitto):
    broker = BrokerOptions(url=mosquitto.url)
    opts = SimOptions(devices=DEVICES, rate_hz=RATE_HZ, duration_s=DURATION_S, fleet="load", processes=4)
    mon = FleetMonitor(broker, MonitorOptions(fleet="load")).start()
    try:
        result = simulate(broker, opts)
        per_device = int(round(DURATION_S * RATE_HZ))
        assert result.devices == DEVICES and result.published == DEVICES * per_device
        assert result.acked == result.published          # every QoS 1 publish was PUBACKed
        end = time.monotonic() + 30
        while time.monotonic() < end:
            snap = mon.snapshot()
            if snap.totals["seq_received"] >= result.published:
                break
            time.sleep(0.2)
    finally:
        mon.stop()
    snap = mon.snapshot()
    views = {v.device: v for v in snap.devices}
    assert sorted(views) == device_ids(opts)
    for dev, v in views.items():
        assert (v.seq_first, v.seq_highest, v.seq_received, v.seq_missing) == (1, per_device, per_device, 0), dev
        assert v.status == "offline"                      # each sent a clean death at the end
        assert v.p50_ms is not None and 4.0 < v.p50_ms < 23.0
    assert snap.totals["seq_received"] == result.published
    assert snap.totals["seq_missing"] == 0 and snap.totals["malformed"] == 0
    # births + telemetry + deaths, nothing else, nothing missing
    assert snap.totals["messages"] == result.published + 2 * DEVICES + snap.totals["duplicates"]
    print(f"\nload: {DEVICES} devices, {result.published} msgs in {result.elapsed_s:.1f} s "
          f"({result.msgs_per_s:.0f} msg/s), late ticks {result.late_ticks}, duplicates {snap.totals['duplicates']}")
