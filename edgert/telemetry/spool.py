"""The durable store-and-forward spool: every outgoing telemetry message is committed here first.

SQLite in WAL mode.  A row is deleted only after the broker's PUBACK, so a broker restart, a dropped
network or a SIGKILLed agent loses nothing that was committed: the link replays unacked rows in seq
order on the next connection.  ``seq`` is the row id of an AUTOINCREMENT table, so it grows by one per
message and is never reused, across restarts, even after the table empties.

Bounded in bytes (payload bytes of pending rows).  Overflow policy (docs/telemetry.md):
  * ``drop_oldest`` (default; as AWS Greengrass's spooler does): delete the oldest pending rows until
    the new one fits, count them, and remember the dropped seq range so the agent can publish a
    ``spool_overflow`` event — a subscriber sees the gap *and* the reason;
  * ``reject``: keep what is spooled, refuse the new message (TelemetryError) and count it.
"""
from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from edgert.errors import TelemetryError

OVERFLOW_POLICIES = ("drop_oldest", "reject")
SYNC_MODES = ("FULL", "NORMAL")   # FULL survives power loss; NORMAL (in WAL) survives a process kill
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    body BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class SpoolOptions:
    max_bytes: int = 64 * 1024 * 1024
    overflow: str = "drop_oldest"
    synchronous: str = "FULL"


@dataclass(frozen=True)
class SpoolItem:
    seq: int
    topic: str
    body: bytes       # the JSON object without its seq; schema.with_seq() adds it at publish time
    retain: bool = False


@dataclass(frozen=True)
class Dropped:
    """A run of pending messages discarded by the overflow policy."""
    first_seq: int
    last_seq: int
    count: int
    nbytes: int


