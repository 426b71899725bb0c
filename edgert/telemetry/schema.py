"""Payload schema v1: one JSON object per MQTT message (documented in docs/telemetry.md).

Every payload carries ``v`` (schema version), ``type``, ``fleet``, ``device`` and ``ts_ms`` (the
sender's wall clock, for display only — ordering and loss accounting use ``seq``).  Messages that go
through the durable spool (``records``, ``summary``, ``event``) carry ``seq``: an integer that grows by
one per spooled message of a device, across restarts, so a subscriber can prove nothing was lost.
``birth`` and ``death`` carry ``bdseq``, the birth/death sequence number of the connection (Sparkplug
B's idea): a death whose bdseq is not the device's current one is stale and must be ignored.

The spec below is data, checked by :func:`validate`; docs/telemetry.md lists the same fields.
"""
from __future__ import annotations

import json
import math
import time
from typing import Any

from edgert.errors import TelemetryError

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 256 * 1024   # a records batch of 1000 inferences is ~30 KB; anything bigger is a bug

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_STR = (str,)
_OPT_STR = (str, type(None))
_INT = (int,)
_DICT = (dict,)
_OPT_DICT = (dict, type(None))
_LIST = (list,)
_BOOL = (bool,)

# field -> (allowed types, required)
_COMMON = {"v": (_INT, True), "type": (_STR, True), "fleet": (_STR, True), "device": (_STR, True),
           "ts_ms": (_INT, True)}
SPEC: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "birth": {"bdseq": (_INT, True), "device_info": (_DICT, True), "package": (_OPT_DICT, True),
              "backend": (_OPT_STR, True), "versions": (_DICT, True), "sensor": (_OPT_DICT, True),
              "rate_hz": (_OPT_NUM, False), "summary_interval_s": (_NUM, True)},
    "death": {"bdseq": (_INT, True)},
    "state": {"online": (_BOOL, True), "bdseq": (_INT, True), "status": (_STR, True),
              "package": (_OPT_DICT, True), "backend": (_OPT_STR, True), "summary": (_OPT_DICT, False),
              "spool": (_OPT_DICT, False)},
    "records": {"seq": (_INT, True), "package_sha256": (_OPT_STR, True), "backend": (_OPT_STR, True),
                "t_ms": (_LIST, True), "latency_us": (_LIST, True), "energy_mj": (_LIST, True)},
    "summary": {"seq": (_INT, True), "window_s": (_NUM, True), "count": (_INT, True),
                "latency_ms": (_DICT, True), "energy_j_per_inference": (_OPT_NUM, True),
                "power_w": (_OPT_NUM, True), "energy_estimated": (_BOOL, True), "sensor": (_OPT_STR, True),
                "temp_c": (_OPT_NUM, True), "throttled": ((bool, type(None)), True),
                "package_sha256": (_OPT_STR, True), "backend": (_OPT_STR, True),
                "spool_pending": (_INT, False), "spool_dropped": (_INT, False)},
    "event": {"seq": (_INT, True), "event": (_STR, True), "ok": (_BOOL, True), "message": (_STR, True),
              "request_id": (_OPT_STR, False), "detail": (_OPT_DICT, False)},
    "cmd": {"cmd": (_STR, True), "id": (_STR, True), "url": (_STR, False), "sha256": (_STR, False),
            "iterations": (_INT, False)},
}
# which payload types travel on which topic kind
TYPES_BY_KIND = {"birth": ("birth",), "death": ("death",), "state": ("state",),
                 "telemetry": ("records", "summary"), "event": ("event",), "cmd": ("cmd",)}
LATENCY_KEYS = ("p50", "p90", "p99", "mean", "max")
EVENTS = ("started", "stopping", "deploy", "bench", "status", "sensor_change", "spool_overflow",
          "error", "unknown_cmd")
COMMANDS = ("deploy", "bench", "status")


def _typename(types: tuple[type, ...]) -> str:
    return "|".join("null" if t is type(None) else t.__name__ for t in types)


