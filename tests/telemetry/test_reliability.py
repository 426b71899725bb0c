"""Store-and-forward under fire: a real agent process publishing continuously while the broker is
stopped and restarted 10 times and the agent itself is SIGKILLed and restarted 3 times.

Every seq the agent's spool ever assigned must reach a subscriber at least once; duplicates are
allowed (at-least-once) and must be identical copies, so they are detectable by seq."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from edgert.telemetry import schema, topics
from mqtt_collector import Collector
from tiny_pkg import write_tiny_package

pytestmark = pytest.mark.slow

FLEET, DEV = "rel", "dev-r"


def _agent(url, pkg, spool, log):
    cmd = [sys.executable, "-m", "edgert", "agent", "--broker", url, "--fleet", FLEET, "--device-id", DEV,
           "--package", str(pkg), "--source", "synthetic", "--rate", "100", "--spool", str(spool),
           "--flush-interval", "0.1", "--summary-interval", "1", "--sensor", "utilisation"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def _last_seq(spool) -> int:
    db = sqlite3.connect(spool)
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='spool'").fetchone()
        return 0 if row is None else int(row[0])
    finally:
        db.close()


def test_nothing_lost_across_broker_restarts_and_agent_kills(mosquitto, tmp_path):
    pkg = write_tiny_package(tmp_path / "m.pkg")
    spool = tmp_path / "state" / "spool.db"
    log = open(tmp_path / "agent.log", "ab")
    col = Collector(mosquitto.port, client_id="reliability-sub").start()   # persistent session
    proc = _agent(mosquitto.url, pkg, spool, log)
    kills = 0
    try:
        assert col.wait_for(lambda c: len(c.seqs()) > 5, 20), (tmp_path / "agent.log").read_text()[-2000:]
        for i in range(10):
            time.sleep(0.6)
            mosquitto.stop()                 # SIGTERM: the broker persists its queued messages
            time.sleep(0.4)                  # the agent keeps inferring; the spool grows
            if i in (2, 5, 8):
                proc.send_signal(signal.SIGKILL)   # the agent dies with unacked rows in its spool
                proc.wait(10)
                kills += 1
                proc = _agent(mosquitto.url, pkg, spool, log)
            mosquitto.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)     # a clean stop drains the spool before the death
        assert proc.wait(30) == 0, (tmp_path / "agent.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert kills == 3
    last = _last_seq(spool)
    want = set(range(1, last + 1))
    assert col.wait_for(lambda c: want <= set(c.seqs()), 30), \
        f"missing seqs: {sorted(want - set(col.seqs()))[:20]}"
    col.stop()

    by_seq: dict[int, dict] = {}
    dups = 0
    for t, p, _ in col.messages:
        schema.validate(p, topics.parse_topic(t).kind)
        if "seq" in p:
            if p["seq"] in by_seq:
                dups += 1
                assert by_seq[p["seq"]] == p     # a duplicate is an identical copy
            by_seq[p["seq"]] = p
    assert set(by_seq) == want
    records = sum(len(p["t_ms"]) for p in by_seq.values() if p["type"] == "records")
    assert records > 300                     # ~100 Hz for several seconds, minus the kill gaps
    births = col.of("birth")
    by_bdseq: dict[int, dict] = {}
    for b in births:                         # QoS 1: a birth may arrive twice, then as an identical copy
        assert by_bdseq.setdefault(b["bdseq"], b) == b
    # a new bdseq per connection: at least the first start and the 3 restarts after a kill (under load
    # the agent's backoff may sleep through a short broker up-window, so not always one per restart)
    assert len(by_bdseq) >= 4
    # each SIGKILL leaves a Last Will behind (when the broker was up to see the socket close)
    assert col.of("death")
    print(f"\nreliability: {last} seqs, {dups} duplicates, {records} records, {len(births)} births, "
          f"{len(col.of('death'))} deaths")
