"""`edgert fleet monitor|send` and FleetMonitor against real brokers on loopback (bounded waits)."""
from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, invoke
from edgert.errors import TelemetryError
from edgert.telemetry import schema, topics
from edgert.telemetry.mqtt import BrokerOptions, parse_broker_url
from mqtt_broker import Mosquitto, free_port, mosquitto_available

pytest.importorskip("paho.mqtt.client")
pytest.importorskip("rich")

WAIT_S = 5.0


def wait_until(pred, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout_s} s")


def start_embedded(port: int | None = None):
    from edgert.fleet.broker import EmbeddedBroker

    for _ in range(5):  # another xdist worker may grab a free port first
        try:
            return EmbeddedBroker("127.0.0.1", port or free_port()).start()
        except TelemetryError:
            if port is not None:
                raise
    raise AssertionError("no free port for the embedded broker")


@pytest.fixture(scope="module")
def broker():
    pytest.importorskip("amqtt")
    b = start_embedded()
    yield b
    b.stop()


@pytest.fixture
def fleet_id() -> str:
    """A fleet of its own per test: retained messages on the shared broker stay out of other tests."""
    return f"f{uuid.uuid4().hex[:8]}"


@contextmanager
def mqtt_client(url: str, subscribe: str | None = None):
    """A plain paho client (the device side): yields (publish, received)."""
    import paho.mqtt.client as mqtt

    addr = parse_broker_url(url)
    received: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
    c.on_message = lambda cl, ud, msg: received.append((msg.topic, msg.payload))
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(addr.host, addr.port)
    c.loop_start()
    if subscribe:
        c.subscribe(subscribe, qos=1)
        assert subscribed.wait(WAIT_S)

    def publish(topic: str, payload: bytes, retain: bool = False) -> None:
        info = c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()

    try:
        yield publish, received
    finally:
        c.disconnect()
        c.loop_stop()


def birth(fleet: str, device: str, bdseq: int = 1) -> bytes:
    return schema.encode({**schema.header("birth", fleet, device, 1), "bdseq": bdseq,
                          "device_info": {"kind": "rpi", "model": "Pi 5"},
                          "package": {"sha256": "c" * 64, "name": "det.pkg"}, "backend": "ort",
                          "versions": {}, "sensor": None, "summary_interval_s": 5})


def summary(fleet: str, device: str, seq: int, p50: float) -> bytes:
    return schema.encode({**schema.header("summary", fleet, device, 1), "seq": seq, "window_s": 5,
                          "count": 10, "latency_ms": {"p50": p50, "p90": p50, "p99": p50 * 2,
                                                      "mean": p50, "max": p50 * 3},
                          "energy_j_per_inference": 0.5, "power_w": 3.0, "energy_estimated": False,
                          "sensor": "ina219", "temp_c": 48.0, "throttled": False,
                          "package_sha256": "c" * 64, "backend": "ort"})


def state(fleet: str, device: str, online: bool = True, bdseq: int = 1) -> bytes:
    return schema.encode({**schema.header("state", fleet, device, 1), "online": online, "bdseq": bdseq,
                          "status": "running", "package": {"sha256": "c" * 64}, "backend": "ort"})


def dead_url() -> str:
    return f"mqtt://127.0.0.1:{free_port()}"   # nothing listens there


# -- no broker needed ----------------------------------------------------------------------------

def test_monitor_with_the_broker_down_is_one_line_exit_2():
    url = dead_url()
    res = invoke("fleet", "monitor", "--broker", url, "--json", "--once")
    assert_one_line_error(res, url, "connection refused")


def test_monitor_rejects_bad_options_before_connecting():
    assert_one_line_error(invoke("fleet", "monitor", "--broker", dead_url(), "--persistent"), "client_id")
    assert_one_line_error(invoke("fleet", "monitor", "--broker", dead_url(), "--fleet", "a/b"), "fleet")
    assert_one_line_error(invoke("fleet", "monitor", "--broker", "http://x", "--once"), "scheme")
    res = invoke("fleet", "monitor", "--interval", "0")
    assert res.exit_code == 2 and "--interval" in res.output


