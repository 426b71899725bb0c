"""The referee's queue and leaderboard: SQLite (WAL), one row per submission, crash-safe.

Layout of a queue folder::

    root/queue.db                    jobs table (WAL: root/queue.db-wal, -shm)
    root/submissions/<sha256>.<ext>  each distinct file once, by content; read-only
    root/results/<id>/result.json    the record the leaderboard was computed from (+ verdict, job)
    root/results/<id>/report/        the child's report, when it writes one
    root/results/<id>/work/          request.json, child.out, child.err of the last run
    root/serve.lock                  flock held by the one running `serve`

A job is ``queued`` → ``running`` (claim) → ``done`` (finish).  Every state change is one IMMEDIATE
transaction with synchronous=FULL, so a SIGKILLed or power-cut server loses nothing it committed.  A job
a dead server left ``running`` is put back to ``queued`` by recover() at the next start and re-run from
scratch; after ``max_attempts`` starts that never finished it is ``done`` as crashed ("server died N
times during this job") instead, so one submission that takes the machine down cannot wedge the queue.
finish() on a ``done`` job is a no-op, and the leaderboard is computed from rows (one per job), so a
re-run can never be counted twice.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import inspect
import json
import os
import sqlite3
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from edgert.errors import EvalError
from edgert.eval.isolation import EvalRequest, run_isolated
from edgert.eval.types import EvalOptions, Limits, Verdict

JOB_STATUSES = ("queued", "running", "done")
SCHEMA_VERSION = 1
MAX_ENTRANT_CHARS = 64
MAX_NOTE_CHARS = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entrant TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    filename TEXT NOT NULL,                -- the name it was submitted under (display only)
    path TEXT NOT NULL,                    -- relative to the queue root: submissions/<sha256>.<ext>
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done')),
    attempts INTEGER NOT NULL DEFAULT 0,   -- how many times a server started it
    submitted_at REAL NOT NULL,            -- unix seconds
    started_at REAL,
    finished_at REAL,
    verdict TEXT,
    reason TEXT,
    score REAL,
    formula TEXT,
    higher_is_better INTEGER,
    dice REAL,
    top1 REAL,
    ms_per_image REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id);
"""


@dataclass(frozen=True)
class QueueOptions:
    root: Path
    max_attempts: int = 3          # server deaths tolerated per job before it is ruled crashed


@dataclass
class Job:
    id: int
    entrant: str
    path: Path
    kind: str
    sha256: str
    status: str
    attempts: int
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    verdict: str | None
    reason: str | None
    score: float | None
    note: str = ""
    filename: str = ""


