"""The broker link: drains the spool to MQTT with QoS 1, acks rows on PUBACK, reconnects with backoff.

One thread owns one paho client per connection (a fresh client each time, so paho's own in-memory
queue never holds anything the spool does not).  That thread drives the network with ``client.loop``,
so every paho callback runs on it and nothing here needs more than the spool's lock.

Per connection: a new ``bdseq`` (durable, from the spool's meta table) goes into the Last Will (a
``death`` payload) and into the ``birth`` published right after CONNACK; then the retained ``state``;
then every pending spool row in seq order, at most ``max_inflight`` unacknowledged at once.  On a drop
the unacked rows are simply sent again after reconnecting (at-least-once; duplicates carry the same
seq).  A clean stop publishes ``state`` online=false and the ``death`` explicitly, then disconnects.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from edgert.errors import EdgertError, TelemetryError
from edgert.telemetry import schema, topics
from edgert.telemetry.mqtt import BrokerOptions, make_client, paho, parse_broker_url
from edgert.telemetry.spool import Spool


@dataclass(frozen=True)
class LinkOptions:
    broker: BrokerOptions
    fleet: str
    device: str
    client_id: str = ""            # "" = edgert-<fleet>-<device>
    max_inflight: int = 32         # unacked QoS 1 publishes at once
    batch: int = 64                # rows read from the spool per query
    backoff_min_s: float = 0.25    # first retry delay; doubles per failed attempt, +-20 % jitter
    backoff_max_s: float = 30.0
    connect_timeout_s: float = 10.0
    idle_poll_s: float = 0.05      # network poll when nothing is queued (bounds the wake-up latency)
    persistent_session: bool = True  # the broker queues commands (QoS 1) while the device is away


@dataclass
class LinkStats:
    connects: int = 0
    failed_connects: int = 0
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    commands: int = 0
    bad_commands: int = 0
    last_error: str = ""
    connected_since_s: float | None = None
    backoff_s: float = 0.0


def backoff_delay(attempt: int, lo: float, hi: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with +-20 % jitter (so a fleet does not reconnect in lock-step)."""
    base = min(hi, lo * (2.0 ** max(0, attempt)))
    jitter = (rng or random).uniform(0.8, 1.2)
    return min(hi, base * jitter)


