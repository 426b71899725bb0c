"""FleetState driven with crafted v1 payloads: status, staleness, seq accounting, regressions, garbage."""
from __future__ import annotations

import json
import random

import pytest

from edgert.errors import TelemetryError
from edgert.fleet import monitor as monmod
from edgert.fleet.monitor import FleetState, MonitorOptions, SeqRuns
from edgert.telemetry import schema, topics

FLEET, DEV = "lab", "pi-01"
SHA_A, SHA_B = "a" * 64, "b" * 64


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def enc(payload: dict) -> bytes:
    return schema.encode(schema.validate(payload))


def birth(bdseq: int, device: str = DEV, sha: str | None = SHA_A, interval_s: float = 5.0,
          estimated: bool = True) -> bytes:
    return enc({**schema.header("birth", FLEET, device, 1), "bdseq": bdseq,
                "device_info": {"kind": "rpi", "model": "Raspberry Pi 5"},
                "package": {"sha256": sha, "name": "det.pkg"} if sha else None,
                "backend": "ort", "versions": {"edgert": "0.1.0"},
                "sensor": {"name": "model", "estimated": estimated}, "summary_interval_s": interval_s})


def death(bdseq: int, device: str = DEV) -> bytes:
    return enc({**schema.header("death", FLEET, device, 1), "bdseq": bdseq})


def state(online: bool, bdseq: int, device: str = DEV, summary: dict | None = None) -> bytes:
    body = {**schema.header("state", FLEET, device, 1), "online": online, "bdseq": bdseq,
            "status": "running" if online else "stopped", "package": {"sha256": SHA_A}, "backend": "ort"}
    if summary is not None:
        body["summary"] = summary
    return enc(body)


def summary(seq: int, p50: float, device: str = DEV, sha: str | None = SHA_A) -> bytes:
    return enc({**schema.header("summary", FLEET, device, 1), "seq": seq, "window_s": 5.0, "count": 50,
                "latency_ms": {"p50": p50, "p90": p50 * 1.2, "p99": p50 * 1.5, "mean": p50, "max": p50 * 2},
                "energy_j_per_inference": 0.25, "power_w": 2.5, "energy_estimated": True,
                "sensor": "model", "temp_c": 55.0, "throttled": False, "package_sha256": sha,
                "backend": "ort"})


def records(seq: int, n: int = 2, device: str = DEV) -> bytes:
    return enc({**schema.header("records", FLEET, device, 1), "seq": seq, "package_sha256": SHA_A,
                "backend": "ort", "t_ms": list(range(n)), "latency_us": [1000] * n, "energy_mj": [None] * n})


def event(seq: int, device: str = DEV) -> bytes:
    return enc({**schema.header("event", FLEET, device, 1), "seq": seq, "event": "started", "ok": True,
                "message": "up"})


KIND = {"birth": "birth", "death": "death", "state": "state", "summary": "telemetry",
        "records": "telemetry", "event": "event"}


def feed(fs: FleetState, payload: bytes, retained: bool = False) -> None:
    """Publish on the topic the payload belongs to (its own device and type)."""
    doc = json.loads(payload)
    fs.on_message(topics.topic(FLEET, doc["device"], KIND[doc["type"]]), payload, retained)


def view(fs: FleetState, device: str = DEV):
    return next(d for d in fs.snapshot().devices if d.device == device)


def alert_kinds(fs: FleetState, device: str = DEV) -> list[str]:
    return [a.kind for a in fs.snapshot().alerts if a.device == device]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fs(clock) -> FleetState:
    return FleetState(MonitorOptions(), clock=clock)


# -- status --------------------------------------------------------------------------------------

def test_birth_makes_device_online_with_its_facts(fs):
    feed(fs, birth(3))
    v = view(fs)
    assert (v.status, v.bdseq, v.kind, v.model, v.backend) == ("online", 3, "rpi", "Raspberry Pi 5", "ort")
    assert (v.package_sha256, v.package_name, v.energy_estimated) == (SHA_A, "det.pkg", True)
    assert v.alerts == [] and fs.snapshot().totals["online"] == 1


