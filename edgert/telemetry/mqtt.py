"""Broker address and credentials -> a configured paho-mqtt 2.x client (imported only here)."""
from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from edgert.errors import TelemetryError

DEFAULT_PORT = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"   # where `edgert fleet broker` listens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerOptions:
    url: str = DEFAULT_BROKER
    username: str = ""
    password: str = ""
    password_file: str = ""      # read at connect time; keeps secrets out of the config file
    tls_ca: str = ""             # CA bundle; setting it (or an mqtts:// url) turns TLS on
    tls_cert: str = ""           # client certificate (mutual TLS), optional
    tls_key: str = ""
    keepalive_s: int = 15


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """mqtt://host[:port] or mqtts://host[:port]; a bare host[:port] means mqtt://."""
    if "://" not in url:
        url = "mqtt://" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TelemetryError(f"bad broker url {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORT:
        raise TelemetryError(f"bad broker url {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise TelemetryError(f"bad broker url {url!r}: no host")
    if parts.path not in ("", "/"):
        raise TelemetryError(f"bad broker url {url!r}: unexpected path {parts.path!r}")
    return BrokerAddress(parts.hostname, port or DEFAULT_PORT[scheme], scheme in ("mqtts", "ssl"))


def _password(opts: BrokerOptions) -> str:
    if opts.password_file:
        try:
            return Path(opts.password_file).read_text().strip()
        except OSError as e:
            raise TelemetryError(f"cannot read password file {opts.password_file}: {e.strerror}") from None
    return opts.password


def paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise TelemetryError("MQTT needs paho-mqtt 2.x: pip install 'edgert[agent]'") from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise TelemetryError("paho-mqtt is older than 2.0: pip install -U 'paho-mqtt>=2'")
    return mqtt


def make_client(opts: BrokerOptions, client_id: str, clean_session: bool = True):
    """A paho client with credentials and TLS applied (not yet connected)."""
    mqtt = paho()
    addr = parse_broker_url(opts.url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean_session, protocol=mqtt.MQTTv311)
    if opts.username:
        client.username_pw_set(opts.username, _password(opts))
    if addr.tls or opts.tls_ca:
        for what, path in (("tls_ca", opts.tls_ca), ("tls_cert", opts.tls_cert), ("tls_key", opts.tls_key)):
            if path and not Path(path).is_file():
                raise TelemetryError(f"{what} file {path} does not exist")
        try:
            client.tls_set(ca_certs=opts.tls_ca or None, certfile=opts.tls_cert or None,
                           keyfile=opts.tls_key or None, cert_reqs=ssl.CERT_REQUIRED)
        except (ssl.SSLError, ValueError, OSError) as e:
            raise TelemetryError(f"TLS setup failed: {e}") from None
    return client


def _reason(e: OSError) -> str:
    text = e.strerror or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]


def connect_client(broker: BrokerOptions, client_id: str, *, clean_session: bool = True,
                   on_connected: Callable[[Any], None] | None = None, will: tuple[str, bytes] | None = None,
                   timeout_s: float = 10.0):
    """A connected paho client with its network thread running, or TelemetryError with a one-line reason.

    ``on_connected(client)`` runs in paho's thread after every accepted CONNACK, so subscriptions (and
    a retained online state) are renewed on each reconnect; paho reconnects by itself (1 to 30 s).
    ``will`` is a (topic, payload) Last Will, published retained with QoS 1."""
    addr = parse_broker_url(broker.url)
    client = make_client(broker, client_id, clean_session=clean_session)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    answered = threading.Event()
    refused: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code).lower())
            log.warning("broker %s refused the connection: %s", broker.url, reason_code)
        else:
            refused.clear()
            if on_connected is not None:
                try:
                    on_connected(client)
                except Exception:   # noqa: BLE001 - an exception here would end paho's network thread
                    log.exception("on_connect handler failed")
        answered.set()

    def on_disconnect(client, userdata, flags, reason_code, properties) -> None:
        if answered.is_set() and not refused:
            log.info("lost the broker %s (%s); reconnecting", broker.url, reason_code)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.reconnect_delay_set(1, 30)
    client.connect_timeout = timeout_s
    try:
        client.connect(addr.host, addr.port, keepalive=broker.keepalive_s)
    except OSError as e:  # refused, unreachable, unknown host, TLS handshake (ssl.SSLError is an OSError)
        raise TelemetryError(f"cannot connect to broker {broker.url}: {_reason(e)}") from None
    client.loop_start()
    if not answered.wait(timeout_s) or refused:
        why = f"refused the connection: {refused[0]}" if refused else f"did not answer within {timeout_s:g} s"
        client.disconnect()
        client.loop_stop()
        raise TelemetryError(f"broker {broker.url} {why}")
    return client
