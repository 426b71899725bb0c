"""TLS and username/password from the agent's config, against a real Mosquitto with a TLS listener."""
from __future__ import annotations

import datetime as dt
import ipaddress

import pytest

from edgert.errors import TelemetryError
from edgert.telemetry import schema, topics
from edgert.telemetry.link import Link, LinkOptions
from edgert.telemetry.mqtt import BrokerOptions, make_client
from edgert.telemetry.spool import Spool
from mqtt_broker import Mosquitto, free_port, require_mosquitto
from mqtt_collector import Collector


def _pem_pair(tmp_path, name, issuer_key=None, issuer_name=None, ca=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return key, subject, cert_path, key_path


@pytest.fixture()
def tls_broker(tmp_path):
    require_mosquitto()
    ca_key, ca_name, ca_crt, _ = _pem_pair(tmp_path, "ca", ca=True)
    _, _, srv_crt, srv_key = _pem_pair(tmp_path, "server", issuer_key=ca_key, issuer_name=ca_name)
    tls_port = free_port()
    extra = f"listener {tls_port} 127.0.0.1\ncafile {ca_crt}\ncertfile {srv_crt}\nkeyfile {srv_key}\n"
    with Mosquitto(tmp_path / "mq", users={"dev1": "s3cret", "monitor": "mon"}, extra_conf=extra) as broker:
        yield broker, tls_port, ca_crt


def _birth(bdseq):
    return {**schema.header("birth", "tls", "dev1", 1), "bdseq": bdseq, "device_info": {}, "package": None,
            "backend": None, "versions": {}, "sensor": None, "summary_interval_s": 10.0}


def test_link_over_tls_with_password_file(tls_broker, tmp_path):
    broker, tls_port, ca = tls_broker
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    opts = BrokerOptions(url=f"mqtts://127.0.0.1:{tls_port}", username="dev1", password_file=str(pw),
                         tls_ca=str(ca))
    with Collector(broker.port, username="monitor", password="mon") as col, Spool(tmp_path / "s.db") as sp:
        sp.put(topics.topic("tls", "dev1", "event"), schema.encode({**schema.header("event", "tls", "dev1", 1),
                                                                    "event": "status", "ok": True, "message": "x"}))
        link = Link(LinkOptions(opts, "tls", "dev1", backoff_min_s=0.05), sp, birth=_birth).start()
        assert link.wait_connected(10), link.stats.last_error
        assert link.wait_drained(10)
        assert col.wait_for(lambda c: c.seqs() == [1] and c.of("birth"))
        link.stop()


def test_wrong_password_and_untrusted_ca_are_reported(tls_broker, tmp_path):
    broker, tls_port, ca = tls_broker
    with Spool(tmp_path / "s.db") as sp:
        bad_pw = BrokerOptions(url=f"mqtts://127.0.0.1:{tls_port}", username="dev1", password="nope",
                               tls_ca=str(ca))
        link = Link(LinkOptions(bad_pw, "tls", "dev1", backoff_min_s=0.05), sp, birth=_birth).start()
        assert not link.wait_connected(1.5)
        link.stop()
        assert "refused" in link.stats.last_error and link.stats.failed_connects >= 1

        _, _, other_ca, _ = _pem_pair(tmp_path, "other-ca", ca=True)
        untrusted = BrokerOptions(url=f"mqtts://127.0.0.1:{tls_port}", username="dev1", password="s3cret",
                                  tls_ca=str(other_ca))
        link = Link(LinkOptions(untrusted, "tls", "dev1", backoff_min_s=0.05), sp, birth=_birth).start()
        assert not link.wait_connected(1.5)
        link.stop()
        assert "cannot connect" in link.stats.last_error and "CERTIFICATE" in link.stats.last_error.upper()


def test_missing_tls_files_are_a_telemetry_error(tmp_path):
    with pytest.raises(TelemetryError, match="tls_ca file"):
        make_client(BrokerOptions(url="mqtts://127.0.0.1:8883", tls_ca=str(tmp_path / "nope.pem")), "x")
    with pytest.raises(TelemetryError, match="password file"):
        make_client(BrokerOptions(username="u", password_file=str(tmp_path / "nope")), "x")