def test_death_with_current_bdseq_is_offline_and_a_new_birth_clears_it(fs, clock):
    feed(fs, birth(3))
    clock.t += 5
    feed(fs, death(3))
    clock.t += 2
    snap = fs.snapshot()
    assert snap.devices[0].status == "offline"
    (a,) = snap.alerts
    assert (a.kind, a.fleet, a.device, a.since_s) == ("offline", FLEET, DEV, 2.0)
    assert "bdseq 3" in a.message
    feed(fs, birth(4))
    assert view(fs).status == "online" and fs.snapshot().alerts == []


def test_stale_death_from_an_older_connection_is_ignored(fs):
    feed(fs, birth(3))
    feed(fs, birth(4))      # reconnected before the broker noticed the old connection was gone
    feed(fs, death(3))      # the old connection's Last Will, late
    v = view(fs)
    assert (v.status, v.bdseq, v.messages) == ("online", 4, 3)
    feed(fs, death(4))
    assert view(fs).status == "offline"


def test_death_of_a_device_never_seen_is_offline(fs):
    feed(fs, death(7))
    assert view(fs).status == "offline" and alert_kinds(fs) == ["offline"]


def test_staleness_follows_the_summary_interval_with_a_30_s_floor(clock):
    fs = FleetState(MonitorOptions(), clock=clock)
    feed(fs, birth(1, interval_s=5.0))            # 3 x 5 s < 30 s: the floor applies
    feed(fs, birth(1, device="slow", interval_s=20.0))  # 3 x 20 s = 60 s
    clock.t += 29.0
    assert view(fs).status == "online"
    clock.t += 2.0
    assert view(fs).status == "stale" and view(fs, "slow").status == "online"
    (a,) = [a for a in fs.snapshot().alerts if a.device == DEV]
    assert a.kind == "stale" and a.since_s == pytest.approx(1.0)
    clock.t += 30.0
    assert view(fs, "slow").status == "stale"
    feed(fs, summary(0, 10.0))
    assert view(fs).status == "online" and alert_kinds(fs) == []


def test_stale_after_option_overrides_and_offline_devices_never_go_stale(clock):
    fs = FleetState(MonitorOptions(stale_after_s=2.0), clock=clock)
    feed(fs, birth(1))
    feed(fs, birth(1, device="gone"))
    feed(fs, death(1, device="gone"))
    clock.t += 2.5
    assert view(fs).status == "stale"
    assert view(fs, "gone").status == "offline" and alert_kinds(fs, "gone") == ["offline"]
    assert fs.snapshot().totals["online"] == 0


def test_retained_state_gives_the_initial_picture(fs):
    last = {"latency_ms": {"p50": 7.5, "p99": 9.0}}
    feed(fs, state(True, 2, device="up", summary=last), retained=True)
    feed(fs, state(False, 2, device="down"), retained=True)
    up, down = view(fs, "up"), view(fs, "down")
    assert (up.status, up.bdseq, up.p50_ms, up.package_sha256) == ("online", 2, 7.5, SHA_A)
    assert down.status == "offline" and alert_kinds(fs, "down") == ["offline"]
    assert "stopped" in fs.snapshot().alerts[0].message


def test_retained_death_and_state_of_one_connection_in_either_order(fs):
    # retained messages of different topics come in no particular order
    feed(fs, death(5, device="a"), retained=True)
    feed(fs, state(True, 5, device="a"), retained=True)
    feed(fs, state(True, 5, device="b"), retained=True)
    feed(fs, death(5, device="b"), retained=True)
    assert view(fs, "a").status == "offline" and view(fs, "b").status == "offline"
    feed(fs, birth(6, device="a"))
    assert view(fs, "a").status == "online"


def test_state_from_an_older_connection_is_ignored(fs):
    feed(fs, birth(4))
    feed(fs, state(False, 3), retained=True)
    assert view(fs).status == "online"


def test_command_topics_are_not_device_traffic(fs):
    fs.on_message(topics.topic(FLEET, DEV, "cmd"), schema.encode({"v": 1, "type": "cmd", "cmd": "status",
                                                                   "id": "x"}))
    assert fs.snapshot().devices == [] and fs.snapshot().totals["malformed"] == 0


