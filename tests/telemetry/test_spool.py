from __future__ import annotations

import sqlite3

import pytest

from edgert.errors import TelemetryError
from edgert.telemetry.spool import Spool, SpoolOptions


def _body(i: int, pad: int = 0) -> bytes:
    return b'{"i":%d,"pad":"%s"}' % (i, b"x" * pad)


def test_seq_is_monotonic_and_survives_reopen_and_emptying(tmp_path):
    path = tmp_path / "s.db"
    with Spool(path) as sp:
        seqs = [sp.put("t", _body(i)) for i in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        sp.ack(seqs)                       # empty now
        assert sp.pending == 0 and sp.pending_bytes == 0
    with Spool(path) as sp:
        assert sp.put("t", _body(9)) == 6    # never reused, even though the table emptied
        assert sp.last_seq() == 6


def test_peek_returns_pending_in_order_and_ack_removes_only_given(tmp_path):
    with Spool(tmp_path / "s.db") as sp:
        seqs = sp.put_many([("a", _body(i), i == 3) for i in range(10)])
        items = sp.peek(0, 4)
        assert [it.seq for it in items] == seqs[:4]
        assert items[3].retain and not items[0].retain
        assert [it.seq for it in sp.peek(seqs[4], 100)] == seqs[5:]
        sp.ack([seqs[1], seqs[2], 999])         # unknown seqs are ignored
        assert sp.pending == 8
        assert [it.seq for it in sp.peek(0, 3)] == [seqs[0], seqs[3], seqs[4]]
        assert sp.pending_bytes == sum(len(_body(i)) for i in range(10)) - len(_body(1)) - len(_body(2))
        assert sp.counter("acked_total") == 2


def test_pending_rows_survive_a_crash_without_close(tmp_path):
    path = tmp_path / "s.db"
    sp = Spool(path)
    seqs = sp.put_many([("t", _body(i), False) for i in range(3)])
    sp.ack([seqs[0]])
    # no close(): a killed process leaves the WAL behind; a new process must see the commits
    sp2 = Spool(path)
    assert [it.seq for it in sp2.peek()] == seqs[1:]
    assert sp2.pending == 2
    sp2.close()
    sp.close()


def test_wal_mode_and_sync(tmp_path):
    with Spool(tmp_path / "s.db", SpoolOptions(synchronous="NORMAL")):
        pass
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_overflow_drop_oldest_records_the_dropped_range(tmp_path):
    body = _body(0, pad=1000)
    with Spool(tmp_path / "s.db", SpoolOptions(max_bytes=5 * len(body))) as sp:
        seqs = [sp.put("t", body) for _ in range(5)]
        assert sp.take_dropped() == []
        s6 = sp.put("t", body)
        s7 = sp.put("t", body)
        assert sp.pending == 5 and sp.pending_bytes <= 5 * len(body)
        drops = sp.take_dropped()
        assert [(d.first_seq, d.last_seq, d.count) for d in drops] == [(seqs[0], seqs[0], 1), (seqs[1], seqs[1], 1)]
        assert [it.seq for it in sp.peek()] == seqs[2:] + [s6, s7]
        assert sp.counter("dropped_total") == 2
        assert sp.take_dropped() == []


def test_overflow_reject_keeps_old_data(tmp_path):
    body = _body(0, pad=1000)
    with Spool(tmp_path / "s.db", SpoolOptions(max_bytes=5 * len(body), overflow="reject")) as sp:
        seqs = [sp.put("t", body) for _ in range(5)]
        with pytest.raises(TelemetryError, match="full"):
            sp.put("t", body)
        assert sp.rejected == 1
        assert [it.seq for it in sp.peek()] == seqs
        sp.ack(seqs[:1])
        # a rejected message never got a seq, so the stream has no gap: the loss is counted instead
        assert sp.put("t", body) == seqs[-1] + 1


def test_oversized_message_and_bad_options(tmp_path):
    with Spool(tmp_path / "s.db", SpoolOptions(max_bytes=4096)) as sp:
        with pytest.raises(TelemetryError, match="do not fit"):
            sp.put("t", b"x" * 5000)
    with pytest.raises(TelemetryError, match="overflow policy"):
        Spool(tmp_path / "t.db", SpoolOptions(overflow="drop_newest"))
    with pytest.raises(TelemetryError, match="minimum"):
        Spool(tmp_path / "t.db", SpoolOptions(max_bytes=10))


def test_corrupt_spool_file_is_a_telemetry_error(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(TelemetryError, match="cannot open spool"):
        Spool(path)


def test_bdseq_is_durable(tmp_path):
    path = tmp_path / "s.db"
    with Spool(path) as sp:
        assert [sp.next_bdseq() for _ in range(3)] == [1, 2, 3]
    with Spool(path) as sp:
        assert sp.next_bdseq() == 4
