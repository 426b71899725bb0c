"""The agent end to end, in-process, against a real Mosquitto: telemetry, commands, deploy."""
from __future__ import annotations

import hashlib
import json
import threading

import paho.mqtt.client as mqtt
import pytest

from edgert.agent.agent import Agent
from edgert.agent.config import load_config
from edgert.errors import InputError
from edgert.telemetry import schema, topics
from mqtt_collector import Collector
from tiny_pkg import write_tiny_package

FLEET, DEV = "e2e", "pi-1"


def _cfg(tmp_path, url, pkg, **kw):
    return load_config(None, broker=url, fleet=FLEET, device_id=DEV, package=str(pkg), source="synthetic",
                       rate_hz=kw.pop("rate_hz", 50.0), spool=str(tmp_path / "state" / "spool.db"),
                       flush_interval_s=0.1, summary_interval_s=0.5, sensor="utilisation", **kw)


def _send(port, cmd):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"op-{cmd['id']}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topics.topic(FLEET, DEV, "cmd"), json.dumps({"v": 1, **cmd}), qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def _reply(col, rid, timeout_s=15.0):
    assert col.wait_for(lambda c: any(e.get("request_id") == rid for e in c.of("event")), timeout_s), rid
    return next(e for e in col.of("event") if e.get("request_id") == rid)


def test_agent_publishes_valid_telemetry_and_obeys_commands(mosquitto, tmp_path):
    pkg_a = write_tiny_package(tmp_path / "a.pkg", seed=0)
    pkg_b = write_tiny_package(tmp_path / "b.pkg", seed=1)
    col = Collector(mosquitto.port).start()
    agent = Agent(_cfg(tmp_path, mosquitto.url, pkg_a))
    th = threading.Thread(target=agent.run, kwargs={"duration_s": 60}, daemon=True)
    th.start()
    try:
        assert col.wait_for(lambda c: c.of("telemetry", "summary") and c.of("state"), 15)
        _send(mosquitto.port, {"cmd": "status", "id": "s1"})
        status = _reply(col, "s1")
        assert status["ok"] and status["detail"]["inferences"] > 0

        _send(mosquitto.port, {"cmd": "bench", "id": "b1", "iterations": 5})
        bench = _reply(col, "b1")
        assert bench["ok"] and bench["detail"]["iters"] == 5

        bad = tmp_path / "bad.pkg"
        bad.write_bytes(pkg_b.read_bytes()[:-100])
        _send(mosquitto.port, {"cmd": "deploy", "id": "d0", "url": str(bad)})
        assert not _reply(col, "d0")["ok"]

        sha_b = hashlib.sha256(pkg_b.read_bytes()).hexdigest()
        _send(mosquitto.port, {"cmd": "deploy", "id": "d1", "url": pkg_b.as_uri(), "sha256": sha_b})
        dep = _reply(col, "d1")
        assert dep["ok"], dep["message"]
        new_sha = agent.session.package.file_sha256
        # records after the deploy carry the new package's hash
        assert col.wait_for(lambda c: any(r["package_sha256"] == new_sha for r in c.of("telemetry", "records")), 10)
    finally:
        agent.stop()
        th.join(20)
    assert not th.is_alive()
    col.wait_for(lambda c: c.of("death"), 5)
    col.stop()

    msgs = col.of()
    for t, p, _ in col.messages:
        kind = topics.parse_topic(t).kind
        schema.validate(p, kind)                      # every message matches schema v1
    seqs = col.seqs()
    assert sorted(set(seqs)) == list(range(1, max(seqs) + 1))   # nothing lost
    births = col.of("birth")
    assert births[0]["package"]["sha256"] and births[0]["device_info"]["arch"]
    summ = col.of("telemetry", "summary")[0]
    assert summ["energy_estimated"] is True and summ["sensor"] == "utilisation"
    assert summ["count"] > 0 and summ["latency_ms"]["p50"] > 0 and summ["energy_j_per_inference"] > 0
    assert any(not s["online"] for s in col.of("state"))      # clean stop -> retained offline state
    assert col.of("death")[-1]["bdseq"] == births[-1]["bdseq"]
    assert len(msgs) > 10


def test_agent_without_package_is_an_input_error(tmp_path):
    cfg = load_config(None, spool=str(tmp_path / "s.db"), package="")
    with pytest.raises(InputError, match="no package"):
        Agent(cfg).run(duration_s=1)


def test_config_file_and_flags(tmp_path):
    cfgfile = tmp_path / "agent.toml"
    cfgfile.write_text('[agent]\nfleet = "f1"\nrate_hz = 5\nsource = "images:/x"\n')
    cfg = load_config(cfgfile, rate_hz=7.5, fleet=None)
    assert (cfg.fleet, cfg.rate_hz, cfg.source) == ("f1", 7.5, "images:/x")
    cfgfile.write_text('[agent]\nfleet = "f1"\nrat_hz = 5\n')
    with pytest.raises(InputError, match="unknown key.*rat_hz"):
        load_config(cfgfile)
    cfgfile.write_text('[agent]\nrate_hz = "fast"\n')
    with pytest.raises(InputError, match="rate_hz must be a number"):
        load_config(cfgfile)
    cfgfile.write_text('[agent\n')
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(cfgfile)


def test_the_shipped_example_config_loads():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "deploy" / "agent.example.toml"
    cfg = load_config(example)
    assert cfg.spool == "/var/lib/edgert/spool.db" and cfg.store_dir == Path("/var/lib/edgert/packages")
    assert cfg.broker.startswith("mqtt://")