def test_other_fleets_are_ignored_when_one_fleet_is_watched(clock):
    fs = FleetState(MonitorOptions(fleet="elsewhere"), clock=clock)
    feed(fs, birth(1))
    fs.on_message("edgert/v1/elsewhere/x/nonsense", b"{}")
    assert fs.snapshot().devices == [] and fs.snapshot().totals["malformed"] == 1


# -- seq accounting ------------------------------------------------------------------------------

def test_seq_in_order(fs):
    feed(fs, birth(1))
    for s in range(10):
        feed(fs, records(s, n=3))
    v = view(fs)
    assert (v.seq_received, v.seq_first, v.seq_highest, v.seq_missing, v.duplicates) == (10, 0, 9, 0, 0)
    assert v.inferences == 30 and v.messages == 11


def test_seq_out_of_order_fills_gaps(fs):
    for s in (5, 7, 6, 9, 8, 4):
        feed(fs, event(s))
    v = view(fs)
    assert (v.seq_received, v.seq_first, v.seq_highest, v.seq_missing) == (6, 4, 9, 0)
    assert alert_kinds(fs) == []


def test_duplicates_are_counted_once_and_not_applied_twice(fs):
    for s in (0, 1, 1, 2, 0):
        feed(fs, records(s, n=4))
    v = view(fs)
    assert (v.seq_received, v.duplicates, v.messages, v.inferences) == (3, 2, 5, 12)


def test_gaps_are_missing_and_alert_until_filled(fs, clock):
    feed(fs, birth(1))
    for s in (10, 11, 15, 16, 20):
        feed(fs, event(s))
    v = view(fs)
    assert (v.seq_received, v.seq_first, v.seq_highest, v.seq_missing) == (5, 10, 20, 6)
    (a,) = fs.snapshot().alerts
    assert a.kind == "seq_gap" and "12-14" in a.message and "17-19" in a.message
    for s in (12, 13, 14, 17, 18, 19):
        feed(fs, event(s))
    assert view(fs).seq_missing == 0 and fs.snapshot().alerts == []


def test_seq_continues_across_agent_restarts(fs):
    feed(fs, birth(1))
    for s in range(5):
        feed(fs, summary(s, 10.0))
    feed(fs, death(1))
    feed(fs, birth(2))
    for s in range(3, 9):       # the spool replays 3 and 4 (unacknowledged) then goes on
        feed(fs, summary(s, 10.0))
    v = view(fs)
    assert (v.status, v.seq_received, v.seq_highest, v.seq_missing, v.duplicates) == ("online", 9, 8, 0, 2)


def test_a_birth_acknowledges_old_gaps_but_new_losses_alert(fs):
    feed(fs, birth(1))
    for s in (0, 1, 5):
        feed(fs, event(s))
    assert alert_kinds(fs) == ["seq_gap"]
    feed(fs, birth(2))
    assert alert_kinds(fs) == [] and view(fs).seq_missing == 3   # still counted, no longer alerting
    feed(fs, event(9))
    assert alert_kinds(fs) == ["seq_gap"] and view(fs).seq_missing == 6


def test_seq_runs_match_a_set_on_random_deliveries():
    rng = random.Random(7)
    runs, seen, dups = SeqRuns(), set(), 0
    for _ in range(5000):
        s = rng.randrange(0, 3000)
        fresh = runs.add(s)
        assert fresh == (s not in seen)
        dups += not fresh
        seen.add(s)
    assert runs.received == len(seen) and runs.duplicates == dups
    assert (runs.first, runs.highest) == (min(seen), max(seen))
    assert runs.missing == max(seen) - min(seen) + 1 - len(seen)
    missing = sorted(set(range(min(seen), max(seen) + 1)) - seen)
    assert runs.gaps(1)[0][0] == missing[0]


