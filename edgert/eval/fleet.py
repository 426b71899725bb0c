"""Fleet mode: a dispatcher hands queued submissions to evaluation workers (devices) over MQTT.

Topics (beside the telemetry scheme of edgert/telemetry/topics.py; QoS 1 throughout):

* ``edgert/v1/<fleet>/eval/jobs`` — dispatcher → workers.  Workers subscribe through the shared
  subscription ``$share/edgert-eval/edgert/v1/<fleet>/eval/jobs`` so the broker gives each job to one
  of them (MQTT 5 §4.8.2; Mosquitto honours ``$share`` for 3.1.1 clients too).
* ``edgert/v1/<fleet>/eval/status/<worker>`` — worker → dispatcher: ``accepted``, ``heartbeat``,
  ``declined`` and ``result`` messages.
* ``edgert/v1/<fleet>/eval/workers/<worker>`` — retained ``{"state": "online", "dataset": ...,
  "energy": bool}`` on every connect; the Last Will is a retained ``{"state": "offline"}``, so the
  dispatcher learns of a worker that died (power cut, SIGKILL, network loss) from the broker.
  ``energy`` says the worker has a real power sensor: a score that needs J/image
  (``accuracy_per_joule``) is sent only to such workers, and one without declines it ("no power
  sensor") rather than giving the submission a verdict that is not its fault.

How a busy worker avoids taking jobs (the whole correctness argument):

1. A worker is subscribed to the jobs topic only while it is idle.  On the first job message it
   unsubscribes (from paho's network thread, before any other message is handled), publishes
   ``accepted`` and hands the job to its main thread.  When the job is done it subscribes again
   *before* publishing the result, so by the time the dispatcher sees the result (same connection,
   in order) the broker already counts the worker as a subscriber.
2. Jobs the broker had already routed to it before the UNSUBSCRIBE took effect are not kept: the
   worker answers ``declined`` at once and the dispatcher publishes the job again.  Nothing is
   hoarded and nothing waits behind a long evaluation.
3. The dispatcher publishes at most as many unaccepted jobs as it knows idle online workers, so a job
   is rarely published while nobody is subscribed.  When that happens anyway (a clean-session shared
   subscription with no subscriber drops the message), the job is published again after ``lease_s``
   without an ``accepted``.
4. An accepted job is leased: each ``heartbeat`` (every ``heartbeat_s``) renews it.  A retained
   ``offline`` for its worker, or ``lease_s`` without a heartbeat, re-publishes it with ``attempt + 1``;
   after ``max_attempts`` losses it is finished as ``crashed`` ("worker died N times").

So no job is lost (every published job ends in a result, a republish or a requeue), and a job runs
twice only after its worker died or went silent for a whole lease.  The first result for a job is
the one recorded (``EvalQueue.finish`` is idempotent too); later ones are counted and ignored.

The dispatcher keeps every piece of state (and every queue call) on the thread that called
``run()``: paho's callbacks only put messages on a ``queue.Queue``, so a malformed payload can never
stop the network thread and the queue's database is used from one thread.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import queue as queue_mod
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgert.errors import EvalError, TelemetryError
from edgert.eval import scoring
from edgert.eval.types import SUBMISSION_KINDS, VERDICTS, EvalOptions, Limits, Verdict
from edgert.eval.submission import sha256_file
from edgert.telemetry.mqtt import BrokerOptions, connect_client
from edgert.telemetry.topics import PREFIX, VERSION, check_id

log = logging.getLogger(__name__)

SCHEMA = 1
SHARE_GROUP = "edgert-eval"
MAX_ATTEMPTS = 3
STATUS_TYPES = ("accepted", "heartbeat", "declined", "result")
SHA_LEN = 64
FETCH_TIMEOUT_S = 60.0
FETCH_MAX_BYTES = 4 << 30   # a submission larger than 4 GiB is refused rather than filling the cache
CONNECT_TIMEOUT_S = 10.0
DECLINE_HOLD_S = 0.2        # a declined job waits this long before it is sent again
TICK_S = 0.1                # how often the dispatcher looks at leases when no message arrives


# --------------------------------------------------------------------------- topics
def _base(fleet: str) -> str:
    return f"{PREFIX}/{VERSION}/{check_id(fleet, 'fleet')}/eval"


def jobs_topic(fleet: str) -> str:
    return f"{_base(fleet)}/jobs"


def jobs_subscription(fleet: str) -> str:
    return f"$share/{SHARE_GROUP}/{jobs_topic(fleet)}"


def status_topic(fleet: str, worker: str = "+") -> str:
    return f"{_base(fleet)}/status/{worker if worker == '+' else check_id(worker, 'worker id')}"


def worker_topic(fleet: str, worker: str = "+") -> str:
    return f"{_base(fleet)}/workers/{worker if worker == '+' else check_id(worker, 'worker id')}"


def _topic_worker(topic: str, fleet: str, kind: str) -> str | None:
    """The worker id of ``edgert/v1/<fleet>/eval/<kind>/<worker>``, or None."""
    prefix = f"{_base(fleet)}/{kind}/"
    if not topic.startswith(prefix):
        return None
    worker = topic[len(prefix):]
    return worker if worker and "/" not in worker else None


# --------------------------------------------------------------------------- payloads
class MalformedMessage(EvalError):
    """A fleet payload that does not follow the schema (logged and counted, never fatal)."""


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _decode(payload: bytes) -> dict:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedMessage(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"not a JSON object: {type(obj).__name__}")
    if obj.get("v") != SCHEMA:
        raise MalformedMessage(f"schema version {obj.get('v')!r}, expected {SCHEMA}")
    return obj


def _int(obj: dict, key: str, minimum: int) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise MalformedMessage(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _str(obj: dict, key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise MalformedMessage(f"{key} must be a string, got {value!r}")
    return value


def _dataclass_from_json(cls, d: Any, what: str):
    """Build an options dataclass from its JSON: known keys only, each of its default's type.

    Unknown keys are refused: a worker must not silently run with an option it does not know."""
    if not isinstance(d, dict):
        raise MalformedMessage(f"{what} must be an object, got {d!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise MalformedMessage(f"{what} has unknown keys {unknown}")
    defaults = cls()
    kwargs = {}
    for key, value in d.items():
        default = getattr(defaults, key)
        if isinstance(value, list):
            value = tuple(value)   # JSON has no tuples: size / mean / std come back as lists
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float))
            value = float(value) if ok else value
        elif default is None:      # Optional[tuple] (size)
            ok = value is None or isinstance(value, tuple)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise MalformedMessage(f"{what}.{key} has the wrong type: {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def options_from_json(d: Any) -> EvalOptions:
    return _dataclass_from_json(EvalOptions, d, "options")


def limits_from_json(d: Any) -> Limits:
    return _dataclass_from_json(Limits, d, "limits")


def verdict_from_json(d: Any) -> Verdict:
    if not isinstance(d, dict):
        raise MalformedMessage(f"verdict must be an object, got {d!r}")
    # keys a newer worker adds are dropped, not fatal: refusing a result would re-run the job
    status = d.get("status")
    if status not in VERDICTS:
        raise MalformedMessage(f"verdict status must be one of {', '.join(VERDICTS)}, got {status!r}")
    reason = d.get("reason", "")
    exit_code = d.get("exit_code")
    if not isinstance(reason, str):
        raise MalformedMessage(f"verdict reason must be a string, got {reason!r}")
    if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
        raise MalformedMessage(f"verdict exit_code must be an integer or null, got {exit_code!r}")
    lists = {}
    for key in ("stderr_tail", "isolation"):
        value = d.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MalformedMessage(f"verdict {key} must be a list of strings, got {value!r}")
        lists[key] = value
    return Verdict(status=status, reason=reason, exit_code=exit_code, **lists)


@dataclass(frozen=True)
class JobMessage:
    """One job as published on ``.../eval/jobs`` (the "v": 1 schema)."""
    job_id: int
    attempt: int
    submission_url: str
    sha256: str
    kind: str
    options: EvalOptions
    limits: Limits
    dataset: str = ""          # the dataset name the dispatcher evaluates on; "" = any

    def to_json(self) -> dict[str, Any]:
        return {"v": SCHEMA, "job_id": self.job_id, "attempt": self.attempt,
                "submission_url": self.submission_url, "sha256": self.sha256, "kind": self.kind,
                "options": self.options.to_json(), "limits": dataclasses.asdict(self.limits),
                "dataset": self.dataset}


def parse_job_ids(payload: bytes) -> tuple[int, int]:
    """(job_id, attempt) of a job message, enough to decline or reject it."""
    obj = _decode(payload)
    return _int(obj, "job_id", 0), _int(obj, "attempt", 1)


def parse_job(payload: bytes) -> JobMessage:
    obj = _decode(payload)
    job_id, attempt = _int(obj, "job_id", 0), _int(obj, "attempt", 1)
    url = _str(obj, "submission_url")
    if not url:
        raise MalformedMessage("submission_url is empty")
    sha = _str(obj, "sha256")
    if len(sha) != SHA_LEN or any(c not in "0123456789abcdef" for c in sha):
        raise MalformedMessage(f"sha256 must be {SHA_LEN} lowercase hex digits, got {sha!r}")
    kind = _str(obj, "kind")
    if kind not in SUBMISSION_KINDS:
        raise MalformedMessage(f"kind must be one of {', '.join(SUBMISSION_KINDS)}, got {kind!r}")
    return JobMessage(job_id, attempt, url, sha, kind, options_from_json(obj.get("options")),
                      limits_from_json(obj.get("limits")), _str(obj, "dataset", ""))


@dataclass(frozen=True)
class StatusMessage:
    type: str
    worker: str
    job_id: int
    attempt: int
    verdict: Verdict | None = None
    result: dict | None = None
    reason: str = ""


def parse_status(payload: bytes, worker: str) -> StatusMessage:
    """A worker's status message; ``worker`` is the topic's last level and must match the payload."""
    obj = _decode(payload)
    kind = obj.get("type")
    if kind not in STATUS_TYPES:
        raise MalformedMessage(f"type must be one of {', '.join(STATUS_TYPES)}, got {kind!r}")
    if obj.get("worker") != worker:
        raise MalformedMessage(f"payload names worker {obj.get('worker')!r} on {worker!r}'s topic")
    job_id, attempt = _int(obj, "job_id", 0), _int(obj, "attempt", 1)
    if kind != "result":
        return StatusMessage(kind, worker, job_id, attempt, reason=_str(obj, "reason", ""))
    result = obj.get("result")
    if result is not None and not isinstance(result, dict):
        raise MalformedMessage(f"result must be an object or null, got {type(result).__name__}")
    return StatusMessage(kind, worker, job_id, attempt, verdict_from_json(obj.get("verdict")), result)


@dataclass(frozen=True)
class WorkerState:
    online: bool
    dataset: str = ""
    energy: bool = False          # has a real power sensor: can take jobs whose score needs J/image


def parse_worker_state(payload: bytes) -> WorkerState:
    """A retained workers/<id> message.  Bare "online" / "offline" are accepted too; an empty payload
    (a cleared retained message) means offline.  A worker that does not say it measures energy does not."""
    text = payload.strip()
    if text in (b"", b"offline"):
        return WorkerState(False)
    if text == b"online":
        return WorkerState(True)
    obj = _decode(payload)
    state = obj.get("state")
    if state not in ("online", "offline"):
        raise MalformedMessage(f"state must be online or offline, got {state!r}")
    energy = obj.get("energy", False)
    if not isinstance(energy, bool):
        raise MalformedMessage(f"energy must be true or false, got {energy!r}")
    return WorkerState(state == "online", _str(obj, "dataset", ""), energy)


# --------------------------------------------------------------------------- connection
def _wait_published(info, timeout_s: float) -> bool:
    try:
        info.wait_for_publish(timeout_s)
    except (RuntimeError, ValueError):
        return False
    return info.is_published()


# --------------------------------------------------------------------------- files
def serve_directory(root: Path, host: str = "127.0.0.1", port: int = 0):
    """A tiny threaded HTTP server for ``root`` (the queue's submission files) in a daemon thread.

    Returns ``(server, base_url)``; call ``server.shutdown()`` to stop it.  Files only, no directory
    listings; there is no authentication, so bind beyond loopback only on a network you trust (the
    sha256 in each job still protects the worker from a tampered transfer)."""
    import functools
    import http.server

    class FilesOnly(http.server.SimpleHTTPRequestHandler):
        def list_directory(self, path):   # workers ask for files by name; no listing of entries
            self.send_error(404, "no directory listings")
            return None

        def log_message(self, fmt, *args) -> None:
            log.debug("http: " + fmt, *args)

    handler = functools.partial(FilesOnly, directory=str(root))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="edgert-eval-files", daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


def _suffix(kind: str) -> str:
    from edgert.eval.submission import KIND_BY_SUFFIX   # the one table of submission suffixes

    return next(s for s, k in KIND_BY_SUFFIX.items() if k == kind)


def _open_source(url: str):
    """A binary stream for a path, file:// or http(s):// URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        return urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S)   # noqa: S310 (scheme checked)
    if parts.scheme == "file":
        return open(urllib.request.url2pathname(parts.path), "rb")
    if parts.scheme == "" or len(parts.scheme) == 1:   # a plain path (or a Windows drive letter)
        return open(url, "rb")
    raise EvalError(f"unsupported submission_url scheme {parts.scheme!r} (path, file://, http://, https://)")


def fetch_submission(url: str, sha256: str, kind: str, cache_dir: Path) -> tuple[Path | None, str]:
    """Copy the submission into ``cache_dir/<sha256><suffix>`` and verify it while copying.

    Returns ``(path, "")`` or ``(None, why)`` for a sha256 mismatch.  A private copy (rather than
    using a shared path in place) means the file cannot change between the check and the run.
    Raises EvalError / OSError when the file cannot be fetched at all."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / f"{sha256}{_suffix(kind)}"
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest, ""
    h = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".fetch-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, _open_source(url) as src:
            while chunk := src.read(1 << 20):
                size += len(chunk)
                if size > FETCH_MAX_BYTES:
                    raise EvalError(f"submission at {url} is larger than {FETCH_MAX_BYTES} bytes")
                h.update(chunk)
                out.write(chunk)
        got = h.hexdigest()
        if got != sha256:
            return None, f"sha256 mismatch: expected {sha256[:12]}…, got {got[:12]}…"
        os.replace(tmp, dest)
        return dest, ""
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- worker
Runner = Callable[..., "tuple[Verdict, dict | None]"]  # run_isolated(req, limits) and stand-ins


def _default_runner(req, limits):
    from edgert.eval.isolation import run_isolated

    return run_isolated(req, limits)


@dataclass
class WorkerStats:
    jobs: int = 0                 # jobs run to a result
    declined: int = 0             # job messages that arrived while busy
    malformed: int = 0            # job messages that could not be read
    results: list[tuple[int, int, str]] = field(default_factory=list)   # (job_id, attempt, verdict)


class FleetWorker:
    """One evaluation device: takes one job at a time from the fleet's shared job subscription."""

    def __init__(self, broker: BrokerOptions, fleet: str, worker_id: str, dataset: Path, cache_dir: Path,
                 runner: Runner | None = None, heartbeat_s: float = 5.0,
                 dataset_name: str | None = None, client_id: str | None = None,
                 sensor_root: Path = Path("/")) -> None:
        if heartbeat_s <= 0:
            raise EvalError(f"heartbeat_s must be > 0, got {heartbeat_s}")
        self.broker = broker
        self.fleet = check_id(fleet, "fleet")
        self.worker_id = check_id(worker_id, "worker id")
        self.dataset = Path(dataset)
        self.dataset_name = self.dataset.name if dataset_name is None else dataset_name
        self.cache_dir = Path(cache_dir)
        self.runner = runner or _default_runner
        self.heartbeat_s = heartbeat_s
        self.sensor_root = Path(sensor_root)
        from edgert.eval.harness import has_power_sensor
        self.has_energy = has_power_sensor(self.sensor_root)   # probed once, as the agent does
        self.client_id = client_id or f"edgert-eval-{self.fleet}-{self.worker_id}"
        self.stats = WorkerStats()
        self._jobs_sub = jobs_subscription(self.fleet)
        self._status = status_topic(self.fleet, self.worker_id)
        self._state_topic = worker_topic(self.fleet, self.worker_id)
        self._lock = threading.Lock()
        self._current: tuple[int, int] | None = None   # (job_id, attempt) taken and not yet answered
        self._accepting = False                        # subscribed (or about to be) to the jobs
        self._handoff: queue_mod.Queue[JobMessage] = queue_mod.Queue()
        self._client = None

    # -- messages ---------------------------------------------------------------------------------
    def _state_payload(self, online: bool) -> bytes:
        obj = {"v": SCHEMA, "state": "online" if online else "offline", "worker": self.worker_id}
        if online:
            obj["dataset"] = self.dataset_name
            obj["energy"] = self.has_energy
        return encode(obj)

    def _send(self, kind: str, job_id: int, attempt: int, client=None, **extra):
        payload = {"v": SCHEMA, "type": kind, "worker": self.worker_id, "job_id": job_id,
                   "attempt": attempt, "t_ms": int(time.time() * 1000), **extra}
        return (client or self._client).publish(self._status, encode(payload), qos=1)

    def _on_connected(self, client) -> None:
        client.on_message = self._on_message
        with self._lock:
            if self._accepting and self._current is None:
                client.subscribe(self._jobs_sub, qos=1)   # a clean session forgets it on every reconnect
        # after the SUBSCRIBE on the same connection: whoever sees "online" can already reach us
        client.publish(self._state_topic, self._state_payload(True), qos=1, retain=True)

    def _on_message(self, client, userdata, msg) -> None:
        # paho's network thread: decide, never block, never raise (an exception would end the thread)
        try:
            self._take(client, msg.payload)
        except Exception:
            log.exception("worker %s could not handle a job message", self.worker_id)

    def _take(self, client, payload: bytes) -> None:
        try:
            job_id, attempt = parse_job_ids(payload)
        except MalformedMessage as e:
            self.stats.malformed += 1
            log.warning("worker %s: malformed job message (%s); dropped", self.worker_id, e)
            return   # nothing to answer to; the dispatcher republishes an unaccepted job after its lease
        try:
            job, error = parse_job(payload), ""
        except MalformedMessage as e:
            job, error = None, str(e)
        with self._lock:
            busy = self._current is not None or not self._accepting
            wrong_data = job is not None and bool(job.dataset) and job.dataset != self.dataset_name
            no_energy = job is not None and not self.has_energy and scoring.needs_energy(job.options.score)
            take = not busy and job is not None and not wrong_data and not no_energy
            if take:
                self._current, self._accepting = (job_id, attempt), False
        if take:
            client.unsubscribe(self._jobs_sub)   # goes out before we read the next message
            self._send("accepted", job_id, attempt, client)
            self._handoff.put(job)
        elif busy:
            # routed to us before our UNSUBSCRIBE took effect: give it straight back, hoard nothing
            self.stats.declined += 1
            self._send("declined", job_id, attempt, client, reason="busy")
        elif job is None:
            # retrying cannot fix it (a dispatcher speaking another dialect): answer it as invalid
            self.stats.malformed += 1
            log.warning("worker %s: job %d is malformed (%s)", self.worker_id, job_id, error)
            self._send("result", job_id, attempt, client,
                       verdict=Verdict("invalid", reason=f"malformed job: {error}").to_json(), result=None)
        elif no_energy:
            # not the submission's fault: leave it to a device that can measure J/image
            self.stats.declined += 1
            log.warning("worker %s: job %d's score %s needs a power sensor, and this worker has none; declined",
                        self.worker_id, job_id, job.options.score)
            self._send("declined", job_id, attempt, client, reason="no power sensor")
        else:
            # a device with other data must not score anyone: leave the job to one with the right set
            self.stats.declined += 1
            log.warning("worker %s: job %d wants dataset %r, this worker has %r; declined",
                        self.worker_id, job_id, job.dataset, self.dataset_name)
            self._send("declined", job_id, attempt, client, reason=f"dataset is {self.dataset_name!r}")

    def _go_idle(self, client) -> None:
        """Subscribe again -- before the result goes out (module docstring, point 1)."""
        with self._lock:
            self._current, self._accepting = None, True
        client.subscribe(self._jobs_sub, qos=1)

    # -- running ----------------------------------------------------------------------------------
    def _heartbeat(self, job: JobMessage, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_s):
            try:
                self._send("heartbeat", job.job_id, job.attempt)
            except Exception:
                log.exception("worker %s: heartbeat failed", self.worker_id)

    def _evaluate(self, job: JobMessage) -> tuple[Verdict, dict | None]:
        try:
            path, why = fetch_submission(job.submission_url, job.sha256, job.kind, self.cache_dir)
        except (EvalError, OSError, ValueError) as e:
            return Verdict("invalid", reason=f"cannot fetch submission {job.submission_url}: {e}"), None
        if path is None:
            return Verdict("invalid", reason=why), None
        from edgert.eval.isolation import EvalRequest

        req = EvalRequest(submission=path, dataset=self.dataset, options=job.options,
                          sensor_root=self.sensor_root)
        try:
            return self.runner(req, job.limits)
        except Exception as e:   # run_isolated never raises for a submission; this is the worker's fault
            log.exception("worker %s: runner failed on job %d", self.worker_id, job.job_id)
            return Verdict("crashed", reason=f"worker {self.worker_id} error: {type(e).__name__}: {e}"), None

    def _run_one(self, job: JobMessage, last: bool) -> None:
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job, done), daemon=True,
                                name=f"edgert-eval-heartbeat-{job.job_id}")
        beat.start()
        try:
            verdict, result = self._evaluate(job)
        finally:
            done.set()
            beat.join()
        if result is not None:
            try:
                json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as e:
                verdict, result = Verdict("crashed", reason=f"result record is not JSON: {e}"), None
        if last:
            with self._lock:
                self._current = None
        else:
            self._go_idle(self._client)
        info = self._send("result", job.job_id, job.attempt, verdict=verdict.to_json(), result=result)
        self.stats.jobs += 1
        self.stats.results.append((job.job_id, job.attempt, verdict.status))
        if not _wait_published(info, CONNECT_TIMEOUT_S):
            # paho keeps it and sends it after reconnecting; if that never happens the dispatcher's
            # lease runs out and the job is evaluated again
            log.warning("worker %s: the result of job %d is not acknowledged yet", self.worker_id, job.job_id)
        log.info("worker %s: job %d attempt %d -> %s", self.worker_id, job.job_id, job.attempt, verdict.status)

    def run(self, stop: threading.Event | None = None, max_jobs: int | None = None) -> WorkerStats:
        """Serve jobs until ``stop`` is set or ``max_jobs`` are done.  A job in progress is finished
        first.  Raises TelemetryError when the broker cannot be reached."""
        stop = stop or threading.Event()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._accepting = max_jobs is None or max_jobs > 0
        self._client = connect_client(self.broker, self.client_id, clean_session=True,
                                on_connected=self._on_connected,
                                will=(self._state_topic, self._state_payload(False)))
        try:
            while not stop.is_set() and (max_jobs is None or self.stats.jobs < max_jobs):
                try:
                    job = self._handoff.get(timeout=TICK_S)
                except queue_mod.Empty:
                    continue
                last = max_jobs is not None and self.stats.jobs + 1 >= max_jobs
                self._run_one(job, last=last or stop.is_set())
        finally:
            self._shutdown()
        return self.stats

    def _shutdown(self) -> None:
        client = self._client
        with self._lock:
            self._accepting = False
        client.unsubscribe(self._jobs_sub)
        # a job handed over but not started (a stop raced with it) goes back to the dispatcher
        while True:
            try:
                job = self._handoff.get_nowait()
            except queue_mod.Empty:
                break
            self._send("declined", job.job_id, job.attempt, reason="worker stopping")
        # a clean exit says offline itself (the will fires only on an unclean one)
        info = client.publish(self._state_topic, self._state_payload(False), qos=1, retain=True)
        _wait_published(info, 5.0)
        client.disconnect()
        client.loop_stop()
        self._client = None


