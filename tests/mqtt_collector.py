"""A paho subscriber that collects edgert messages, for tests (import: ``from mqtt_collector import Collector``).

With ``client_id`` set it uses a persistent session (clean_session=False), so QoS 1 messages published
while it is away — e.g. while the broker restarts — are queued by the broker and delivered later.
"""
from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt


class Collector:
    def __init__(self, port: int, topic: str = "edgert/v1/#", client_id: str | None = None,
                 username: str | None = None, password: str | None = None):
        self.port, self.topic = port, topic
        self.persistent = client_id is not None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"col-{uuid.uuid4().hex[:8]}",
                                  clean_session=not self.persistent)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 1.0)
        self._lock = threading.Lock()
        self.messages: list[tuple[str, dict, bool]] = []    # (topic, payload, retained)
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = {"_raw": msg.payload.decode("latin-1")}
        with self._lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))

    def start(self, timeout_s: float = 10.0) -> "Collector":
        self.client.connect_async("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            raise TimeoutError(f"collector could not subscribe on port {self.port}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def of(self, kind: str | None = None, ptype: str | None = None) -> list[dict]:
        with self._lock:
            msgs = list(self.messages)
        return [p for t, p, _ in msgs if (kind is None or t.endswith("/" + kind))
                and (ptype is None or p.get("type") == ptype)]

    def seqs(self) -> list[int]:
        return [p["seq"] for p in self.of() if isinstance(p.get("seq"), int)]

    def wait_for(self, predicate, timeout_s: float = 10.0, poll_s: float = 0.02) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate(self):
                return True
            time.sleep(poll_s)
        return predicate(self)