def test_seq_runs_write_off_the_oldest_gap_past_the_cap(monkeypatch):
    monkeypatch.setattr(monmod, "MAX_SEQ_RUNS", 4)
    runs = SeqRuns()
    for s in range(0, 20, 2):       # 10 isolated seqs: 9 gaps of one
        runs.add(s)
    assert runs.runs <= 4 and runs.received == 10 and runs.missing == 9
    assert runs.add(1) is False      # written off: counted as a duplicate, the loss stays on record


def test_ten_thousand_messages_are_accounted_exactly_and_fast(fs):
    rng = random.Random(1)
    seqs = list(range(10_000))
    lost = set(rng.sample(seqs, 25))
    order = [s for s in seqs if s not in lost]
    for i in range(0, len(order) - 8, 8):   # local reordering, as a spool replay interleaves
        window = order[i:i + 8]
        rng.shuffle(window)
        order[i:i + 8] = window
    order += rng.sample(order, 100)          # at-least-once: some arrive twice
    payloads = [records(s, n=1) for s in order]
    topic = topics.topic(FLEET, DEV, "telemetry")
    for p in payloads:       # its rate is the slow load test's business (tests/fleet), not a timer here
        fs.on_message(topic, p)
    v = view(fs)
    assert v.seq_received == 10_000 - len(lost) and v.duplicates == 100
    assert v.seq_missing == len([s for s in lost if min(order) < s < max(order)])
    assert v.inferences == v.seq_received


# -- latency regression --------------------------------------------------------------------------

def test_latency_regression_against_the_median_baseline(fs, clock):
    feed(fs, birth(1))
    for s, p50 in enumerate((10.0, 12.0, 11.0)):    # baseline = median = 11 ms
        feed(fs, summary(s, p50))
    assert view(fs).baseline_p50_ms == 11.0 and alert_kinds(fs) == []
    feed(fs, summary(3, 16.0))                      # 16 < 1.5 x 11 = 16.5
    assert alert_kinds(fs) == []
    feed(fs, summary(4, 20.0))
    clock.t += 3
    (a,) = fs.snapshot().alerts
    assert a.kind == "latency_regression" and "20.00" in a.message and a.since_s == 3.0
    assert view(fs).p50_ms == 20.0 and view(fs).alerts == ["latency_regression"]
    feed(fs, summary(5, 11.5))
    assert alert_kinds(fs) == []


def test_a_new_package_resets_the_baseline(fs):
    feed(fs, birth(1, sha=SHA_A))
    for s in range(3):
        feed(fs, summary(s, 10.0, sha=SHA_A))
    feed(fs, birth(2, sha=SHA_B))                   # deployed a bigger model: slower is expected
    assert view(fs).baseline_p50_ms is None
    for s in range(3, 6):
        feed(fs, summary(s, 30.0, sha=SHA_B))
    assert alert_kinds(fs) == [] and view(fs).baseline_p50_ms == 30.0
    feed(fs, summary(6, 50.0, sha=SHA_B))
    assert alert_kinds(fs) == ["latency_regression"]
    feed(fs, summary(7, 50.0, sha=SHA_A))           # a summary naming another package resets too
    assert alert_kinds(fs) == [] and view(fs).baseline_p50_ms is None


def test_duplicate_and_late_summaries_neither_feed_the_baseline_twice_nor_overwrite(fs):
    feed(fs, summary(0, 10.0))
    feed(fs, summary(0, 10.0))
    feed(fs, summary(2, 10.0))
    assert view(fs).baseline_p50_ms is None         # two distinct summaries so far
    feed(fs, summary(1, 99.0))                      # late: counts for the baseline, not the display
    v = view(fs)
    assert v.p50_ms == 10.0 and v.baseline_p50_ms == 10.0


def test_bad_monitor_options_are_rejected():
    for kwargs in ({"regression_factor": 1.0}, {"baseline_summaries": 0}, {"stale_after_s": 0},
                   {"fleet": "a/b"}, {"persistent": True}):
        with pytest.raises(TelemetryError):
            MonitorOptions(**kwargs)


# -- malformed input -----------------------------------------------------------------------------