@pytest.mark.parametrize("args, needle", [
    (["--cmd", "deploy"], "needs --url and --sha256"),
    (["--cmd", "deploy", "--url", "http://h/p.pkg", "--sha256", "xyz"], "sha256 must be"),
    (["--cmd", "status", "--url", "http://h/p.pkg"], "belong to --cmd deploy"),
    (["--cmd", "status", "--iterations", "5"], "belongs to --cmd bench"),
])
def test_send_bad_args_are_one_line_errors(args, needle):
    res = invoke("fleet", "send", "pi-01", "--fleet", "lab", "--broker", dead_url(), *args)
    assert_one_line_error(res, needle)


def test_send_bad_ids_and_usage_errors():
    assert_one_line_error(invoke("fleet", "send", "a/b", "--fleet", "lab", "--cmd", "status",
                                 "--broker", dead_url()), "device id")
    assert_one_line_error(invoke("fleet", "send", "pi", "--fleet", "+", "--cmd", "status",
                                 "--broker", dead_url()), "fleet")
    res = invoke("fleet", "send", "pi", "--fleet", "lab", "--cmd", "reboot")
    assert res.exit_code == 2 and "reboot" in res.output
    url = dead_url()
    assert_one_line_error(invoke("fleet", "send", "pi", "--fleet", "lab", "--cmd", "status", "--broker", url),
                          "connection refused")


# -- against a real broker -----------------------------------------------------------------------

def test_monitor_sees_births_and_summaries(broker, fleet_id):
    from edgert.fleet.monitor import FleetMonitor, MonitorOptions

    with FleetMonitor(BrokerOptions(url=broker.url), MonitorOptions(fleet=fleet_id)) as mon, \
            mqtt_client(broker.url) as (publish, _):
        publish(topics.topic(fleet_id, "pi-01", "birth"), birth(fleet_id, "pi-01"))
        for seq, p50 in enumerate((8.0, 9.0, 10.0)):
            publish(topics.topic(fleet_id, "pi-01", "telemetry"), summary(fleet_id, "pi-01", seq, p50))
        publish(topics.topic("other-fleet", "x", "birth"), birth("other-fleet", "x"))  # not subscribed
        view = wait_until(lambda: next((d for d in mon.snapshot().devices if d.seq_received == 3), None))
        assert (view.fleet, view.device, view.status, view.model) == (fleet_id, "pi-01", "online", "Pi 5")
        assert (view.p50_ms, view.p99_ms, view.baseline_p50_ms, view.seq_missing) == (10.0, 20.0, 9.0, 0)
        assert [d.fleet for d in mon.snapshot().devices] == [fleet_id]


def test_send_command_reaches_the_device(broker, fleet_id):
    from edgert.fleet.monitor import FleetMonitor, MonitorOptions

    cmd_topic = topics.topic(fleet_id, "pi-01", "cmd")
    with mqtt_client(broker.url, subscribe=cmd_topic) as (_, received), \
            FleetMonitor(BrokerOptions(url=broker.url), MonitorOptions(fleet=fleet_id)) as mon:
        sent = mon.send_command(fleet_id, "pi-01", {"cmd": "bench", "iterations": 20})
        topic, payload = wait_until(lambda: received and received[0])
        assert topic == cmd_topic
        got = schema.decode(payload, "cmd")
        assert got == sent and got["iterations"] == 20 and got["id"]
        assert mon.snapshot().devices == []        # its own command is not device traffic
        with pytest.raises(TelemetryError, match="unknown command"):
            mon.send_command(fleet_id, "pi-01", {"cmd": "reboot"})


def test_cli_send_reaches_the_device(broker, fleet_id):
    cmd_topic = topics.topic(fleet_id, "pi-02", "cmd")
    with mqtt_client(broker.url, subscribe=cmd_topic) as (_, received):
        res = invoke("fleet", "send", "pi-02", "--fleet", fleet_id, "--cmd", "deploy", "--broker", broker.url,
                     "--url", "https://pkgs.example/det.pkg", "--sha256", "D" * 64)
        assert res.exit_code == 0, res.output
        assert cmd_topic in res.output
        _, payload = wait_until(lambda: received and received[0])
        got = schema.decode(payload, "cmd")
        assert (got["cmd"], got["url"], got["sha256"]) == ("deploy", "https://pkgs.example/det.pkg", "d" * 64)