class Spool:
    def __init__(self, path: str | Path, opts: SpoolOptions = SpoolOptions()):
        if opts.overflow not in OVERFLOW_POLICIES:
            raise TelemetryError(f"unknown spool overflow policy {opts.overflow!r}; "
                                 f"known: {', '.join(OVERFLOW_POLICIES)}")
        if opts.synchronous not in SYNC_MODES:
            raise TelemetryError(f"spool synchronous must be one of {', '.join(SYNC_MODES)}")
        if opts.max_bytes < 4096:
            raise TelemetryError(f"spool max_bytes {opts.max_bytes} is below the 4096-byte minimum")
        self.path = Path(path)
        self.opts = opts
        self._lock = threading.Lock()
        self.rejected = 0
        self._dropped: list[Dropped] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: explicit BEGIN/COMMIT, so each put is one durable transaction
            self._db = sqlite3.connect(str(self.path), timeout=10, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={opts.synchronous}")
            self._db.executescript(_SCHEMA)
            ver = self._meta_get("schema_version")
            if ver is None:
                self._meta_set("schema_version", SCHEMA_VERSION)
            elif ver != SCHEMA_VERSION:
                raise TelemetryError(f"spool {self.path} has schema version {ver}, expected {SCHEMA_VERSION}")
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM spool").fetchone()
            self._count, self._bytes = int(row[0]), int(row[1])
        except sqlite3.DatabaseError as e:
            raise TelemetryError(f"cannot open spool {self.path}: {e}") from None
        except OSError as e:
            raise TelemetryError(f"cannot open spool {self.path}: {e.strerror}") from None

    # -- meta counters (bdseq, totals) -------------------------------------------------------
    def _meta_get(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _meta_set(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    def next_bdseq(self) -> int:
        """Increment and return the birth/death sequence number (durable: one per MQTT session)."""
        with self._lock, self._txn():
            value = (self._meta_get("bdseq") or 0) + 1
            self._meta_set("bdseq", value)
        return value

    def counter(self, key: str) -> int:
        with self._lock:
            return self._meta_get(key) or 0

    # -- writing ----------------------------------------------------------------------------
    def _txn(self):
        db = self._db

        class _Txn:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, et, ev, tb):
                db.execute("ROLLBACK" if et else "COMMIT")
                return False
        return _Txn()

    def put(self, topic: str, body: bytes, retain: bool = False) -> int:
        return self.put_many([(topic, body, retain)])[0]

    def put_many(self, items: list[tuple[str, bytes, bool]]) -> list[int]:
        """Commit messages in one transaction; returns their seqs.  TelemetryError when they cannot fit."""
        need = sum(len(b) for _, b, _ in items)
        if need > self.opts.max_bytes:
            raise TelemetryError(f"{need} bytes of telemetry do not fit a {self.opts.max_bytes}-byte spool")
        try:
            with self._lock, self._txn():
                if self._bytes + need > self.opts.max_bytes:
                    if self.opts.overflow == "reject":
                        self.rejected += len(items)
                        raise TelemetryError(f"spool {self.path} is full ({self._bytes} bytes pending); "
                                             f"{len(items)} message(s) rejected")
                    self._drop_oldest(self._bytes + need - self.opts.max_bytes)
                seqs = []
                for topic, body, retain in items:
                    cur = self._db.execute("INSERT INTO spool(topic, body, retain) VALUES(?, ?, ?)",
                                           (topic, body, int(retain)))
                    seqs.append(int(cur.lastrowid))
                self._count += len(items)
                self._bytes += need
            return seqs
        except sqlite3.DatabaseError as e:
            with self._lock:
                self._reload_totals_locked()
            raise TelemetryError(f"spool write failed ({self.path}): {e}") from None

    def _drop_oldest(self, excess: int) -> None:
        freed, first, last, n = 0, None, None, 0
        for seq, size in self._db.execute("SELECT seq, LENGTH(body) FROM spool ORDER BY seq"):
            if freed >= excess:
                break
            freed += size
            first = seq if first is None else first
            last, n = seq, n + 1
        if n:
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (last,))
            self._count -= n
            self._bytes -= freed
            self._meta_set("dropped_total", (self._meta_get("dropped_total") or 0) + n)
            self._dropped.append(Dropped(first, last, n, freed))

    def take_dropped(self) -> list[Dropped]:
        """Overflow drops since the last call (for the agent's spool_overflow event)."""
        with self._lock:
            out, self._dropped = self._dropped, []
        return out

    # -- reading / acking -------------------------------------------------------------------
    def peek(self, after_seq: int = 0, limit: int = 64) -> list[SpoolItem]:
        """Pending messages with seq > after_seq, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute("SELECT seq, topic, body, retain FROM spool WHERE seq > ? "
                                        "ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
            except sqlite3.DatabaseError as e:
                raise TelemetryError(f"spool read failed ({self.path}): {e}") from None
        return [SpoolItem(int(s), t, bytes(b), bool(r)) for s, t, b, r in rows]

    def ack(self, seqs: list[int]) -> None:
        """Delete messages the broker has acknowledged (PUBACK).  Unknown seqs are ignored."""
        if not seqs:
            return
        with self._lock:
            try:
                with self._txn():
                    gone = freed = 0
                    for i in range(0, len(seqs), 500):   # SQLite's bound-variable limit
                        chunk = seqs[i:i + 500]
                        marks = ",".join("?" * len(chunk))
                        n, size = self._db.execute(f"SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) "
                                                   f"FROM spool WHERE seq IN ({marks})", chunk).fetchone()
                        self._db.execute(f"DELETE FROM spool WHERE seq IN ({marks})", chunk)
                        gone, freed = gone + int(n), freed + int(size)
                    self._meta_set("acked_total", (self._meta_get("acked_total") or 0) + gone)
            except sqlite3.DatabaseError as e:
                self._reload_totals_locked()
                raise TelemetryError(f"spool ack failed ({self.path}): {e}") from None
            self._count -= gone
            self._bytes -= freed

    def _reload_totals_locked(self) -> None:
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM spool").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

    @property
    def pending(self) -> int:
        return self._count

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def last_seq(self) -> int:
        """The highest seq ever assigned (0 if none), from SQLite's AUTOINCREMENT bookkeeping."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='spool'").fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