class Link:
    def __init__(self, opts: LinkOptions, spool: Spool, birth: Callable[[int], dict],
                 on_command: Callable[[dict], None] | None = None,
                 on_bad_command: Callable[[str], None] | None = None):
        topics.check_id(opts.fleet, "fleet")
        topics.check_device_id(opts.device)
        self.addr = parse_broker_url(opts.broker.url)   # bad url: fail now, not in the thread
        paho()                                            # paho missing: fail now, not in the thread
        self.opts = opts
        self.spool = spool
        self._birth = birth
        self._on_command = on_command
        self._on_bad_command = on_bad_command
        self.stats = LinkStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._state_lock = threading.Lock()
        self._state: dict | None = None
        self._state_dirty = False
        self._thread: threading.Thread | None = None
        self._connected = False
        self._bdseq = 0
        self._final: Callable[[], None] | None = None
        self.client_id = opts.client_id or f"edgert-{opts.fleet}-{opts.device}"

    # -- public, any thread -----------------------------------------------------------------
    def start(self) -> "Link":
        if self._thread is not None:
            raise TelemetryError("link already started")
        self._thread = threading.Thread(target=self._run, name="edgert-link", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """New rows were spooled: look at the spool now rather than at the next poll."""
        self._wake.set()

    def set_state(self, payload: dict) -> None:
        """The retained state to publish now (and again after every reconnect)."""
        with self._state_lock:
            self._state = payload
            self._state_dirty = True
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def bdseq(self) -> int:
        return self._bdseq

    def wait_connected(self, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._connected:
                return True
            time.sleep(0.02)
        return self._connected

    def wait_drained(self, timeout_s: float) -> bool:
        """Block until the spool is empty (all acked) or the timeout passes."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.spool.pending == 0:
                return True
            self._wake.set()
            time.sleep(0.02)
        return self.spool.pending == 0

    def stop(self, drain_s: float = 0.0, timeout_s: float = 5.0) -> None:
        """Optionally drain for up to drain_s, then say goodbye (state offline + death) and disconnect."""
        if self._thread is None:
            return
        if drain_s > 0 and self._connected:
            self.wait_drained(drain_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        self._thread = None

    # -- the link thread --------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                ok = self._session()
            except EdgertError as e:           # spool trouble or TLS setup: report, back off, retry
                self.stats.last_error = str(e)
                ok = False
            except OSError as e:
                self.stats.last_error = f"{type(e).__name__}: {e}"
                ok = False
            self._connected = False
            self.stats.connected_since_s = None
            if self._stop.is_set():
                break
            attempt = 0 if ok else attempt + 1
            delay = backoff_delay(attempt, self.opts.backoff_min_s, self.opts.backoff_max_s)
            self.stats.backoff_s = delay
            self._stop.wait(delay)

    def _death_payload(self, bdseq: int) -> bytes:
        return schema.encode({**schema.header("death", self.opts.fleet, self.opts.device),
                              "bdseq": bdseq})

    def _session(self) -> bool:
        """One MQTT connection from CONNECT to drop or stop.  True if it got as far as CONNACK."""
        mqtt = paho()
        o = self.opts
        client = make_client(o.broker, self.client_id, clean_session=not o.persistent_session)
        client.connect_timeout = o.connect_timeout_s
        bdseq = self.spool.next_bdseq()
        death_topic = topics.topic(o.fleet, o.device, "death")
        client.will_set(death_topic, self._death_payload(bdseq), qos=1, retain=False)
        conn: dict[str, Any] = {"acked": None, "refused": None, "dropped": False}
        inflight: dict[int, int] = {}    # mid -> seq
        acked: list[int] = []

        def on_connect(c, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                conn["refused"] = str(reason_code)
            else:
                conn["acked"] = True

        def on_disconnect(c, userdata, flags, reason_code, properties):
            conn["dropped"] = True

        def on_publish(c, userdata, mid, reason_code, properties):
            seq = inflight.pop(mid, None)
            if seq is not None:
                acked.append(seq)

        def on_message(c, userdata, msg):
            self._command(msg.payload)

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        client.on_publish, client.on_message = on_publish, on_message
        try:
            client.connect(self.addr.host, self.addr.port, keepalive=o.broker.keepalive_s)
        except (OSError, ValueError) as e:
            self.stats.failed_connects += 1
            self.stats.last_error = f"cannot connect to {o.broker.url}: {getattr(e, 'strerror', None) or e}"
            return False
        deadline = time.monotonic() + o.connect_timeout_s
        while conn["acked"] is None and conn["refused"] is None and not conn["dropped"]:
            if time.monotonic() > deadline or self._stop.is_set():
                conn["refused"] = conn["refused"] or "no CONNACK in time"
                break
            client.loop(0.05)
        if not conn["acked"]:
            self.stats.failed_connects += 1
            self.stats.last_error = f"broker {o.broker.url} refused the connection: {conn['refused'] or 'dropped'}"
            _close(client)
            return False

        self._bdseq = bdseq
        self._connected = True
        self.stats.connects += 1
        self.stats.connected_since_s = time.monotonic()
        client.subscribe(topics.topic(o.fleet, o.device, "cmd"), qos=1)
        client.publish(topics.topic(o.fleet, o.device, "birth"), schema.encode(self._birth(bdseq)), qos=1)
        with self._state_lock:
            self._state_dirty = self._state is not None
        last_sent, more = 0, True
        while not self._stop.is_set() and not conn["dropped"]:
            if acked:
                done, acked[:] = list(acked), []
                self.spool.ack(done)
                self.stats.acked += len(done)
                more = True
            with self._state_lock:
                state, self._state_dirty = (self._state if self._state_dirty else None), False
            if state is not None:
                client.publish(topics.topic(o.fleet, o.device, "state"),
                               schema.encode({**state, "bdseq": bdseq}), qos=1, retain=True)
            if self._wake.is_set():
                self._wake.clear()
                more = True
            room = o.max_inflight - len(inflight)
            if more and room > 0:
                items = self.spool.peek(last_sent, min(room, o.batch))
                more = len(items) == min(room, o.batch)
                for it in items:
                    info = client.publish(it.topic, schema.with_seq(it.body, it.seq), qos=1, retain=it.retain)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        conn["dropped"] = True
                        break
                    inflight[info.mid] = it.seq
                    last_sent = it.seq
                    self.stats.published += 1
            busy = more and len(inflight) < o.max_inflight
            rc = client.loop(0.0 if busy else o.idle_poll_s)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                conn["dropped"] = True
        if acked:
            self.spool.ack(list(acked))
            self.stats.acked += len(acked)
        if self._stop.is_set() and not conn["dropped"]:
            self._goodbye(client, bdseq)
        else:
            self.stats.disconnects += 1
        _close(client)
        return True

    def _goodbye(self, client, bdseq: int) -> None:
        """A clean stop: state offline (retained) and the death, each waited for up to a second."""
        o = self.opts
        with self._state_lock:
            state = dict(self._state) if self._state else None
        infos = []
        if state is not None:
            state.update(online=False, status="stopped", ts_ms=schema.now_ms(), bdseq=bdseq)
            infos.append(client.publish(topics.topic(o.fleet, o.device, "state"), schema.encode(state),
                                        qos=1, retain=True))
        infos.append(client.publish(topics.topic(o.fleet, o.device, "death"), self._death_payload(bdseq), qos=1))
        end = time.monotonic() + 1.0
        while time.monotonic() < end and not all(i.is_published() for i in infos):
            client.loop(0.02)
        client.disconnect()    # a clean DISCONNECT: the broker discards the Last Will
        client.loop(0.05)

    def _command(self, data: bytes) -> None:
        try:
            cmd = schema.decode(data, "cmd")
        except TelemetryError as e:
            self.stats.bad_commands += 1
            if self._on_bad_command is not None:
                self._on_bad_command(str(e))
            return
        self.stats.commands += 1
        if self._on_command is not None:
            self._on_command(cmd)


def _close(client) -> None:
    try:
        client.socket() and client.socket().close()
    except OSError:
        pass