def validate(payload: Any, kind: str | None = None) -> dict:
    """Check a decoded payload against the v1 spec; returns it.  Raises TelemetryError naming the field."""
    if not isinstance(payload, dict):
        raise TelemetryError(f"payload must be a JSON object, got {type(payload).__name__}")
    # operators write commands by hand: on a cmd topic "type" may be left out
    ptype = payload.get("type", "cmd" if kind == "cmd" else None)
    spec = SPEC.get(ptype) if isinstance(ptype, str) else None
    if spec is None:
        raise TelemetryError(f"unknown payload type {ptype!r}; known: {', '.join(SPEC)}")
    if kind is not None and ptype not in TYPES_BY_KIND.get(kind, ()):
        raise TelemetryError(f"payload type {ptype!r} does not belong on a {kind!r} topic")
    # a command comes from an operator, not a device: it has no fleet/device/ts_ms header
    fields = {"v": (_INT, True), **spec} if ptype == "cmd" else {**_COMMON, **spec}
    for name, (types, required) in fields.items():
        if name not in payload:
            if required:
                raise TelemetryError(f"{ptype} payload is missing field {name!r}")
            continue
        value = payload[name]
        # bool is an int subclass: never accept it where a number is meant
        if isinstance(value, bool) and bool not in types:
            raise TelemetryError(f"{ptype}.{name} must be {_typename(types)}, got bool")
        if not isinstance(value, types):
            raise TelemetryError(f"{ptype}.{name} must be {_typename(types)}, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise TelemetryError(f"{ptype}.{name} must be finite, got {value}")
    if payload["v"] != SCHEMA_VERSION:
        raise TelemetryError(f"schema version {payload['v']!r} is not supported (this is v{SCHEMA_VERSION})")
    if "seq" in payload and payload["seq"] < 0:
        raise TelemetryError(f"{ptype}.seq must be >= 0, got {payload['seq']}")
    if ptype == "records":
        n = len(payload["t_ms"])
        if len(payload["latency_us"]) != n or len(payload["energy_mj"]) != n:
            raise TelemetryError("records: t_ms, latency_us and energy_mj must have the same length")
        for col in ("t_ms", "latency_us"):
            if not all(isinstance(x, _NUM) and not isinstance(x, bool) for x in payload[col]):
                raise TelemetryError(f"records.{col} must hold numbers")
        if not all(x is None or (isinstance(x, _NUM) and not isinstance(x, bool)) for x in payload["energy_mj"]):
            raise TelemetryError("records.energy_mj must hold numbers or nulls")
    elif ptype == "summary":
        lat = payload["latency_ms"]
        for key in LATENCY_KEYS:
            if not isinstance(lat.get(key), _OPT_NUM) or isinstance(lat.get(key), bool):
                raise TelemetryError(f"summary.latency_ms.{key} must be a number or null")
    elif ptype == "cmd" and payload["cmd"] not in COMMANDS:
        raise TelemetryError(f"unknown command {payload['cmd']!r}; known: {', '.join(COMMANDS)}")
    return payload


def decode(data: bytes, kind: str | None = None) -> dict:
    """Bytes off the wire -> a validated payload (TelemetryError on anything malformed)."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise TelemetryError(f"payload of {len(data)} bytes is over the {MAX_PAYLOAD_BYTES}-byte cap")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise TelemetryError(f"payload is not JSON: {e}") from None
    except RecursionError:      # b"[" * 100000 from anyone allowed to publish must not kill a subscriber
        raise TelemetryError("payload is nested too deeply") from None
    return validate(obj, kind)


def encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def with_seq(body: bytes, seq: int) -> bytes:
    """Prefix a spooled JSON object with its sequence number: b'{...}' -> b'{"seq":N,...}'.

    The spool assigns seq when the row is committed, after the body was encoded; splicing is
    cheaper than re-encoding and keeps the stored body immutable."""
    if not body.startswith(b"{") or body == b"{}":
        raise TelemetryError("spooled payloads must be non-empty JSON objects")
    return b'{"seq":%d,' % seq + body[1:]


def now_ms() -> int:
    """The sender's wall clock for ``ts_ms`` (display only; ordering uses seq)."""
    return time.time_ns() // 1_000_000


def header(ptype: str, fleet: str, device: str, ts_ms: int | None = None) -> dict:
    return {"v": SCHEMA_VERSION, "type": ptype, "fleet": fleet, "device": device,
            "ts_ms": now_ms() if ts_ms is None else ts_ms}