def _utc(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json_atomic(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _summary(result: dict | None) -> dict:
    """What the leaderboard shows, pulled from a result record (harness.py's layout)."""
    result = result or {}
    score = result.get("score") if isinstance(result.get("score"), dict) else {}
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
    timing = result.get("timing") if isinstance(result.get("timing"), dict) else {}
    mean_s = _num(timing.get("mean_s"))
    hib = score.get("higher_is_better", True)
    return {"score": _num(score.get("value")), "formula": score.get("formula"),
            "higher_is_better": 1 if hib is not False else 0,
            "dice": _num(metrics.get("dice_mean")), "top1": _num(metrics.get("top1")),
            "ms_per_image": mean_s * 1000.0 if mean_s is not None else None}


class EvalQueue:
    def __init__(self, opts: QueueOptions):
        self.opts = opts
        self.root = Path(opts.root)
        self.db_path = self.root / "queue.db"
        try:
            (self.root / "submissions").mkdir(parents=True, exist_ok=True)
            (self.root / "results").mkdir(exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version != SCHEMA_VERSION:
                    raise EvalError(f"{self.db_path}: queue schema {version}, this edgert reads "
                                    f"{SCHEMA_VERSION}")
        except OSError as e:
            raise EvalError(f"cannot create the queue at {self.root}: {e.strerror or e}") from None
        except sqlite3.Error as e:
            raise EvalError(f"{self.db_path}: {e}") from None

    # ------------------------------------------------------------------------------ plumbing
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # a connection per call: safe across threads and processes; sqlite's busy timeout serialises
        db = sqlite3.connect(str(self.db_path), timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")      # a committed state change survives power loss
            yield db
        finally:
            db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")              # take the write lock now: no lost updates
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    _COLUMNS = ("id, entrant, path, kind, sha256, status, attempts, submitted_at, started_at, finished_at, "
                "verdict, reason, score, note, filename")

    def _job(self, row: tuple) -> Job:
        job = Job(*row)
        job.path = self.root / row[2]
        return job

    def job(self, job_id: int) -> Job:
        with self._connect() as db:
            row = db.execute(f"SELECT {self._COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise EvalError(f"no job #{job_id} in the queue at {self.root}")
        return self._job(row)

    # ------------------------------------------------------------------------------ entrant side
    def submit(self, path: Path, entrant: str, note: str = "") -> int:
        from edgert.eval.submission import kind_of     # the suffix table lives there

        path = Path(path)
        kind = kind_of(path)                             # EvalError for an unknown suffix
        if not path.is_file():
            raise EvalError(f"submission not found: {path}")
        entrant = " ".join(str(entrant).split())
        if not entrant or len(entrant) > MAX_ENTRANT_CHARS:
            raise EvalError(f"entrant name must be 1..{MAX_ENTRANT_CHARS} characters, got {entrant!r}")
        note = " ".join(str(note).split())[:MAX_NOTE_CHARS]
        sha, rel = self._store(path)
        with self._tx() as db:
            cur = db.execute("INSERT INTO jobs (entrant, note, filename, path, kind, sha256, submitted_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (entrant, note, path.name, rel, kind, sha, time.time()))
            return int(cur.lastrowid)

    def _store(self, path: Path) -> tuple[str, str]:
        """Copy into submissions/<sha256>.<ext> (hash while copying; temp file + fsync + rename)."""
        subs = self.root / "submissions"
        fd, tmp = tempfile.mkstemp(dir=subs, prefix=".incoming-")
        h = hashlib.sha256()
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            sha = h.hexdigest()
            rel = f"submissions/{sha}{path.suffix.lower()}"
            final = self.root / rel
            if final.exists():                   # same content submitted before: keep one copy
                Path(tmp).unlink()
            else:
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
                dir_fd = os.open(subs, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)             # the rename itself is durable before the row exists
                finally:
                    os.close(dir_fd)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise EvalError(f"cannot store {path} in the queue: {e.strerror or e}") from None
        return sha, rel

    # ------------------------------------------------------------------------------ referee side
    def claim(self) -> Job | None:
        """The oldest queued job, now running (attempts + 1), or None."""
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ? "
                       "WHERE id = ?", (time.time(), row[0]))
            job = db.execute(f"SELECT {self._COLUMNS} FROM jobs WHERE id = ?", (row[0],)).fetchone()
        return self._job(job)

    def release(self, job_id: int) -> None:
        """Put a running job back, as if never started (the harness, not the submission, failed)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = 'queued', started_at = NULL, attempts = MAX(attempts - 1, 0) "
                       "WHERE id = ? AND status = 'running'", (job_id,))

    def recover(self) -> int:
        """At server start: running jobs were interrupted; re-queue them (or rule them crashed after
        max_attempts starts).  Returns how many were re-queued."""
        with self._tx() as db:
            rows = db.execute("SELECT id, attempts FROM jobs WHERE status = 'running' ORDER BY id").fetchall()
            again = [i for i, n in rows if n < self.opts.max_attempts]
            db.executemany("UPDATE jobs SET status = 'queued', started_at = NULL WHERE id = ?",
                           [(i,) for i in again])
        for job_id, n in rows:
            if n >= self.opts.max_attempts:
                self.finish(job_id, Verdict("crashed", f"server died {n} times during this job"), None)
        return len(again)

    def finish(self, job_id: int, verdict: Verdict, result: dict | None) -> None:
        """Write results/<id>/result.json, then mark the job done with its verdict and score, in one
        transaction.  A job already done is left as it is."""
        job = self.job(job_id)
        if job.status == "done":
            return
        record = dict(result or {})
        record["verdict"] = {**(record.get("verdict") if isinstance(record.get("verdict"), dict) else {}),
                             **verdict.to_json()}
        record["job"] = {"id": job.id, "entrant": job.entrant, "filename": job.filename, "kind": job.kind,
                         "sha256": job.sha256, "attempts": job.attempts, "note": job.note,
                         "submitted_utc": _utc(job.submitted_at)}
        out = self.root / "results" / str(job_id)
        try:
            out.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(out / "result.json", record)
        except OSError as e:
            raise EvalError(f"cannot write the result of job #{job_id} to {out}: {e.strerror or e}") from None
        s = _summary(result) if verdict.status == "ok" else {}
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = 'done', finished_at = ?, verdict = ?, reason = ?, score = ?, "
                       "formula = ?, higher_is_better = ?, dice = ?, top1 = ?, ms_per_image = ? "
                       "WHERE id = ? AND status != 'done'",
                       (time.time(), verdict.status, verdict.reason, s.get("score"), s.get("formula"),
                        s.get("higher_is_better"), s.get("dice"), s.get("top1"), s.get("ms_per_image"),
                        job_id))

    def jobs(self, status: str | None = None) -> list[Job]:
        if status is not None and status not in JOB_STATUSES:
            raise EvalError(f"unknown job status {status!r}; known: {', '.join(JOB_STATUSES)}")
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        with self._connect() as db:
            rows = db.execute(f"SELECT {self._COLUMNS} FROM jobs {where} ORDER BY id", args).fetchall()
        return [self._job(r) for r in rows]

    def leaderboard(self) -> list[dict]:
        """Ranked rows first (best ok score per entrant; ties go to the earlier submission), then every
        finished submission that did not score, with ``rank`` None, its verdict and reason."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, entrant, sha256, kind, submitted_at, verdict, reason, score, formula, "
                "higher_is_better, dice, top1, ms_per_image FROM jobs WHERE status = 'done' ORDER BY id"
            ).fetchall()
        best: dict[str, tuple] = {}
        counts: dict[str, int] = {}
        unranked = []

        def key(r):       # smaller is better; direction from the formula's own higher_is_better
            return (-r[7] if r[9] != 0 else r[7], r[4], r[0])

        for r in rows:
            if r[5] == "ok" and r[7] is not None:
                counts[r[1]] = counts.get(r[1], 0) + 1
                if r[1] not in best or key(r) < key(best[r[1]]):
                    best[r[1]] = r
            else:
                reason = r[6] if r[5] != "ok" else "the result has no score"
                unranked.append({"rank": None, "entrant": r[1], "job_id": r[0], "verdict": r[5],
                                 "reason": reason, "submitted_at": _utc(r[4])})
        board = []
        for rank, r in enumerate(sorted(best.values(), key=key), start=1):
            board.append({"rank": rank, "entrant": r[1], "job_id": r[0],
                          "score": {"formula": r[8], "value": r[7], "higher_is_better": r[9] != 0},
                          "dice": None if r[10] is None else round(r[10], 4),
                          "top1": None if r[11] is None else round(r[11], 4),
                          "ms_per_image": None if r[12] is None else round(r[12], 3),
                          "submitted_at": _utc(r[4]), "submissions": counts[r[1]]})
        return board + unranked


# ---------------------------------------------------------------------------------------- serving
@contextmanager
def _server_lock(root: Path) -> Iterator[None]:
    """One server per queue: a second would recover() (re-queue) the first one's running job.
    flock is released by the kernel when the holder dies, SIGKILL included."""
    f = open(root / "serve.lock", "a")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EvalError(f"another server is already serving the queue at {root}") from None
        yield
    finally:
        f.close()


def _stored_problem(job: Job) -> str:
    """Why the stored copy cannot be evaluated ("" if it can): gone, or not the bytes submitted."""
    h = hashlib.sha256()
    try:
        with open(job.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        return f"stored submission {job.path.name} is unreadable: {e.strerror or e}"
    if h.hexdigest() != job.sha256:
        return f"stored submission {job.path.name} does not match its sha256 (changed after submission)"
    return ""


def _runner_kwargs(runner: Callable, offered: dict) -> dict:
    """The optional keywords (stop, workdir) this runner accepts; plain ``runner(req, limits)`` works."""
    try:
        params = inspect.signature(runner).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return offered
    return {k: v for k, v in offered.items() if k in params}


def serve(queue: EvalQueue, dataset: Path, options: EvalOptions, limits: Limits, once: bool = False,
          poll_s: float = 1.0, stop: threading.Event | None = None,
          on_job: Callable[[Job, Verdict, dict | None], None] | None = None,
          runner: Callable = run_isolated) -> int:
    """Evaluate queued jobs one at a time (one device); returns how many were finished.

    ``once``: return when the queue is empty.  ``stop`` (set by a signal handler) ends the loop; a job
    then in progress is killed and re-queued when the runner accepts ``stop``, else finished first.
    An EvalError from the runner (the harness, not the submission) re-queues the job and propagates.
    """
    dataset = Path(dataset)
    if not dataset.exists():
        raise EvalError(f"dataset not found: {dataset}")
    done = 0
    with _server_lock(queue.root):
        queue.recover()
        while not (stop is not None and stop.is_set()):
            job = queue.claim()
            if job is None:
                if once:
                    break
                if stop is not None:
                    stop.wait(poll_s)
                else:
                    time.sleep(poll_s)
                continue
            out = queue.root / "results" / str(job.id)
            problem = _stored_problem(job)
            if problem:
                verdict, result = Verdict("invalid", problem), None
            else:
                req = EvalRequest(job.path, dataset, options, report_dir=out / "report")
                kwargs = _runner_kwargs(runner, {"stop": stop, "workdir": out / "work"})
                try:
                    verdict, result = runner(req, limits, **kwargs)
                except BaseException:
                    queue.release(job.id)
                    if stop is not None and stop.is_set():
                        break
                    raise
            queue.finish(job.id, verdict, result)
            done += 1
            if on_job is not None:
                on_job(queue.job(job.id), verdict, result)
    return done
