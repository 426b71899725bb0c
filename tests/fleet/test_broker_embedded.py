"""The embedded amqtt broker: starts in a thread, carries QoS 1 between paho 2.x clients, reports a
busy port as TelemetryError, and frees its port on stop."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from edgert.errors import TelemetryError
from edgert.fleet.broker import EmbeddedBroker

pytest.importorskip("amqtt")
pytest.importorskip("paho.mqtt")
from mqtt_broker import Probe  # noqa: E402  (tests/ is on sys.path, see tests/conftest.py)

pytestmark = pytest.mark.timeout(60)
TOPIC = "edgert/v1/f/d1/telemetry"


def test_qos1_publish_reaches_subscriber():
    with EmbeddedBroker(port=0) as broker:
        assert broker.port > 0 and broker.url == f"mqtt://127.0.0.1:{broker.port}"
        with Probe(broker.port, "monitor") as sub, Probe(broker.port, "d1") as pub:
            assert [rc.value for rc in sub.subscribe("edgert/v1/+/+/telemetry", qos=1)] == [1]
            pub.publish(TOPIC, b'{"seq": 1}', qos=1)  # returns once the broker PUBACKed it
            assert sub.get() == (TOPIC, b'{"seq": 1}')


def test_port_in_use_is_a_one_line_telemetry_error():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        broker = EmbeddedBroker(port=port)
        with pytest.raises(TelemetryError, match=rf"127\.0\.0\.1:{port}.*in use") as e:
            broker.start(timeout_s=10)
        assert "\n" not in str(e.value)
        assert not broker.running


def test_second_broker_on_the_same_port_fails():
    with EmbeddedBroker(port=0) as first:
        with pytest.raises(TelemetryError, match="cannot listen"):
            EmbeddedBroker(port=first.port).start()
        with Probe(first.port, "still-up"):  # the first one is unaffected
            pass


def test_stop_frees_the_port():
    broker = EmbeddedBroker(port=0).start()
    port = broker.port
    probe = Probe(port, "connected-at-stop").connect()  # a live client must not keep the port
    broker.stop()
    probe.close()
    assert not broker.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with EmbeddedBroker(port=port) as again:
        with Probe(again.port, "after-restart"):
            pass
    broker.stop()  # idempotent


def test_missing_amqtt_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "amqtt", None)
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)
    with pytest.raises(TelemetryError, match=r"pip install 'edgert\[agent\]'"):
        EmbeddedBroker(port=0).start()


def test_serve_forever_stops_cleanly_on_sigterm():
    # the port is printed from on_ready, once serve_forever's signal handlers are in: printing it
    # after start() and before serve_forever() left a window in which SIGTERM killed the process
    code = ("from edgert.fleet.broker import EmbeddedBroker\n"
            "b = EmbeddedBroker(port=0)\n"
            "b.serve_forever(on_ready=lambda: print(b.port, flush=True))\n"
            "print('stopped', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        with Probe(port, "before-sigterm"):
            pass
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "stopped"
    assert err == ""  # amqtt stays quiet
