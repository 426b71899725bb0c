"""Shared subscriptions on a real Mosquitto: a consumer group splits the fleet's telemetry between its
members, each message to exactly one of them, while a plain subscriber still sees everything."""
from __future__ import annotations

import time

import pytest

from mqtt_broker import Probe

pytestmark = pytest.mark.timeout(60)
pytest.importorskip("paho.mqtt")

N = 200
GROUP_FILTER = "$share/workers/edgert/v1/+/+/telemetry"


def _collect(probes: list[Probe], n: int, timeout_s: float = 10.0) -> list[list[bytes]]:
    got: list[list[bytes]] = [[] for _ in probes]
    deadline = time.monotonic() + timeout_s
    while sum(map(len, got)) < n and time.monotonic() < deadline:
        for i, p in enumerate(probes):
            got[i] += [payload for _, payload in p.drain(quiet_s=0.01, max_s=0.2)]
    return got


def test_each_message_goes_to_exactly_one_group_member(mosquitto):
    with Probe(mosquitto.port, "worker-a") as a, Probe(mosquitto.port, "worker-b") as b, \
         Probe(mosquitto.port, "monitor") as mon, Probe(mosquitto.port, "publisher") as pub:
        for worker in (a, b):
            assert [rc.value for rc in worker.subscribe(GROUP_FILTER, qos=1)] == [1]
        mon.subscribe("edgert/v1/+/+/telemetry", qos=1)
        infos = [pub.client.publish(f"edgert/v1/lab/d{i % 7}/telemetry", str(i).encode(), qos=1)
                 for i in range(N)]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()

        got_a, got_b = _collect([a, b], N)
        # Wait a little longer for duplicates that would arrive after the N-th message.
        got_a += [p for _, p in a.drain(quiet_s=0.2)]
        got_b += [p for _, p in b.drain(quiet_s=0.2)]
        delivered = sorted(int(p) for p in got_a + got_b)
        assert delivered == list(range(N)), f"{len(got_a)} + {len(got_b)} messages for {N} sent"
        assert got_a and got_b, (len(got_a), len(got_b))

        everything = _collect([mon], N)[0]
        assert sorted(int(p) for p in everything) == list(range(N))