# --------------------------------------------------------------------------- dispatcher
@dataclass
class DispatchStats:
    published: int = 0            # job messages sent (first sends and republishes)
    republished: int = 0          # sent again: declined, or no worker accepted within the lease
    requeued: int = 0             # sent again with attempt + 1 after a worker died or went silent
    finished: int = 0             # queue.finish() calls (one per job)
    duplicates: int = 0           # results for jobs already finished (ignored)
    malformed: int = 0            # status / worker messages that did not parse (ignored)
    timed_out: bool = False       # run(timeout_s=...) ran out with jobs outstanding


@dataclass
class _Outstanding:
    job: Any                      # the queue's Job
    attempt: int = 1
    published_at: float | None = None   # None: claimed, waiting for an idle worker
    worker: str | None = None     # who accepted the current attempt
    last_seen: float = 0.0        # its last accepted / heartbeat
    hold_until: float = 0.0       # declined: not sent again before this (no tight decline loop)


@dataclass
class _Worker:
    online: bool = False
    dataset: str = ""
    energy: bool = False          # it has a real power sensor
    busy: int | None = None       # the job it is running, as far as we know
    busy_seen: float = 0.0        # its last accepted / heartbeat: a busy mark older than a lease is stale


class FleetDispatcher:
    """Feeds an EvalQueue's jobs to the fleet's workers and records their results.

    ``serve_files_url``: workers fetch ``<serve_files_url>/<path relative to files_root>`` (e.g. from
    :func:`serve_directory` on the queue's ``submissions/`` folder) instead of the queue's file path, for devices that
    do not share the dispatcher's filesystem.  ``max_outstanding`` caps jobs claimed at once
    (default: the number of online workers, at least 1).  Only one dispatcher may serve a fleet: its
    MQTT client id is fixed so that its persistent session keeps results arriving while it reconnects.
    """

    def __init__(self, broker: BrokerOptions, fleet: str, queue, options: EvalOptions = EvalOptions(),
                 limits: Limits = Limits(), lease_s: float = 30.0, heartbeat_s: float = 5.0, *,
                 max_attempts: int = MAX_ATTEMPTS, max_outstanding: int | None = None,
                 dataset_name: str = "", serve_files_url: str = "", files_root: Path | None = None,
                 client_id: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if heartbeat_s <= 0 or lease_s <= heartbeat_s:
            raise EvalError(f"need 0 < heartbeat_s < lease_s, got heartbeat_s={heartbeat_s} lease_s={lease_s}")
        if max_attempts < 1:
            raise EvalError(f"max_attempts must be >= 1, got {max_attempts}")
        if serve_files_url and files_root is None:
            raise EvalError("serve_files_url needs files_root (the folder that URL serves)")
        self.broker = broker
        self.fleet = check_id(fleet, "fleet")
        self.queue = queue
        self.options = options
        self.limits = limits
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.max_attempts = max_attempts
        self.max_outstanding = max_outstanding
        self.dataset_name = dataset_name
        self.serve_files_url = serve_files_url.rstrip("/")
        self.files_root = Path(files_root) if files_root is not None else None
        self.client_id = client_id or f"edgert-eval-dispatch-{self.fleet}"
        self.clock = clock
        self.stats = DispatchStats()
        self.outstanding: dict[int, _Outstanding] = {}
        self.workers: dict[str, _Worker] = {}
        self._finished: set[int] = set()
        self._events: queue_mod.Queue[tuple[str, bytes]] = queue_mod.Queue()
        self._client = None
        self._subscribed = threading.Event()
        self._sub_refused: list[str] = []
        self._publish: Callable[[str, bytes], None] = self._mqtt_publish

    # -- network side: paho's thread only enqueues ------------------------------------------------
    def _on_connected(self, client) -> None:
        client.on_message = lambda _c, _u, msg: self._events.put((msg.topic, bytes(msg.payload)))
        client.on_subscribe = self._on_subscribe
        client.subscribe([(status_topic(self.fleet), 1), (worker_topic(self.fleet), 1)])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc).lower() for rc in reason_codes if rc.is_failure]
        if failed:
            self._sub_refused[:] = failed
        self._subscribed.set()

    def _mqtt_publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1)   # paho queues it across a reconnect

    # -- the state machine (the run() thread) ------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> None:
        """Apply one message; malformed ones are logged and counted."""
        now = self.clock()
        try:
            if (worker := _topic_worker(topic, self.fleet, "workers")) is not None:
                self._on_worker_state(worker, payload, now)
            elif (worker := _topic_worker(topic, self.fleet, "status")) is not None:
                self._on_status(parse_status(payload, worker), now)
        except (MalformedMessage, TelemetryError) as e:
            self.stats.malformed += 1
            log.warning("dispatcher: ignored a malformed message on %s: %s", topic, e)

    def _on_worker_state(self, worker: str, payload: bytes, now: float) -> None:
        state = parse_worker_state(payload)
        w = self.workers.setdefault(check_id(worker, "worker id"), _Worker())
        was_online = w.online
        w.online, w.dataset, w.energy = state.online, state.dataset, state.energy
        if state.online:
            if not was_online:
                log.info("dispatcher: worker %s online (dataset %r, energy %s)", worker, state.dataset,
                         "yes" if state.energy else "no")
            return
        if was_online:
            log.info("dispatcher: worker %s offline", worker)
        w.busy = None
        for out in list(self.outstanding.values()):
            if out.worker == worker:
                self._requeue(out, now, f"worker {worker} went offline")

    def _on_status(self, msg: StatusMessage, now: float) -> None:
        w = self.workers.setdefault(msg.worker, _Worker())
        out = self.outstanding.get(msg.job_id)
        if msg.type in ("accepted", "heartbeat"):
            w.busy, w.busy_seen = msg.job_id, now   # also for jobs of an earlier dispatcher run
            if out is None or msg.attempt != out.attempt:
                return   # a job we finished or already gave to someone else: its result will be ignored
            if out.worker not in (None, msg.worker):
                log.warning("dispatcher: job %d attempt %d runs on %s and %s", msg.job_id, msg.attempt,
                            out.worker, msg.worker)
            out.worker, out.last_seen = msg.worker, now
            if out.published_at is None:
                out.published_at = now
        elif msg.type == "declined":
            if out is not None and msg.attempt == out.attempt and out.worker in (None, msg.worker):
                out.worker, out.published_at = None, None   # back to waiting: fill() sends it again
                out.hold_until = now + DECLINE_HOLD_S
                self.stats.republished += 1
        elif msg.type == "result":
            if w.busy == msg.job_id:
                w.busy = None
            if out is None:
                if msg.job_id in self._finished:
                    self.stats.duplicates += 1
                return
            # the first result of any attempt wins: a worker presumed dead that finishes anyway still
            # produced a genuine evaluation
            self._finish(out, msg.verdict, msg.result)

    def _finish(self, out: _Outstanding, verdict: Verdict, result: dict | None) -> None:
        job_id = out.job.id
        del self.outstanding[job_id]
        self._finished.add(job_id)
        self.queue.finish(job_id, verdict, result)
        self.stats.finished += 1
        log.info("dispatcher: job %d finished: %s %s", job_id, verdict.status, verdict.reason)

    def _requeue(self, out: _Outstanding, now: float, why: str) -> None:
        if out.worker is not None and out.worker in self.workers:
            w = self.workers[out.worker]
            if w.busy == out.job.id:
                w.busy = None
        if out.attempt >= self.max_attempts:
            log.warning("dispatcher: job %d: %s; giving up after %d attempts", out.job.id, why, out.attempt)
            self._finish(out, Verdict("crashed", reason=f"worker died {out.attempt} times ({why})"), None)
            return
        log.warning("dispatcher: job %d attempt %d: %s; re-queued", out.job.id, out.attempt, why)
        out.attempt += 1
        out.worker, out.published_at = None, None
        self.stats.requeued += 1

    def check_leases(self) -> None:
        now = self.clock()
        for out in list(self.outstanding.values()):
            if out.worker is not None:
                if now - out.last_seen > self.lease_s:
                    self._requeue(out, now, f"no heartbeat from {out.worker} for {self.lease_s:g} s")
            elif out.published_at is not None and now - out.published_at > self.lease_s:
                out.published_at = None   # nobody took it (no subscriber at that moment): send again
                self.stats.republished += 1

    def _eligible(self, w: _Worker) -> bool:
        """Online, with the right dataset, and able to measure J/image when the score needs it."""
        return (w.online and (not self.dataset_name or not w.dataset or w.dataset == self.dataset_name)
                and (w.energy or not scoring.needs_energy(self.options.score)))

    def _capacity(self) -> int:
        limit = self.max_outstanding
        if limit is None:
            limit = sum(1 for w in self.workers.values() if self._eligible(w))
        return max(1, limit)

    def fill(self) -> bool:
        """Claim jobs up to capacity and publish as many as there are idle workers.  Returns False
        when the queue had nothing more to give."""
        more = True
        while len(self.outstanding) < self._capacity():
            job = self.queue.claim()
            if job is None:
                more = False
                break
            self.outstanding[job.id] = _Outstanding(job)
        now = self.clock()
        idle = sum(1 for w in self.workers.values()
                   if self._eligible(w) and (w.busy is None or now - w.busy_seen > self.lease_s))
        unaccepted = sum(1 for o in self.outstanding.values() if o.worker is None and o.published_at is not None)
        for out in sorted(self.outstanding.values(), key=lambda o: o.job.id):
            if unaccepted >= idle:
                break
            if out.published_at is None and out.worker is None and now >= out.hold_until:
                self._publish(jobs_topic(self.fleet), encode(self.job_message(out).to_json()))
                out.published_at = now
                unaccepted += 1
                self.stats.published += 1
        return more

    def submission_url(self, job) -> str:
        path = Path(job.path).resolve()
        if not self.serve_files_url:
            return str(path)
        try:
            rel = path.relative_to(self.files_root.resolve())
        except ValueError:
            raise EvalError(f"submission {path} is not under files_root {self.files_root}") from None
        return f"{self.serve_files_url}/{urllib.parse.quote(rel.as_posix())}"

    def job_message(self, out: _Outstanding) -> JobMessage:
        job = out.job
        return JobMessage(job_id=job.id, attempt=out.attempt, submission_url=self.submission_url(job),
                          sha256=job.sha256, kind=job.kind, options=self.options, limits=self.limits,
                          dataset=self.dataset_name)

    # -- the loop ---------------------------------------------------------------------------------
    def start(self, timeout_s: float = CONNECT_TIMEOUT_S) -> FleetDispatcher:
        """Connect and subscribe (TelemetryError when the broker is down or refuses us)."""
        if self._client is not None:
            return self
        self._subscribed.clear()
        client = connect_client(self.broker, self.client_id, clean_session=False, on_connected=self._on_connected,
                          timeout_s=timeout_s)
        if not self._subscribed.wait(timeout_s) or self._sub_refused:
            client.disconnect()
            client.loop_stop()
            why = (f"refused the subscription to {status_topic(self.fleet)}: {self._sub_refused[0]} "
                   "(check the ACL)" if self._sub_refused else "did not confirm the subscriptions")
            raise TelemetryError(f"broker {self.broker.url} {why}")
        self._client = client
        return self

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def run(self, stop: threading.Event | None = None, once: bool = False,
            timeout_s: float | None = None) -> DispatchStats:
        """Dispatch until ``stop`` is set (or, with ``once``, until the queue is empty and every job
        has a result; ``timeout_s`` bounds that).  Jobs still outstanding when it returns stay
        claimed in the queue; the next run's ``recover()`` puts them back."""
        stop = stop or threading.Event()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._queue_lock():
            return self._run(stop, once, deadline)

    @contextmanager
    def _queue_lock(self):
        """Hold the queue's serve lock: a local `edgert eval serve` (or a second dispatcher) would
        recover() -- re-queue -- the jobs our workers are running."""
        root = getattr(self.queue, "root", None)
        if root is None:       # a stand-in queue without a folder
            yield
            return
        from edgert.eval.queue import _server_lock   # the one implementation of that lock

        with _server_lock(Path(root)):
            yield

    def _run(self, stop: threading.Event, once: bool, deadline: float | None) -> DispatchStats:
        own_client = self._client is None
        self.start()                 # first: a broker that is down changes nothing in the queue
        try:
            self.queue.recover()
            # the retained worker states arrive right after SUBACK: let them in before the first fill
            settle = time.monotonic() + 0.3
            while time.monotonic() < settle and not stop.is_set():
                self._drain(0.05)
            while not stop.is_set():
                more = self.fill()
                if once and not more and not self.outstanding:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    self.stats.timed_out = bool(self.outstanding) or more
                    break
                self._drain(TICK_S)
                self.check_leases()
        finally:
            # claimed but never sent to anyone: back to queued as if never started
            for out in list(self.outstanding.values()):
                if out.worker is None and out.published_at is None and out.attempt == 1:
                    self.queue.release(out.job.id)
                    del self.outstanding[out.job.id]
            if own_client:
                self.stop()
        return self.stats

    def _drain(self, wait_s: float) -> None:
        try:
            topic, payload = self._events.get(timeout=wait_s)
        except queue_mod.Empty:
            return
        self.handle(topic, payload)
        while True:
            try:
                topic, payload = self._events.get_nowait()
            except queue_mod.Empty:
                return
            self.handle(topic, payload)


__all__ = ["FleetDispatcher", "FleetWorker", "DispatchStats", "WorkerStats", "JobMessage", "MalformedMessage",
           "encode", "jobs_topic", "jobs_subscription", "status_topic", "worker_topic", "serve_directory",
           "fetch_submission", "parse_job", "parse_status", "parse_worker_state",
           "WorkerState"]