def test_cli_monitor_json_lines_over_a_duration(broker, fleet_id):
    stop = threading.Event()
    with mqtt_client(broker.url) as (publish, _):
        publish(topics.topic(fleet_id, "cam-1", "state"), state(fleet_id, "cam-1"), retain=True)

        def device() -> None:  # keeps reporting while the monitor runs
            seq = 0
            while not stop.wait(0.1):
                publish(topics.topic(fleet_id, "cam-1", "telemetry"), summary(fleet_id, "cam-1", seq, 12.5))
                seq += 1

        t = threading.Thread(target=device, daemon=True)
        t.start()
        try:
            t0 = time.monotonic()
            res = invoke("fleet", "monitor", "--broker", broker.url, "--fleet", fleet_id, "--json",
                         "--interval", "0.5", "--duration", "2")
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            t.join(WAIT_S)
        publish(topics.topic(fleet_id, "cam-1", "state"), b"", retain=True)  # clear the retained state
    assert res.exit_code == 0, res.output
    assert 1.9 < elapsed < 4.0
    lines = [json.loads(line) for line in res.output.splitlines()]
    assert 3 <= len(lines) <= 5
    assert all(set(doc) == {"t_s", "totals", "devices", "alerts"} for doc in lines)
    last = lines[-1]["devices"]
    assert [d["device"] for d in last] == ["cam-1"]
    assert last[0]["status"] == "online" and last[0]["p50_ms"] == 12.5
    assert last[0]["seq_received"] >= 5 and last[0]["seq_missing"] == 0


def test_cli_monitor_once_prints_a_table_from_retained_state(broker, fleet_id):
    with mqtt_client(broker.url) as (publish, _):
        publish(topics.topic(fleet_id, "gate-7", "state"), state(fleet_id, "gate-7", online=False), retain=True)
        t0 = time.monotonic()
        res = invoke("fleet", "monitor", "--broker", broker.url, "--fleet", fleet_id, "--once",
                     "--interval", "3", env={"COLUMNS": "200"})
        elapsed = time.monotonic() - t0
        publish(topics.topic(fleet_id, "gate-7", "state"), b"", retain=True)
    assert res.exit_code == 0, res.output
    assert elapsed < 2.5  # returned once the retained burst went quiet, not after the full interval
    assert "gate-7" in res.output and "offline" in res.output and "alerts (1)" in res.output


def test_monitor_reconnects_after_a_broker_restart(fleet_id):
    pytest.importorskip("amqtt")
    from edgert.fleet.monitor import FleetMonitor, MonitorOptions

    b = start_embedded()
    try:
        with FleetMonitor(BrokerOptions(url=b.url), MonitorOptions(fleet=fleet_id)) as mon:
            b.stop()
            b = start_embedded(b.port)
            with mqtt_client(b.url) as (publish, _):
                # the monitor resubscribes on reconnect (paho retries after 1 s)
                def seen() -> bool:
                    publish(topics.topic(fleet_id, "pi-9", "birth"), birth(fleet_id, "pi-9"))
                    return bool(mon.snapshot().devices)
                wait_until(seen, timeout_s=8)
    finally:
        b.stop()


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
def test_bad_credentials_are_one_line_exit_2(tmp_path: Path):
    with Mosquitto(tmp_path / "mq", users={"monitor": "right"}, persistence=False) as mq:
        pw = tmp_path / "pw"
        pw.write_text("wrong\n")
        res = invoke("fleet", "monitor", "--broker", mq.url, "--username", "monitor", "--password-file", pw,
                     "--json", "--once")
        assert_one_line_error(res, "refused the connection", "not authorized")
        pw.write_text("right\n")
        res = invoke("fleet", "monitor", "--broker", mq.url, "--username", "monitor", "--password-file", pw,
                     "--json", "--once", "--interval", "0.2")
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["devices"] == []


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
def test_persistent_session_gets_what_was_sent_while_away(tmp_path: Path, fleet_id):
    from edgert.fleet.monitor import FleetMonitor, MonitorOptions

    opts = MonitorOptions(fleet=fleet_id, client_id=f"mon-{fleet_id}", persistent=True)
    with Mosquitto(tmp_path / "mq", persistence=False) as mq:
        bopts = BrokerOptions(url=mq.url)
        FleetMonitor(bopts, opts).start().stop()            # the broker now holds our subscription
        with mqtt_client(mq.url) as (publish, _):
            for seq in range(5):
                publish(topics.topic(fleet_id, "pi-3", "telemetry"), summary(fleet_id, "pi-3", seq, 5.0))
        with FleetMonitor(bopts, opts) as mon:
            view = wait_until(lambda: next((d for d in mon.snapshot().devices if d.seq_received == 5), None))
            assert view.seq_missing == 0 and view.duplicates == 0
