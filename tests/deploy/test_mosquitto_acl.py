"""The production ACL (deploy/mosquitto/acl) and config on a real Mosquitto, with a password file made
by deploy/mosquitto/add-device.sh.

MQTT 3.1.1: Mosquitto drops a publish the ACL denies and still PUBACKs it, and grants every SUBACK, so
"denied" is checked as "not delivered", each time with a positive control sent after the denied message
on the same connection: once the control arrives, the denied one would have arrived before it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mqtt_broker import Mosquitto, MosquittoError, Probe, free_port, require_mosquitto

pytestmark = pytest.mark.timeout(60)
pytest.importorskip("paho.mqtt")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PASSWORDS = {"d1": "pw-d1", "d2": "pw-d2", "monitor": "pw-monitor"}


def add_device(passwd: Path, device: str, password: str) -> None:
    subprocess.run([str(DEPLOY / "add-device.sh"), "-f", str(passwd), device, password],
                   check=True, timeout=30, capture_output=True)


@pytest.fixture
def fleet_broker(tmp_path):
    require_mosquitto()
    passwd = tmp_path / "passwd"
    for user, password in PASSWORDS.items():
        add_device(passwd, user, password)
    broker = Mosquitto(tmp_path / "broker", acl=(DEPLOY / "acl").read_text(), password_file=passwd)
    with broker:
        yield broker


def login(broker: Mosquitto, user: str, **kw) -> Probe:
    return Probe(broker.port, f"{user}-{os.getpid()}", username=user, password=PASSWORDS[user], **kw)


def test_device_publishes_its_own_topics_and_the_monitor_reads_them(fleet_broker):
    with login(fleet_broker, "monitor") as mon, login(fleet_broker, "d1") as d1:
        mon.subscribe("edgert/v1/#")
        kinds = ("birth", "state", "telemetry", "event", "death")
        for kind in kinds:
            d1.publish(f"edgert/v1/lab/d1/{kind}", kind.encode())
        assert [mon.get() for _ in kinds] == [(f"edgert/v1/lab/d1/{k}", k.encode()) for k in kinds]


def test_device_cannot_publish_as_another_device(fleet_broker):
    with login(fleet_broker, "monitor") as mon, login(fleet_broker, "d1") as d1:
        mon.subscribe("edgert/v1/#")
        d1.publish("edgert/v1/lab/d2/telemetry", b"spoofed")  # PUBACKed, then dropped
        d1.publish("edgert/v1/lab/d1/cmd", b"own cmd topic")   # not writable by a device either
        d1.publish("edgert/v1/lab/d1/telemetry", b"control")
        assert mon.get() == ("edgert/v1/lab/d1/telemetry", b"control")
        assert mon.drain() == []


def test_device_cannot_read_another_devices_commands(fleet_broker):
    with login(fleet_broker, "monitor") as mon, login(fleet_broker, "d1") as d1:
        # Both SUBACKs say granted: Mosquitto 2.0.11 enforces `read` per delivered message.
        assert [rc.is_failure for rc in d1.subscribe("edgert/v1/lab/d2/cmd")] == [False]
        assert [rc.is_failure for rc in d1.subscribe("edgert/v1/#")] == [False]
        mon.publish("edgert/v1/lab/d2/cmd", b"for d2")
        mon.publish("edgert/v1/lab/d2/telemetry", b"monitor may not write telemetry")
        mon.publish("edgert/v1/lab/d1/cmd", b"for d1")
        assert d1.get() == ("edgert/v1/lab/d1/cmd", b"for d1")
        assert d1.drain() == []


def test_monitor_commands_a_device(fleet_broker):
    with login(fleet_broker, "monitor") as mon, login(fleet_broker, "d1") as d1:
        d1.subscribe("edgert/v1/+/d1/cmd")  # the `+` in the ACL pattern and in the filter
        mon.publish("edgert/v1/other-fleet/d1/cmd", b'{"cmd": "reload"}')
        assert d1.get() == ("edgert/v1/other-fleet/d1/cmd", b'{"cmd": "reload"}')


def test_last_will_only_on_the_devices_own_death_topic(fleet_broker):
    with login(fleet_broker, "monitor") as mon:
        mon.subscribe("edgert/v1/+/+/death")
        # Accepted at CONNECT, dropped when it fires.
        forged = login(fleet_broker, "d1", will=("edgert/v1/lab/d2/death", b"forged"))
        forged.connect(background=False).abort()
        own = Probe(fleet_broker.port, "d1-own-will", username="d1", password=PASSWORDS["d1"],
                    will=("edgert/v1/lab/d1/death", b"gone"))
        own.connect(background=False).abort()
        assert mon.get() == ("edgert/v1/lab/d1/death", b"gone")
        assert mon.drain() == []


def test_anonymous_and_wrong_password_are_refused(fleet_broker):
    with pytest.raises(MosquittoError, match="[Nn]ot authori[sz]ed"):
        Probe(fleet_broker.port, "anonymous").connect()
    with pytest.raises(MosquittoError, match="[Nn]ot authori[sz]ed"):
        Probe(fleet_broker.port, "d1-bad", username="d1", password="wrong").connect()


def test_add_device_updates_a_password(fleet_broker, tmp_path):
    add_device(fleet_broker.password_file, "d1", "new-pw")
    fleet_broker.restart()  # production reloads with SIGHUP; a restart keeps the test simple
    with pytest.raises(MosquittoError, match="[Nn]ot authori[sz]ed"):
        login(fleet_broker, "d1").connect()
    with Probe(fleet_broker.port, "d1-new", username="d1", password="new-pw"):
        pass


# -- the production mosquitto.conf ------------------------------------------------------------------

def _make_certs(d: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, timeout=30, capture_output=True, cwd=d)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *ec, "-days", "2", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.cnf", "-out", "server.crt")


def test_production_config_starts_and_serves_tls(tmp_path):
    """deploy/mosquitto/mosquitto.conf as shipped, with its paths and ports moved into tmp_path."""
    require_mosquitto()
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    etc = tmp_path / "etc"
    (etc / "certs").mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    _make_certs(etc / "certs")
    (etc / "acl").write_text((DEPLOY / "acl").read_text())
    for user, password in PASSWORDS.items():
        add_device(etc / "passwd", user, password)
    plain, tls = free_port(), free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text()
    conf = conf.replace("/etc/mosquitto/", f"{etc}/").replace("/var/lib/mosquitto/", f"{tmp_path}/lib/")
    conf = conf.replace("/run/mosquitto/mosquitto.pid", f"{tmp_path}/mosquitto.pid")
    conf = re.sub(r"^listener 1883$", f"listener {plain} 127.0.0.1", conf, flags=re.M)
    conf = re.sub(r"^listener 8883$", f"listener {tls} 127.0.0.1", conf, flags=re.M)
    settings = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert not any("/etc/mosquitto" in line or "/var/lib" in line for line in settings), settings
    if os.geteuid() == 0:
        conf = "user root\n" + conf  # tmp_path is not readable by user mosquitto

    broker = Mosquitto(tmp_path, port=plain, config_text=conf)  # logs to stderr, which it captures
    try:
        broker.start()
    except MosquittoError as e:
        if "Address already in use" in str(e):
            pytest.skip("lost a port race to another process")
        raise
    try:
        with Probe(tls, "d1-tls", username="d1", password=PASSWORDS["d1"], tls_ca=str(etc / "certs/ca.crt"),
                   host="localhost") as d1, \
             Probe(plain, "mon-plain", username="monitor", password=PASSWORDS["monitor"]) as mon:
            mon.subscribe("edgert/v1/#")
            d1.publish("edgert/v1/lab/d2/telemetry", b"denied")
            d1.publish("edgert/v1/lab/d1/telemetry", b"over tls")
            assert mon.get() == ("edgert/v1/lab/d1/telemetry", b"over tls")
        with pytest.raises(MosquittoError, match="[Nn]ot authori[sz]ed"):
            Probe(plain, "anonymous").connect()
    finally:
        broker.stop()
    assert (tmp_path / "lib" / "mosquitto.db").exists()  # persistence as configured


def test_shared_subscription_is_authorised_like_its_filter(fleet_broker):
    with login(fleet_broker, "monitor") as mon, login(fleet_broker, "d1") as d1, \
         login(fleet_broker, "d2") as d2:
        mon.subscribe("$share/monitor/edgert/v1/+/+/telemetry")
        d1.subscribe("$share/snoop/edgert/v1/+/+/telemetry")  # granted, but d1 may not read d2's
        d2.publish("edgert/v1/lab/d2/telemetry", b"from d2")
        assert mon.get() == ("edgert/v1/lab/d2/telemetry", b"from d2")
        assert d1.drain() == []
