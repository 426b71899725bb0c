"""The broker link against a real Mosquitto on loopback."""
from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest

from edgert.errors import TelemetryError
from edgert.telemetry import schema, topics
from edgert.telemetry.link import Link, LinkOptions, backoff_delay
from edgert.telemetry.mqtt import BrokerOptions
from edgert.telemetry.spool import Spool
from mqtt_collector import Collector

FLEET, DEV = "lab", "dev1"


def _birth(bdseq: int) -> dict:
    return {**schema.header("birth", FLEET, DEV, 1), "bdseq": bdseq, "device_info": {"kind": "x86_64"},
            "package": None, "backend": None, "versions": {"edgert": "test"}, "sensor": None,
            "summary_interval_s": 10.0}


def _event(i: int) -> bytes:
    return schema.encode({**schema.header("event", FLEET, DEV, i), "event": "status", "ok": True,
                          "message": f"m{i}"})


def _link(spool, url, **kw) -> Link:
    opts = LinkOptions(BrokerOptions(url=url), FLEET, DEV, backoff_min_s=0.05, backoff_max_s=0.5, **kw)
    return Link(opts, spool, birth=_birth, **{k: v for k, v in kw.items() if k.startswith("on_")})


def _put(spool, n, start=0):
    return spool.put_many([(topics.topic(FLEET, DEV, "event"), _event(start + i), False) for i in range(n)])


def test_backoff_grows_and_caps():
    import random
    rng = random.Random(0)
    d = [backoff_delay(a, 0.25, 30.0, rng) for a in range(12)]
    assert 0.2 <= d[0] <= 0.3 and 0.4 <= d[1] <= 0.6 and 1.6 <= d[3] <= 2.4
    assert max(d) <= 30.0 and d[-1] >= 24.0


def test_bad_url_fails_at_construction(tmp_path):
    with Spool(tmp_path / "s.db") as sp, pytest.raises(TelemetryError, match="scheme"):
        _link(sp, "http://127.0.0.1:1")


def test_spooled_messages_arrive_in_order_with_seq_and_are_acked(mosquitto, tmp_path):
    with Collector(mosquitto.port) as col, Spool(tmp_path / "s.db") as sp:
        seqs = _put(sp, 50)
        link = _link(sp, mosquitto.url).start()
        link.set_state({**schema.header("state", FLEET, DEV, 1), "online": True, "bdseq": 0,
                        "status": "running", "package": None, "backend": None})
        assert link.wait_drained(10)
        assert col.wait_for(lambda c: len(c.seqs()) == 50 and c.of("state"))
        assert col.seqs() == seqs
        for p in col.of("event"):
            schema.validate(p, "event")
        birth = col.of("birth")[0]
        assert birth["bdseq"] == link.bdseq == 1
        state = col.of("state")[0]
        assert state["online"] is True and state["bdseq"] == 1
        link.stop()
        # clean stop: retained state says offline, and an explicit death with the same bdseq
        assert col.wait_for(lambda c: c.of("death") and any(not s["online"] for s in c.of("state")))
        assert col.of("death")[0]["bdseq"] == 1
        assert sp.pending == 0 and sp.counter("acked_total") == 50


def test_broker_down_then_up_replays_everything(mosquitto, tmp_path):
    col = Collector(mosquitto.port, client_id="replay-col").start()   # persistent: survives the outage
    mosquitto.stop()
    with Spool(tmp_path / "s.db") as sp:
        link = _link(sp, mosquitto.url).start()
        seqs = _put(sp, 30)
        time.sleep(0.5)
        assert not link.connected and link.stats.failed_connects >= 1
        assert "cannot connect" in link.stats.last_error
        assert sp.pending == 30
        mosquitto.start()
        seqs += _put(sp, 10, start=30)
        assert link.wait_connected(10) and link.wait_drained(10)
        assert col.wait_for(lambda c: set(seqs) <= set(c.seqs()))
        got = [q for q in col.seqs() if q >= seqs[0]]
        assert got == sorted(got)   # replay is in seq order
        col.stop()
        link.stop()


def test_broker_restarts_lose_nothing(mosquitto, tmp_path):
    col = Collector(mosquitto.port, client_id="restart-col").start()   # persistent session
    with Spool(tmp_path / "s.db") as sp:
        link = _link(sp, mosquitto.url).start()
        sent = []
        for round_ in range(3):
            sent += _put(sp, 20, start=round_ * 100)
            time.sleep(0.1)
            mosquitto.stop()                   # SIGTERM: mosquitto saves its db (the queued messages)
            sent += _put(sp, 20, start=round_ * 100 + 50)   # spooled while the broker is down
            mosquitto.start()
        assert link.wait_drained(15)
        assert col.wait_for(lambda c: set(sent) <= set(c.seqs()), timeout_s=15)
        assert link.stats.connects >= 2
        births = col.of("birth")
        assert len({b["bdseq"] for b in births}) == len(births)   # a new bdseq per connection
        link.stop()
    col.stop()


def test_commands_reach_the_handler_and_bad_ones_are_reported(mosquitto, tmp_path):
    got, bad = [], []
    with Spool(tmp_path / "s.db") as sp:
        opts = LinkOptions(BrokerOptions(url=mosquitto.url), FLEET, DEV, backoff_min_s=0.05)
        link = Link(opts, sp, birth=_birth, on_command=got.append, on_bad_command=bad.append).start()
        assert link.wait_connected(10)
        time.sleep(0.2)   # the SUBSCRIBE follows CONNACK
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="op")
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        t = topics.topic(FLEET, DEV, "cmd")
        pub.publish(t, json.dumps({"v": 1, "cmd": "status", "id": "r1"}), qos=1).wait_for_publish(5)
        pub.publish(t, b"not json", qos=1).wait_for_publish(5)
        pub.publish(t, json.dumps({"v": 1, "cmd": "format-disk", "id": "r2"}), qos=1).wait_for_publish(5)
        end = time.monotonic() + 5
        while time.monotonic() < end and (len(got) < 1 or len(bad) < 2):
            time.sleep(0.02)
        pub.loop_stop()
        link.stop()
    assert [c["id"] for c in got] == ["r1"]
    assert len(bad) == 2 and "not JSON" in bad[0] and "unknown command" in bad[1]

