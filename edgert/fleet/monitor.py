"""The fleet monitor: what every device of a fleet is doing, and whether any of its telemetry was lost.

Two layers, as in docs/fleet.md:

* :class:`FleetState` is a pure state machine.  Feed it ``(topic, payload, retained)`` and ask for a
  :class:`FleetSnapshot`; it never touches the network and takes an injectable clock, so tests drive it
  with crafted payloads.  It never raises on bad input: malformed messages are counted.
* :class:`FleetMonitor` connects a paho client (QoS 1 subscription to ``edgert/v1/<fleet>/+/+``), feeds
  the state from paho's network thread, auto-reconnects, and publishes operator commands.

Loss accounting follows the schema's ``seq`` (edgert/telemetry/schema.py): per device, one seq per
spooled message (records, summary, event), continuing across agent restarts.  Delivery is
at-least-once, so a seq seen twice is a duplicate and a hole between the first and the highest seq
seen is a loss (until it is filled by a late, out-of-order message).
"""
from __future__ import annotations

import bisect
import logging
import statistics
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Callable

from edgert.errors import TelemetryError
from edgert.telemetry import schema, topics
from edgert.telemetry.mqtt import BrokerOptions, connect_client

log = logging.getLogger(__name__)

STATUSES = ("online", "offline", "stale")
ALERT_KINDS = ("offline", "stale", "latency_regression", "seq_gap", "malformed")
STALE_INTERVALS = 3                # a device is stale after missing this many summaries ...
MIN_STALE_AFTER_S = 30.0           # ... but never sooner than this (jitter, slow links)
DEFAULT_SUMMARY_INTERVAL_S = 10.0  # until a birth tells us the device's own interval
MAX_SEQ_RUNS = 10_000              # runs kept per device; beyond, the oldest gap is written off
SHOWN_GAPS = 3                     # gaps named in a seq_gap alert
SHA_LEN = 64


@dataclass(frozen=True)
class MonitorOptions:
    fleet: str = "+"                      # "+" = all fleets
    stale_after_s: float | None = None    # None = 3 x the device's summary_interval_s (min 30 s)
    regression_factor: float = 1.5        # alert when a summary's p50 > factor x the baseline p50
    baseline_summaries: int = 3           # baseline = median p50 of the first N summaries per package
    client_id: str = ""                   # "" = random
    persistent: bool = False              # fixed client_id + persistent: the broker queues QoS 1 for us

    def __post_init__(self) -> None:
        if self.fleet != "+":
            topics.check_id(self.fleet, "fleet")
        if self.stale_after_s is not None and not self.stale_after_s > 0:
            raise TelemetryError(f"stale_after_s must be > 0, got {self.stale_after_s}")
        if not self.regression_factor > 1.0:
            raise TelemetryError(f"regression_factor must be > 1, got {self.regression_factor}")
        if self.baseline_summaries < 1:
            raise TelemetryError(f"baseline_summaries must be >= 1, got {self.baseline_summaries}")
        if self.persistent and not self.client_id:
            raise TelemetryError("a persistent session needs a fixed client_id")


@dataclass
class DeviceView:
    fleet: str
    device: str
    status: str                       # online | offline | stale
    bdseq: int | None
    kind: str | None
    model: str | None
    package_sha256: str | None
    package_name: str | None
    backend: str | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    j_per_inference: float | None
    energy_estimated: bool | None
    temp_c: float | None
    throttled: bool | None
    last_seen_s: float                # seconds since the last valid message
    messages: int                     # every message, duplicates and malformed ones included
    seq_received: int                 # distinct seqs
    seq_first: int | None
    seq_highest: int | None
    seq_missing: int                  # holes between seq_first and seq_highest
    duplicates: int
    inferences: int                   # sum of distinct records batches' lengths
    malformed: int
    alerts: list[str]                 # alert kinds active for this device
    baseline_p50_ms: float | None = None


@dataclass
class Alert:
    fleet: str                        # "" for messages that name no known device
    device: str
    kind: str                         # one of ALERT_KINDS
    message: str
    since_s: float                    # how long the condition has held


@dataclass
class FleetSnapshot:
    t_s: float                        # wall clock (Unix seconds) when it was taken
    devices: list[DeviceView]
    alerts: list[Alert]
    totals: dict[str, int]

    def to_json(self) -> dict:
        return {"t_s": self.t_s, "totals": dict(self.totals),
                "devices": [asdict(d) for d in self.devices], "alerts": [asdict(a) for a in self.alerts]}