def test_malformed_payloads_are_counted_per_device_and_never_raise(fs):
    feed(fs, birth(1))
    t_topic = topics.topic(FLEET, DEV, "telemetry")
    bad = [
        (t_topic, b"not json"),
        (t_topic, b"\xff\xfe"),
        (t_topic, b"[1, 2]"),
        (t_topic, birth(2)),                                         # a birth on the telemetry topic
        (t_topic, json.dumps({**json.loads(summary(1, 5.0)), "seq": -1}).encode()),
        (t_topic, json.dumps({**json.loads(summary(1, 5.0)), "v": 2}).encode()),
        (t_topic, b"{" + b" " * schema.MAX_PAYLOAD_BYTES + b"}"),
        (t_topic, b"[" * 100_000 + b"]" * 100_000),                  # deep nesting: RecursionError
        (t_topic, summary(1, 5.0, device="someone-else")),           # payload names another device
    ]
    for topic, payload in bad:
        fs.on_message(topic, payload)
    v = view(fs)
    assert v.malformed == len(bad) and v.messages == 1 + len(bad) and v.seq_received == 0
    (a,) = fs.snapshot().alerts
    assert a.kind == "malformed" and a.device == DEV and "someone-else" in a.message
    feed(fs, birth(2))
    assert alert_kinds(fs) == [] and view(fs).malformed == len(bad)


def test_garbage_from_unknown_devices_goes_to_the_unknown_bucket(fs):
    fs.on_message("edgert/v1/lab/ghost/telemetry", b"{}")
    fs.on_message("edgert/v1/lab/too/many/levels/state", state(True, 1))
    fs.on_message("edgert/v1/lab/dev/nonsense", b"{}")
    fs.on_message("edgert/v2/lab/dev/state", b"garbage")          # another schema version: not ours
    fs.on_message("other/app/topic", b"garbage")
    fs.on_message(topics.topic(FLEET, DEV, "state"), b"")            # clearing a retained topic
    snap = fs.snapshot()
    assert snap.devices == [] and snap.totals["malformed"] == 3
    (a,) = snap.alerts
    assert a.kind == "malformed" and a.device == "" and "nonsense" in a.message


def test_random_bytes_never_raise(fs):
    rng = random.Random(3)
    feed(fs, birth(1))
    valid = summary(1, 5.0)
    for i in range(500):
        kind = rng.choice(topics.KINDS)
        if i % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:  # flip bytes of a valid payload: mostly bad JSON, sometimes valid JSON with bad fields
            data = bytearray(valid)
            for _ in range(3):
                data[rng.randrange(len(data))] = rng.randrange(32, 127)
            data = bytes(data)
        fs.on_message(f"edgert/v1/{FLEET}/{DEV}/{kind}", data, rng.random() < 0.5)
    json.dumps(fs.snapshot().to_json())


def test_snapshot_json_shape_and_totals(fs):
    feed(fs, birth(1))
    feed(fs, birth(1, device="b"))
    feed(fs, summary(0, 4.0))
    feed(fs, summary(2, 4.0))
    feed(fs, summary(2, 4.0))
    doc = json.loads(json.dumps(fs.snapshot().to_json()))
    assert set(doc) == {"t_s", "totals", "devices", "alerts"}
    assert [d["device"] for d in doc["devices"]] == ["b", DEV]
    t = doc["totals"]
    assert (t["devices"], t["online"], t["messages"], t["seq_received"], t["seq_missing"],
            t["duplicates"], t["malformed"]) == (2, 2, 5, 2, 1, 1, 0)
    dev = doc["devices"][1]
    assert dev["p50_ms"] == 4.0 and dev["j_per_inference"] == 0.25 and dev["temp_c"] == 55.0
    assert doc["alerts"][0]["kind"] == "seq_gap"


def test_fleet_service_topics_are_not_devices():
    st = FleetState()
    st.on_message("edgert/v1/f1/eval/jobs", b'{"v":1,"job_id":1}')
    snap = st.snapshot()
    assert snap.devices == [] and snap.totals["malformed"] == 0 and snap.alerts == []
    with pytest.raises(TelemetryError, match="reserved"):
        topics.topic("f1", "eval", "birth")
