"""The versioned topic scheme: ``edgert/v1/<fleet>/<device>/<kind>``.

Sparkplug B's layout (namespace / group / edge node / message type) is the model; the kinds are the
message types a device publishes (birth, state, telemetry, event, death) or receives (cmd).
"""
from __future__ import annotations

from dataclasses import dataclass

from edgert.errors import TelemetryError

PREFIX = "edgert"
VERSION = "v1"
KINDS = ("birth", "state", "telemetry", "event", "death", "cmd")
DEVICE_KINDS = ("birth", "state", "telemetry", "event", "death")  # what a device may publish
MAX_ID_LEN = 64
# fleet-level services live beside the devices: edgert/v1/<fleet>/eval/... (edgert/eval/fleet.py);
# a device may not take such a name, and telemetry subscribers skip those topics
SERVICE_LEVELS = ("eval",)

_FORBIDDEN = set("/+#$") | {"\x00"}


@dataclass(frozen=True)
class TopicParts:
    fleet: str
    device: str
    kind: str


def check_id(value: str, what: str) -> str:
    """A fleet or device id must be one topic level: no '/', '+', '#', '$', spaces or control chars."""
    if not isinstance(value, str) or not value:
        raise TelemetryError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LEN:
        raise TelemetryError(f"{what} {value[:20]!r}... is longer than {MAX_ID_LEN} characters")
    bad = sorted({c for c in value if c in _FORBIDDEN or c.isspace() or not c.isprintable()})
    if bad:
        raise TelemetryError(f"{what} {value!r} contains characters not allowed in a topic level: {bad!r}")
    return value


def check_device_id(value: str) -> str:
    check_id(value, "device id")
    if value in SERVICE_LEVELS:
        raise TelemetryError(f"device id {value!r} is reserved for fleet services")
    return value


def is_service_topic(name: str) -> bool:
    parts = name.split("/")
    return len(parts) >= 4 and parts[0] == PREFIX and parts[1] == VERSION and parts[3] in SERVICE_LEVELS


def topic(fleet: str, device: str, kind: str) -> str:
    if kind not in KINDS:
        raise TelemetryError(f"unknown topic kind {kind!r}; known: {', '.join(KINDS)}")
    return f"{PREFIX}/{VERSION}/{check_id(fleet, 'fleet')}/{check_device_id(device)}/{kind}"


def subscription(fleet: str = "+", device: str = "+", kind: str = "+") -> str:
    """A subscription filter; '+' (any) is allowed for each level."""
    parts = []
    for value, what in ((fleet, "fleet"), (device, "device id")):
        parts.append(value if value == "+" else check_id(value, what))
    if kind != "+" and kind not in KINDS:
        raise TelemetryError(f"unknown topic kind {kind!r}; known: {', '.join(KINDS)}")
    return f"{PREFIX}/{VERSION}/{parts[0]}/{parts[1]}/{kind}"


def parse_topic(name: str) -> TopicParts | None:
    """The parts of an edgert v1 topic, or None for anything else (other versions, other apps)."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != PREFIX or parts[1] != VERSION or parts[4] not in KINDS:
        return None
    if not parts[2] or not parts[3] or parts[3] in SERVICE_LEVELS:
        return None
    return TopicParts(parts[2], parts[3], parts[4])