class SeqRuns:
    """The distinct seqs of one device as sorted, disjoint runs ``[start, end]``.

    In-order delivery extends the last run in O(1); an out-of-order or duplicate seq costs a bisect
    (plus a list insert when it opens a new gap).  Memory grows with the number of gaps, not messages.
    Past MAX_SEQ_RUNS runs the two lowest runs are merged: their gap stays counted as missing, and a
    seq from it arriving later is counted as a duplicate rather than filling it.
    """

    __slots__ = ("_starts", "_ends", "received", "duplicates")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.received = 0
        self.duplicates = 0

    def add(self, seq: int) -> bool:
        """Record one seq; False if it was seen before (a duplicate)."""
        starts, ends = self._starts, self._ends
        if ends and seq == ends[-1] + 1:           # the common case: the next seq in order
            ends[-1] = seq
            self.received += 1
            return True
        i = bisect.bisect_right(starts, seq) - 1   # the run starting at or below seq
        if i >= 0 and seq <= ends[i]:
            self.duplicates += 1
            return False
        self.received += 1
        joins_left = i >= 0 and ends[i] + 1 == seq
        joins_right = i + 1 < len(starts) and starts[i + 1] - 1 == seq
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = seq
        elif joins_right:
            starts[i + 1] = seq
        else:
            starts.insert(i + 1, seq)
            ends.insert(i + 1, seq)
            if len(starts) > MAX_SEQ_RUNS:
                ends[0] = ends[1]
                del starts[1], ends[1]
        return True

    @property
    def first(self) -> int | None:
        return self._starts[0] if self._starts else None

    @property
    def highest(self) -> int | None:
        return self._ends[-1] if self._ends else None

    @property
    def missing(self) -> int:
        if not self._starts:
            return 0
        return self._ends[-1] - self._starts[0] + 1 - self.received

    @property
    def runs(self) -> int:
        return len(self._starts)

    def gaps(self, limit: int = SHOWN_GAPS) -> list[tuple[int, int]]:
        """The lowest ``limit`` holes as inclusive (first, last) missing seqs."""
        out = []
        for k in range(min(limit, len(self._starts) - 1)):
            out.append((self._ends[k] + 1, self._starts[k + 1] - 1))
        return out


@dataclass
class _Device:
    fleet: str
    device: str
    last_seen: float
    status: str = "online"
    bdseq: int | None = None
    dead_bdseq: int | None = None        # the connection whose death we accepted
    offline_since: float | None = None
    offline_reason: str = ""
    kind: str | None = None
    model: str | None = None
    package_sha256: str | None = None
    package_name: str | None = None
    backend: str | None = None
    summary_interval_s: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    j_per_inference: float | None = None
    energy_estimated: bool | None = None
    temp_c: float | None = None
    throttled: bool | None = None
    last_summary_seq: int = -1
    messages: int = 0
    inferences: int = 0
    seqs: SeqRuns = field(default_factory=SeqRuns)
    malformed: int = 0
    last_error: str = ""
    # latency baseline, per package sha256
    baseline_sha: str | None = None
    baseline_samples: list[float] = field(default_factory=list)
    baseline_p50_ms: float | None = None
    regression_p50_ms: float | None = None
    regression_since: float | None = None
    # what a birth acknowledged ("alerts cleared"): only losses / malformed messages after it alert
    missing_ack: int = 0
    gap_since: float | None = None
    malformed_ack: int = 0
    malformed_since: float | None = None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


