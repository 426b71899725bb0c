"""`edgert agent` and `edgert fleet monitor` as a user runs them: processes, the embedded broker,
a fake Jetson whose power sensor vanishes, a broker that is down, bad input."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

from cli_helpers import assert_one_line_error, invoke
from device_trees import ORIN_NANO_HWMON, build_orin_nano_jp6
from edgert.agent.agent import Agent
from edgert.agent.config import load_config
from edgert.fleet.broker import EmbeddedBroker
from mqtt_broker import free_port
from mqtt_collector import Collector
from tiny_pkg import write_tiny_package


def test_agent_and_monitor_end_to_end_on_the_embedded_broker(tmp_path):
    pkg = write_tiny_package(tmp_path / "m.pkg")
    with EmbeddedBroker("127.0.0.1", free_port()) as broker:
        mon = subprocess.Popen([sys.executable, "-m", "edgert", "fleet", "monitor", "--broker", broker.url,
                                "--fleet", "cli", "--json", "--interval", "0.5", "--duration", "9"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        agent = subprocess.run([sys.executable, "-m", "edgert", "agent", "--broker", broker.url, "--fleet", "cli",
                                "--device-id", "box-1", "--package", str(pkg), "--rate", "50",
                                "--spool", str(tmp_path / "st" / "spool.db"), "--summary-interval", "1",
                                "--flush-interval", "0.2", "--duration", "4"],
                               capture_output=True, text=True, timeout=60)
        assert agent.returncode == 0, agent.stderr
        assert "stopped after" in agent.stderr
        out, err = mon.communicate(timeout=60)
    assert mon.returncode == 0, err
    snaps = [json.loads(line) for line in out.splitlines() if line.strip()]
    seen = [d for s in snaps for d in s["devices"] if d["device"] == "box-1"]
    online = [d for d in seen if d["status"] == "online" and d["p50_ms"] is not None]
    assert online, out[-2000:]
    assert online[-1]["backend"] and online[-1]["inferences"] > 50 and online[-1]["seq_missing"] == 0
    assert seen[-1]["status"] == "offline"            # the clean stop's death


def test_agent_keeps_running_when_the_power_sensor_vanishes(mosquitto, tmp_path):
    root = build_orin_nano_jp6(tmp_path / "root")
    pkg = write_tiny_package(tmp_path / "m.pkg")
    cfg = load_config(None, broker=mosquitto.url, fleet="jet", device_id="orin-1", package=str(pkg),
                      rate_hz=50.0, spool=str(tmp_path / "st" / "spool.db"), flush_interval_s=0.1,
                      summary_interval_s=0.5)
    col = Collector(mosquitto.port).start()
    agent = Agent(cfg, root=root)
    th = threading.Thread(target=agent.run, kwargs={"duration_s": 30}, daemon=True)
    th.start()
    try:
        assert col.wait_for(lambda c: c.of("birth") and c.of("telemetry", "summary"), 15)
        birth = col.of("birth")[0]
        assert birth["sensor"] == {"name": "ina3221-hwmon", "estimated": False}
        assert birth["device_info"]["kind"] == "jetson-orin"
        summ = col.of("telemetry", "summary")[0]
        assert summ["sensor"] == "ina3221-hwmon" and summ["temp_c"] > 40
        shutil.rmtree(root / ORIN_NANO_HWMON.lstrip("/"))           # the hwmon directory vanishes
        assert col.wait_for(lambda c: any(e["event"] == "sensor_change" for e in c.of("event")), 10)
        n = len(col.of("telemetry", "summary"))
        assert col.wait_for(lambda c: len(c.of("telemetry", "summary")) >= n + 2, 10)   # still running
        later = col.of("telemetry", "summary")[-1]
        assert later["sensor"] != "ina3221-hwmon" and later["count"] > 0
    finally:
        agent.stop()
        th.join(20)
        col.stop()
    assert agent.report.inferences > 50 and agent.report.errors == 0


def test_agent_starts_and_spools_while_the_broker_is_down(tmp_path):
    pkg = write_tiny_package(tmp_path / "m.pkg")
    spool = tmp_path / "st" / "spool.db"
    res = invoke("agent", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--package", pkg, "--rate", "100",
                 "--spool", spool, "--duration", "1.5", "--flush-interval", "0.2", "--device-id", "d")
    assert res.exit_code == 0, res.output
    db = sqlite3.connect(spool)
    pending = db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
    db.close()
    assert pending >= 3      # started + records batches + stopping, kept for the next connection


def test_agent_bad_input_is_one_line(tmp_path):
    assert_one_line_error(invoke("agent", "--spool", tmp_path / "s.db", "--package", tmp_path / "nope.pkg"),
                          "nope.pkg")
    assert_one_line_error(invoke("agent", "--spool", tmp_path / "s.db"), "no package")
    bad = tmp_path / "junk.pkg"
    bad.write_bytes(b"junk" * 100)
    assert_one_line_error(invoke("agent", "--spool", tmp_path / "s2.db", "--package", bad))
    pkg = write_tiny_package(tmp_path / "m.pkg")
    assert_one_line_error(invoke("agent", "--spool", tmp_path / "s3.db", "--package", pkg, "--broker", "http://x"),
                          "scheme")
    assert_one_line_error(invoke("agent", "--spool", tmp_path / "s4.db", "--package", pkg, "--source", "webcam"),
                          "webcam")
    assert_one_line_error(invoke("agent", "--config", tmp_path / "missing.toml"), "missing.toml")
    assert_one_line_error(invoke("agent", "--spool", tmp_path / "s5.db", "--package", pkg, "--fleet", "a/b"),
                          "fleet")
    assert_one_line_error(invoke("agent", "--spool", tmp_path / "s6.db", "--package", pkg, "--sensor", "magic"),
                          "magic")
    time.sleep(0)