class FleetState:
    """The fleet as seen through its messages.  Thread-safe: paho's thread feeds it, the UI reads it."""

    def __init__(self, opts: MonitorOptions = MonitorOptions(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.opts = opts
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: dict[tuple[str, str], _Device] = {}
        self._unknown_malformed = 0          # edgert/v1 traffic we cannot pin on a known device
        self._unknown_error = ""
        self._unknown_since: float | None = None

    # -- input -----------------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        parts = topics.parse_topic(topic)
        if parts is None:
            if topics.is_service_topic(topic):
                return  # fleet services (eval jobs) share the fleet's topic space; not device telemetry
            if topic.startswith(f"{topics.PREFIX}/{topics.VERSION}/"):
                with self._lock:
                    self._unknown(f"{topic}: not an edgert v1 topic (edgert/v1/<fleet>/<device>/<kind>)")
            return  # other apps and other schema versions share the broker
        if parts.kind == "cmd":
            return  # operators' commands (ours included), not device telemetry
        if self.opts.fleet != "+" and parts.fleet != self.opts.fleet:
            return  # not ours; amqtt 0.12 sends new clients retained messages they did not subscribe to
        if isinstance(payload, str):
            payload = payload.encode()
        if not payload:
            return  # an empty retained message is how a retained topic is cleared, not a message
        try:
            msg = schema.decode(bytes(payload), parts.kind)
            if msg["fleet"] != parts.fleet or msg["device"] != parts.device:
                raise TelemetryError(f"payload names {msg['fleet']}/{msg['device']} "
                                     f"but came on {parts.fleet}/{parts.device}")
        except TelemetryError as e:
            with self._lock:
                self._malformed(parts, topic, str(e))
            return
        except RecursionError:  # json.loads on deeply nested arrays; schema.decode lets it through
            with self._lock:
                self._malformed(parts, topic, "payload is nested too deeply")
            return
        with self._lock:
            self._apply(parts, msg, retained)

    def _unknown(self, error: str) -> None:
        self._unknown_malformed += 1
        self._unknown_error = error
        if self._unknown_since is None:
            self._unknown_since = self._clock()

    def _malformed(self, parts: topics.TopicParts, topic: str, error: str) -> None:
        dev = self._devices.get((parts.fleet, parts.device))
        if dev is None:  # never create a device from garbage: anyone can publish to any topic
            self._unknown(f"{topic}: {error}")
            return
        dev.messages += 1
        dev.malformed += 1
        dev.last_error = f"{parts.kind}: {error}"
        if dev.malformed_since is None:
            dev.malformed_since = self._clock()

    def _apply(self, parts: topics.TopicParts, msg: dict, retained: bool) -> None:
        now = self._clock()
        key = (parts.fleet, parts.device)
        dev = self._devices.get(key)
        if dev is None:
            dev = self._devices[key] = _Device(parts.fleet, parts.device, last_seen=now)
        dev.messages += 1
        dev.last_seen = now
        ptype = msg["type"]
        if ptype == "birth":
            self._birth(dev, msg, retained, now)
        elif ptype == "death":
            self._death(dev, msg, now)
        elif ptype == "state":
            self._state(dev, msg, now)
        else:  # records, summary, event: the spooled kinds, all carry seq
            if not dev.seqs.add(msg["seq"]):
                return  # a duplicate delivery: counted, but its content was applied already
            self._after_seq(dev, now)
            if ptype == "records":
                dev.inferences += len(msg["t_ms"])
            elif ptype == "summary":
                self._summary(dev, msg, now)

    def _birth(self, dev: _Device, msg: dict, retained: bool, now: float) -> None:
        bdseq = msg["bdseq"]
        info = msg["device_info"]
        dev.kind, dev.model = _str(info.get("kind")), _str(info.get("model"))
        dev.backend = msg["backend"]
        sensor = msg["sensor"]
        dev.energy_estimated = _bool(sensor.get("estimated")) if sensor else None
        dev.summary_interval_s = _num(msg["summary_interval_s"])
        self._set_package(dev, msg["package"])
        if retained and dev.dead_bdseq is not None and bdseq <= dev.dead_bdseq:
            return  # a retained birth of a connection whose death we already saw
        dev.bdseq = bdseq
        self._online(dev)
        # a new connection clears the device's alerts; losses and garbage after it alert again
        dev.regression_since = None
        dev.missing_ack, dev.gap_since = dev.seqs.missing, None
        dev.malformed_ack, dev.malformed_since = dev.malformed, None

    def _death(self, dev: _Device, msg: dict, now: float) -> None:
        bdseq = msg["bdseq"]
        if dev.bdseq is not None and bdseq != dev.bdseq:
            return  # stale: the Last Will of an older connection, published after the new birth
        dev.bdseq = dev.dead_bdseq = bdseq
        self._offline(dev, now, f"death (bdseq {bdseq})")

    def _state(self, dev: _Device, msg: dict, now: float) -> None:
        bdseq = msg["bdseq"]
        if dev.bdseq is not None and bdseq < dev.bdseq:
            return  # from an older connection
        if msg["backend"] is not None:
            dev.backend = msg["backend"]
        if msg["package"] is not None:
            self._set_package(dev, msg["package"])
        if isinstance(msg.get("summary"), dict) and dev.last_summary_seq < 0:
            self._show_summary(dev, msg["summary"])  # the initial picture before any summary arrives
        if msg["online"]:
            if dev.dead_bdseq is not None and bdseq <= dev.dead_bdseq:
                return  # its death arrived first (retained messages come in any order)
            dev.bdseq = bdseq
            self._online(dev)
        else:
            dev.bdseq = bdseq
            dev.dead_bdseq = bdseq if dev.dead_bdseq is None else max(bdseq, dev.dead_bdseq)
            self._offline(dev, now, f"state {msg['status']!r}")

    def _summary(self, dev: _Device, msg: dict, now: float) -> None:
        if msg["seq"] > dev.last_summary_seq:  # a late, older summary does not overwrite the display
            dev.last_summary_seq = msg["seq"]
            self._show_summary(dev, msg)
            if msg["backend"] is not None:
                dev.backend = msg["backend"]
        sha = msg["package_sha256"]
        if sha != dev.baseline_sha:
            self._reset_baseline(dev, sha)
        p50 = _num(msg["latency_ms"].get("p50"))
        if p50 is None:
            return
        if dev.baseline_p50_ms is None:
            dev.baseline_samples.append(p50)
            if len(dev.baseline_samples) >= self.opts.baseline_summaries:
                dev.baseline_p50_ms = statistics.median(dev.baseline_samples)
                dev.baseline_samples = []
            return
        if p50 > self.opts.regression_factor * dev.baseline_p50_ms:
            dev.regression_p50_ms = p50
            if dev.regression_since is None:
                dev.regression_since = now
        else:
            dev.regression_since = None

    @staticmethod
    def _show_summary(dev: _Device, summary: dict) -> None:
        lat = summary.get("latency_ms")
        lat = lat if isinstance(lat, dict) else {}
        dev.p50_ms, dev.p90_ms, dev.p99_ms = (_num(lat.get(k)) for k in ("p50", "p90", "p99"))
        dev.j_per_inference = _num(summary.get("energy_j_per_inference"))
        estimated = _bool(summary.get("energy_estimated"))
        if estimated is not None:
            dev.energy_estimated = estimated
        dev.temp_c = _num(summary.get("temp_c"))
        dev.throttled = _bool(summary.get("throttled"))

    def _set_package(self, dev: _Device, package: dict | None) -> None:
        package = package or {}
        sha = _str(package.get("sha256"))
        dev.package_sha256 = sha
        dev.package_name = _str(package.get("name")) or _str(package.get("path"))
        if sha != dev.baseline_sha:
            self._reset_baseline(dev, sha)

    @staticmethod
    def _reset_baseline(dev: _Device, sha: str | None) -> None:
        dev.baseline_sha = sha
        dev.baseline_samples = []
        dev.baseline_p50_ms = None
        dev.regression_since = None

    @staticmethod
    def _online(dev: _Device) -> None:
        dev.status = "online"
        dev.offline_since = None
        dev.offline_reason = ""

    @staticmethod
    def _offline(dev: _Device, now: float, reason: str) -> None:
        if dev.status != "offline":
            dev.offline_since = now
        dev.status = "offline"
        dev.offline_reason = reason

    @staticmethod
    def _after_seq(dev: _Device, now: float) -> None:
        missing = dev.seqs.missing
        if missing < dev.missing_ack:  # late messages filled holes the birth had acknowledged
            dev.missing_ack = missing
        if missing > dev.missing_ack:
            if dev.gap_since is None:
                dev.gap_since = now
        else:
            dev.gap_since = None

    # -- output ----------------------------------------------------------------------------------

    def stale_after_s(self, dev: _Device) -> float:
        if self.opts.stale_after_s is not None:
            return self.opts.stale_after_s
        interval = dev.summary_interval_s or DEFAULT_SUMMARY_INTERVAL_S
        return max(MIN_STALE_AFTER_S, STALE_INTERVALS * interval)

    def snapshot(self) -> FleetSnapshot:
        with self._lock:
            now = self._clock()
            views: list[DeviceView] = []
            alerts: list[Alert] = []
            for key in sorted(self._devices):
                view, dev_alerts = self._view(self._devices[key], now)
                views.append(view)
                alerts += dev_alerts
            if self._unknown_malformed:
                alerts.append(Alert("", "", "malformed",
                                    f"{self._unknown_malformed} malformed message(s) from no known "
                                    f"device; last: {self._unknown_error}",
                                    round(now - (self._unknown_since or now), 3)))
            totals = {
                "devices": len(views),
                "online": sum(v.status == "online" for v in views),
                "stale": sum(v.status == "stale" for v in views),
                "offline": sum(v.status == "offline" for v in views),
                "messages": sum(v.messages for v in views),
                "seq_received": sum(v.seq_received for v in views),
                "seq_missing": sum(v.seq_missing for v in views),
                "duplicates": sum(v.duplicates for v in views),
                "inferences": sum(v.inferences for v in views),
                "malformed": sum(v.malformed for v in views) + self._unknown_malformed,
            }
        return FleetSnapshot(t_s=round(time.time(), 3), devices=views, alerts=alerts, totals=totals)

    def _view(self, dev: _Device, now: float) -> tuple[DeviceView, list[Alert]]:
        alerts: list[Alert] = []

        def alert(kind: str, message: str, since: float) -> None:
            alerts.append(Alert(dev.fleet, dev.device, kind, message, round(max(0.0, now - since), 3)))

        age = now - dev.last_seen
        status = dev.status
        stale_after = self.stale_after_s(dev)
        if status == "online" and age > stale_after:
            status = "stale"
            alert("stale", f"no message for {age:.0f} s (stale after {stale_after:g} s)",
                  dev.last_seen + stale_after)
        elif status == "offline":
            alert("offline", f"offline: {dev.offline_reason}", dev.offline_since or now)
        if dev.regression_since is not None and dev.baseline_p50_ms is not None:
            alert("latency_regression",
                  f"p50 {dev.regression_p50_ms:.2f} ms > {self.opts.regression_factor:g} x baseline "
                  f"{dev.baseline_p50_ms:.2f} ms", dev.regression_since)
        seqs = dev.seqs
        if dev.gap_since is not None:
            gaps = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in seqs.gaps())
            more = ", ..." if seqs.runs - 1 > SHOWN_GAPS else ""
            alert("seq_gap", f"{seqs.missing} seq missing between {seqs.first} and {seqs.highest}"
                             f" ({gaps}{more})", dev.gap_since)
        if dev.malformed_since is not None and dev.malformed > dev.malformed_ack:
            alert("malformed", f"{dev.malformed - dev.malformed_ack} malformed message(s); "
                               f"last: {dev.last_error}", dev.malformed_since)
        view = DeviceView(
            fleet=dev.fleet, device=dev.device, status=status, bdseq=dev.bdseq, kind=dev.kind,
            model=dev.model, package_sha256=dev.package_sha256, package_name=dev.package_name,
            backend=dev.backend, p50_ms=dev.p50_ms, p90_ms=dev.p90_ms, p99_ms=dev.p99_ms,
            j_per_inference=dev.j_per_inference, energy_estimated=dev.energy_estimated,
            temp_c=dev.temp_c, throttled=dev.throttled, last_seen_s=round(age, 3),
            messages=dev.messages, seq_received=seqs.received, seq_first=seqs.first,
            seq_highest=seqs.highest, seq_missing=seqs.missing, duplicates=seqs.duplicates,
            inferences=dev.inferences, malformed=dev.malformed, alerts=[a.kind for a in alerts],
            baseline_p50_ms=dev.baseline_p50_ms)
        return view, alerts


# ------------------------------------------------------------------------------------------ network

def command_payload(cmd: dict) -> dict:
    """An operator command -> a validated v1 ``cmd`` payload (an ``id`` is generated if missing)."""
    payload = {"v": schema.SCHEMA_VERSION, "type": "cmd", **cmd}
    payload.setdefault("id", uuid.uuid4().hex[:16])
    schema.validate(payload, "cmd")
    if payload["cmd"] == "deploy":
        if "url" not in payload or "sha256" not in payload:
            raise TelemetryError("a deploy command needs url and sha256")
        sha = payload["sha256"]
        if len(sha) != SHA_LEN or any(c not in "0123456789abcdef" for c in sha):
            raise TelemetryError(f"sha256 must be {SHA_LEN} lowercase hex digits, got {sha!r}")
    if "iterations" in payload and payload["iterations"] < 1:
        raise TelemetryError(f"iterations must be >= 1, got {payload['iterations']}")
    return payload


def _close(client) -> None:
    client.disconnect()
    client.loop_stop()


def publish_command(broker: BrokerOptions, fleet: str, device: str, cmd: dict,
                    timeout_s: float = 10.0) -> dict:
    """Connect, publish one command QoS 1, wait for the broker's PUBACK, disconnect.  Returns the payload."""
    payload = command_payload(cmd)
    name = topics.topic(fleet, device, "cmd")
    client = connect_client(broker, f"edgert-cmd-{uuid.uuid4().hex[:12]}", timeout_s=timeout_s)
    try:
        _publish(client, broker, name, payload, timeout_s)
    finally:
        _close(client)
    return payload


def _publish(client, broker: BrokerOptions, name: str, payload: dict, timeout_s: float) -> None:
    info = client.publish(name, schema.encode(payload), qos=1)
    if info.rc != 0:  # MQTT_ERR_SUCCESS
        raise TelemetryError(f"cannot publish to {name} on {broker.url}: error code {info.rc}")
    try:
        info.wait_for_publish(timeout_s)
    except (RuntimeError, ValueError) as e:
        raise TelemetryError(f"cannot publish to {name} on {broker.url}: {e}") from None
    if not info.is_published():
        raise TelemetryError(f"broker {broker.url} did not acknowledge {name} within {timeout_s:g} s")


class FleetMonitor:
    """A FleetState fed by a QoS 1 subscription to ``edgert/v1/<fleet>/+/+``.

    ``on_update()`` is called from paho's network thread after each message (keep it cheap)."""

    def __init__(self, broker: BrokerOptions = BrokerOptions(), opts: MonitorOptions = MonitorOptions(),
                 on_update: Callable[[], None] | None = None) -> None:
        self.broker = broker
        self.opts = opts
        self.state = FleetState(opts)
        self.subscription = topics.subscription(opts.fleet, "+", "+")
        self._on_update = on_update
        self._client = None
        self._subscribed = threading.Event()
        self._sub_refused: list[str] = []

    def start(self, timeout_s: float = 10) -> FleetMonitor:
        if self._client is not None:
            return self
        self._subscribed.clear()
        self._sub_refused.clear()
        client_id = self.opts.client_id or f"edgert-monitor-{uuid.uuid4().hex[:12]}"

        def subscribe(client) -> None:
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
            client.subscribe(self.subscription, qos=1)

        deadline = time.monotonic() + timeout_s
        client = connect_client(self.broker, client_id, clean_session=not self.opts.persistent,
                         timeout_s=timeout_s, on_connected=subscribe)
        if not self._subscribed.wait(max(0.0, deadline - time.monotonic())) or self._sub_refused:
            _close(client)
            why = (f"refused the subscription to {self.subscription}: {self._sub_refused[0]} (check the ACL)"
                   if self._sub_refused else f"did not confirm the subscription within {timeout_s:g} s")
            raise TelemetryError(f"broker {self.broker.url} {why}")
        self._client = client
        return self

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc).lower() for rc in reason_codes if rc.is_failure]
        if failed:
            self._sub_refused[:] = failed
            log.warning("broker %s refused the subscription to %s", self.broker.url, self.subscription)
        self._subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        # An exception here would end paho's network thread and freeze the monitor: log it instead.
        try:
            self.state.on_message(msg.topic, msg.payload, bool(msg.retain))
        except Exception:
            log.exception("fleet monitor could not apply a message on %s", msg.topic)
        if self._on_update is not None:
            try:
                self._on_update()
            except Exception:
                log.exception("fleet monitor on_update callback failed")

    def snapshot(self) -> FleetSnapshot:
        return self.state.snapshot()

    def send_command(self, fleet: str, device: str, cmd: dict, timeout_s: float = 10.0) -> dict:
        """Publish a validated command QoS 1 to ``edgert/v1/<fleet>/<device>/cmd``; returns the payload."""
        if self._client is None:
            raise TelemetryError("the fleet monitor is not started")
        payload = command_payload(cmd)
        _publish(self._client, self.broker, topics.topic(fleet, device, "cmd"), payload, timeout_s)
        return payload

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _close(client)

    def __enter__(self) -> FleetMonitor:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
