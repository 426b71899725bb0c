"""Fleet mode (edgert/eval/fleet.py) against a real Mosquitto: shared-subscription dispatch, a worker
killed mid-job (its Last Will re-queues the job), sha256 checks, malformed payloads, the CLI.

Submissions are tiny dummy files and the runner is a stand-in with run_isolated's signature, so no
child process is involved; every wait is bounded and everything is on loopback.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edgert.eval.fleet import (FleetDispatcher, FleetWorker, JobMessage, MalformedMessage, encode, parse_job,
                               status_topic, worker_topic)
from edgert.eval.queue import EvalQueue, QueueOptions
from edgert.eval.types import EvalOptions, Limits, Verdict
from edgert.telemetry.mqtt import BrokerOptions

REPO = Path(__file__).resolve().parents[2]
FLEET = "lpcv"
WAIT_S = 20.0        # bound on every wait for the fleet to finish


def _score_of(data: bytes) -> float:
    return int(data.split()[-1]) / 10.0


class StandIn:
    """A runner with run_isolated's signature: an ok verdict, a score from the file's content."""

    def __init__(self, sleep_s: float = 0.3) -> None:
        self.sleep_s = sleep_s
        self.calls: list[str] = []          # sha256-named submission files, in call order
        self._lock = threading.Lock()

    def __call__(self, req, limits=Limits(), workdir=None, argv=None):
        assert req.dataset.is_dir()
        with self._lock:
            self.calls.append(req.submission.name)
        time.sleep(self.sleep_s)
        value = _score_of(req.submission.read_bytes())
        return Verdict("ok", isolation=["stand-in"]), {
            "score": {"formula": "test", "value": value, "higher_is_better": True},
            "metrics": {"dice_mean": value}, "timing": {"mean_s": 0.01}}


def _queue(root: Path, n: int, tmp: Path) -> EvalQueue:
    q = EvalQueue(QueueOptions(root))
    for i in range(n):
        f = tmp / f"team{i}.onnx"
        f.write_bytes(f"dummy model {i + 1}".encode())
        q.submit(f, f"team{i}")
    return q


def _broker(mosquitto) -> BrokerOptions:
    return BrokerOptions(url=mosquitto.url)


def _dataset(tmp: Path, name: str = "uav-val") -> Path:
    d = tmp / "datasets" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


class Workers:
    """FleetWorkers in threads, stopped and joined at the end of the test."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, worker: FleetWorker) -> FleetWorker:
        def body():
            try:
                worker.run(self.stop)
            except BaseException as e:   # surfaced by close()
                self.errors.append(e)
        t = threading.Thread(target=body, daemon=True, name=f"worker-{worker.worker_id}")
        t.start()
        self.threads.append(t)
        return worker

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
            assert not t.is_alive(), f"{t.name} did not stop"
        assert not self.errors, self.errors


@pytest.fixture
def workers():
    w = Workers()
    yield w
    w.close()


def _wait_online(mosquitto, *ids: str, timeout_s: float = 10.0) -> None:
    """Until each worker's retained state says online (it has subscribed by then)."""
    from mqtt_broker import Probe

    with Probe(mosquitto.port, f"probe-{time.monotonic_ns()}") as p:
        p.subscribe(worker_topic(FLEET))
        online: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while not online >= set(ids):
            topic, payload = p.get(timeout_s=max(0.05, deadline - time.monotonic()))
            if json.loads(payload).get("state") == "online":
                online.add(topic.rsplit("/", 1)[1])


def _dispatch(mosquitto, queue, **kw) -> tuple[FleetDispatcher, threading.Thread, dict]:
    d = FleetDispatcher(_broker(mosquitto), FLEET, queue, EvalOptions(), Limits(),
                        lease_s=kw.pop("lease_s", 3.0), heartbeat_s=0.5, **kw)
    out: dict = {}

    def body():
        try:
            out["stats"] = d.run(once=True, timeout_s=WAIT_S)
        except BaseException as e:
            out["error"] = e
    t = threading.Thread(target=body, daemon=True, name="dispatcher")
    t.start()
    return d, t, out


def _join(t: threading.Thread, out: dict):
    t.join(WAIT_S + 5)
    assert not t.is_alive(), "the dispatcher did not return"
    assert "error" not in out, out.get("error")
    assert not out["stats"].timed_out, out["stats"]
    return out["stats"]


# ------------------------------------------------------------------------------------------ the fleet
def test_two_workers_share_six_jobs(mosquitto, tmp_path, workers):
    q = _queue(tmp_path / "queue", 6, tmp_path)
    runners = {wid: StandIn(0.3) for wid in ("w1", "w2")}
    fleet = [workers.start(FleetWorker(_broker(mosquitto), FLEET, wid, _dataset(tmp_path / wid),
                                       tmp_path / wid / "cache", runner=runners[wid], heartbeat_s=0.2))
             for wid in runners]
    _wait_online(mosquitto, "w1", "w2")
    finishes: list[int] = []
    real_finish = q.finish
    q.finish = lambda job_id, verdict, result: (finishes.append(job_id), real_finish(job_id, verdict, result))

    d, t, out = _dispatch(mosquitto, q)
    stats = _join(t, out)

    assert sorted(finishes) == [1, 2, 3, 4, 5, 6]           # each job finished exactly once
    assert stats.finished == 6 and stats.requeued == 0 and stats.duplicates == 0
    ran = runners["w1"].calls + runners["w2"].calls
    assert len(ran) == 6 and len(set(ran)) == 6              # no job ran twice
    assert runners["w1"].calls and runners["w2"].calls      # the shared subscription spread them
    assert all(w.stats.jobs == len(runners[w.worker_id].calls) for w in fleet)
    assert all(j.status == "done" and j.verdict == "ok" for j in q.jobs())
    board = q.leaderboard()
    assert [r["entrant"] for r in board] == [f"team{i}" for i in range(5, -1, -1)]
    assert [r["score"]["value"] for r in board] == [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert all(r["submissions"] == 1 for r in board)


_DOOMED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edgert.eval.fleet import FleetWorker
    from edgert.telemetry.mqtt import BrokerOptions

    url, fleet, dataset, cache, marker = sys.argv[1:]

    def runner(req, limits):
        Path(marker).write_text(req.submission.name)
        time.sleep(60)          # busy until SIGKILLed

    FleetWorker(BrokerOptions(url=url), fleet, "doomed", Path(dataset), Path(cache), runner=runner,
                heartbeat_s=0.5).run()
""")


def test_worker_killed_mid_job_is_requeued_to_another(mosquitto, tmp_path, workers):
    q = _queue(tmp_path / "queue", 1, tmp_path)
    script = tmp_path / "doomed.py"
    script.write_text(_DOOMED)
    marker = tmp_path / "doomed-started"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(script), mosquitto.url, FLEET, str(_dataset(tmp_path / "d")),
                             str(tmp_path / "d" / "cache"), str(marker)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_online(mosquitto, "doomed")
        # a lease far longer than the test: only the Last Will can get the job back in time
        d, t, out = _dispatch(mosquitto, q, lease_s=60.0)
        deadline = time.monotonic() + 10
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the doomed worker never started the job"
            time.sleep(0.02)
        survivor_runner = StandIn(0.1)
        survivor = workers.start(FleetWorker(_broker(mosquitto), FLEET, "survivor", _dataset(tmp_path / "s"),
                                             tmp_path / "s" / "cache", runner=survivor_runner, heartbeat_s=0.2))
        _wait_online(mosquitto, "survivor")
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stats = _join(t, out)
        assert time.monotonic() - killed_at < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()

    assert stats.requeued == 1 and stats.finished == 1
    assert survivor.stats.results == [(1, 2, "ok")]          # attempt 2, on the survivor
    assert len(survivor_runner.calls) == 1
    job = q.job(1)
    assert job.status == "done" and job.verdict == "ok"
    board = q.leaderboard()
    assert len(board) == 1 and board[0]["submissions"] == 1 and board[0]["score"]["value"] == 0.1
    record = json.loads((tmp_path / "queue" / "results" / "1" / "result.json").read_text())
    assert record["verdict"]["status"] == "ok"


def test_sha256_mismatch_is_invalid(mosquitto, tmp_path, workers):
    q = _queue(tmp_path / "queue", 1, tmp_path)
    stored = q.job(1).path
    os.chmod(stored, 0o644)
    stored.write_bytes(b"dummy model 9")                     # changed after submission
    runner = StandIn(0.0)
    workers.start(FleetWorker(_broker(mosquitto), FLEET, "w1", _dataset(tmp_path), tmp_path / "cache",
                              runner=runner, heartbeat_s=0.2))
    _wait_online(mosquitto, "w1")
    _, t, out = _dispatch(mosquitto, q)
    _join(t, out)
    job = q.job(1)
    assert job.verdict == "invalid" and "sha256 mismatch" in job.reason
    assert runner.calls == []                                # never evaluated
    assert not list((tmp_path / "cache").glob("*.onnx"))     # nor kept in the cache
    assert q.leaderboard()[0]["rank"] is None


def test_garbage_on_the_topics_is_counted_not_fatal(mosquitto, tmp_path, workers):
    from mqtt_broker import Probe

    q = _queue(tmp_path / "queue", 2, tmp_path)
    w = workers.start(FleetWorker(_broker(mosquitto), FLEET, "w1", _dataset(tmp_path), tmp_path / "cache",
                                  runner=StandIn(0.1), heartbeat_s=0.2))
    _wait_online(mosquitto, "w1")
    with Probe(mosquitto.port, "vandal") as p:
        for payload in (b"\xff\xfe", b"[1,2]", b'{"v":1}', b'{"v":2,"job_id":1,"attempt":1}'):
            p.publish(f"edgert/v1/{FLEET}/eval/jobs", payload)
        # a job with ids but bad fields is answered as invalid, not run
        p.publish(f"edgert/v1/{FLEET}/eval/jobs", encode({"v": 1, "job_id": 99, "attempt": 1, "kind": "exe"}))
        d, t, out = _dispatch(mosquitto, q)
        time.sleep(0.5)
        for payload in (b"not json", b'{"v":1,"type":"result","worker":"someone-else","job_id":1,"attempt":1}',
                        b'{"v":1,"type":"result","worker":"w1","job_id":1,"attempt":1,"verdict":{"status":"?"}}'):
            p.publish(status_topic(FLEET, "w1"), payload)
        p.publish(worker_topic(FLEET, "ghost"), b'{"v":1,"state":"sleeping"}')
        stats = _join(t, out)
    assert stats.finished == 2 and stats.malformed >= 4
    assert w.stats.malformed >= 4
    assert all(j.verdict == "ok" for j in q.jobs())


# ------------------------------------------------------------------------------ no broker needed
class _FakeQueue:
    def __init__(self, jobs) -> None:
        self._jobs = list(jobs)
        self.finished: dict[int, Verdict] = {}

    def recover(self) -> int:
        return 0

    def claim(self):
        return self._jobs.pop(0) if self._jobs else None

    def finish(self, job_id, verdict, result) -> None:
        self.finished.setdefault(job_id, verdict)

    def release(self, job_id) -> None:
        pass


class _Job:
    def __init__(self, job_id: int, path: Path) -> None:
        self.id, self.path, self.kind, self.sha256 = job_id, path, "onnx", "ab" * 32


def _status(kind: str, worker: str, job_id: int, attempt: int, **extra) -> tuple[str, bytes]:
    return status_topic(FLEET, worker), encode({"v": 1, "type": kind, "worker": worker, "job_id": job_id,
                                                "attempt": attempt, **extra})


def _offline_dispatcher(q, now: list[float], options: EvalOptions = EvalOptions()):
    """A dispatcher with no broker: a fake clock (`now[0]`) and the jobs it publishes, in `sent`."""
    d = FleetDispatcher(BrokerOptions(), FLEET, q, options, lease_s=10.0, heartbeat_s=1.0, clock=lambda: now[0])
    sent: list[dict] = []
    d._publish = lambda topic, payload: sent.append(json.loads(payload))
    return d, sent


def test_silent_worker_loses_its_lease_and_three_losses_are_crashed(tmp_path):
    now = [0.0]
    q = _FakeQueue([_Job(1, tmp_path / "a.onnx")])
    d, sent = _offline_dispatcher(q, now)
    d.handle(worker_topic(FLEET, "w1"), b'{"v":1,"state":"online","dataset":""}')
    for attempt in (1, 2, 3):
        d.fill()
        assert [m["attempt"] for m in sent] == list(range(1, attempt + 1))
        d.handle(*_status("accepted", "w1", 1, attempt))
        now[0] += 6
        d.handle(*_status("heartbeat", "w1", 1, attempt))      # renews the lease
        now[0] += 9
        d.check_leases()
        assert 1 in d.outstanding or attempt == 3
        now[0] += 2
        d.check_leases()                                       # 11 s silent: lost
    assert q.finished[1].status == "crashed" and "worker died 3 times" in q.finished[1].reason
    assert d.stats.requeued == 2 and not d.outstanding
    d.handle(*_status("result", "w1", 1, 1, verdict={"status": "ok"}, result=None))
    assert d.stats.duplicates == 1 and q.finished[1].status == "crashed"


def test_unaccepted_job_is_republished_and_declined_job_resent(tmp_path):
    now = [0.0]
    q = _FakeQueue([_Job(1, tmp_path / "a.onnx")])
    d, sent = _offline_dispatcher(q, now)
    d.fill()
    assert sent == []                                          # nobody online: nothing published
    d.handle(worker_topic(FLEET, "w1"), b"online")
    d.fill()
    assert len(sent) == 1
    now[0] += 11
    d.check_leases()
    d.fill()
    assert len(sent) == 2 and sent[1]["attempt"] == 1          # dropped, not lost: same attempt again
    d.handle(*_status("declined", "w1", 1, 1, reason="busy"))
    d.fill()
    assert len(sent) == 2                                      # held back a moment after a decline
    now[0] += 1
    d.fill()
    assert len(sent) == 3
    d.handle(*_status("result", "w1", 1, 1, verdict={"status": "ok", "future_field": 1}, result={"x": 1}))
    assert q.finished[1].status == "ok" and d.stats.finished == 1


def test_worker_takes_one_job_and_declines_the_rest(tmp_path):
    class Client:
        def __init__(self):
            self.published, self.subs = [], []

        def publish(self, topic, payload, qos=0, retain=False):
            self.published.append(json.loads(payload))

        def subscribe(self, topic, qos=0):
            self.subs.append(("sub", topic))

        def unsubscribe(self, topic):
            self.subs.append(("unsub", topic))

    w = FleetWorker(BrokerOptions(), FLEET, "w1", tmp_path, tmp_path / "cache", runner=StandIn(0))
    w._accepting = True
    c = Client()
    job = JobMessage(1, 1, "/x.onnx", "ab" * 32, "onnx", EvalOptions(size=(64, 64)), Limits())
    assert parse_job(encode(job.to_json())) == job
    w._take(c, encode(job.to_json()))
    w._take(c, encode({**job.to_json(), "job_id": 2}))
    assert [(m["type"], m["job_id"]) for m in c.published] == [("accepted", 1), ("declined", 2)]
    assert c.subs == [("unsub", f"$share/edgert-eval/edgert/v1/{FLEET}/eval/jobs")]
    assert w._handoff.get_nowait() == job and w._handoff.empty()
    with pytest.raises(MalformedMessage):
        parse_job(encode({**job.to_json(), "options": {"nope": 1}}))


# -------------------------------------------------------------------- energy scores need a sensor
class _RecordingClient:
    def __init__(self):
        self.published = []

    def publish(self, topic, payload, qos=0, retain=False):
        self.published.append(json.loads(payload))

    def subscribe(self, topic, qos=0):
        pass

    def unsubscribe(self, topic):
        pass


def _energy_job(job_id: int, score: str = "accuracy_per_joule") -> JobMessage:
    return JobMessage(job_id, 1, "/x.onnx", "ab" * 32, "onnx", EvalOptions(score=score), Limits())


def test_worker_without_a_power_sensor_declines_energy_jobs_only(tmp_path):
    """No sensor (an empty tree: only the utilisation estimate) -> says energy false, declines an
    accuracy_per_joule job as "no power sensor" (not the submission's fault), takes an lpcvc2023 one."""
    from edgert.eval.fleet import parse_worker_state

    empty = tmp_path / "root"
    empty.mkdir()
    w = FleetWorker(BrokerOptions(), FLEET, "w1", tmp_path, tmp_path / "cache", runner=StandIn(0),
                    sensor_root=empty)
    assert w.has_energy is False
    assert parse_worker_state(w._state_payload(True)).energy is False
    w._accepting = True
    c = _RecordingClient()
    w._take(c, encode(_energy_job(1).to_json()))
    w._take(c, encode(_energy_job(2, "lpcvc2023").to_json()))
    assert [(m["type"], m["job_id"], m.get("reason")) for m in c.published] == \
        [("declined", 1, "no power sensor"), ("accepted", 2, None)]
    assert w._handoff.get_nowait().job_id == 2 and w.stats.declined == 1


def test_worker_with_a_power_sensor_takes_energy_jobs(tmp_path):
    from device_trees import build_pi4_ina260
    from edgert.eval.fleet import parse_worker_state

    root = build_pi4_ina260(tmp_path / "pi4", power_uw=2_000_000)
    runner = StandIn(0)
    w = FleetWorker(BrokerOptions(), FLEET, "w1", tmp_path, tmp_path / "cache", runner=runner, sensor_root=root)
    assert w.has_energy is True
    state = parse_worker_state(w._state_payload(True))
    assert state.online and state.energy and state.dataset == tmp_path.name
    w._accepting = True
    c = _RecordingClient()
    w._take(c, encode(_energy_job(1).to_json()))
    assert [(m["type"], m["job_id"]) for m in c.published] == [("accepted", 1)]


def test_worker_state_energy_field_is_checked():
    from edgert.eval.fleet import parse_worker_state

    assert parse_worker_state(b"online").energy is False                  # an older worker: no claim
    assert parse_worker_state(b'{"v":1,"state":"online","energy":true}').energy is True
    with pytest.raises(MalformedMessage, match="energy must be true or false"):
        parse_worker_state(b'{"v":1,"state":"online","energy":"yes"}')


def test_dispatcher_sends_energy_jobs_only_to_workers_with_a_sensor(tmp_path):
    now = [0.0]
    q = _FakeQueue([_Job(1, tmp_path / "a.onnx")])
    d, sent = _offline_dispatcher(q, now, EvalOptions(score="accuracy_per_joule"))
    d.handle(worker_topic(FLEET, "plain"), b'{"v":1,"state":"online","dataset":"","energy":false}')
    d.fill()
    assert sent == []                                   # nobody who can measure J/image: it waits
    d.handle(worker_topic(FLEET, "metered"), b'{"v":1,"state":"online","dataset":"","energy":true}')
    d.fill()
    assert len(sent) == 1 and sent[0]["options"]["score"] == "accuracy_per_joule"
    plain, plain_sent = _offline_dispatcher(_FakeQueue([_Job(1, tmp_path / "a.onnx")]), now)
    plain.handle(worker_topic(FLEET, "plain"), b'{"v":1,"state":"online","dataset":"","energy":false}')
    plain.fill()
    assert len(plain_sent) == 1                         # other scores go to any worker


# ------------------------------------------------------------------------------------------- CLI
def test_cli_dispatch_over_http_files(mosquitto, tmp_path, workers):
    from cli_helpers import invoke

    q = _queue(tmp_path / "queue", 2, tmp_path)
    runner = StandIn(0.1)
    workers.start(FleetWorker(_broker(mosquitto), FLEET, "w1", _dataset(tmp_path, "uav-val"),
                              tmp_path / "cache", runner=runner, heartbeat_s=0.2))
    _wait_online(mosquitto, "w1")
    res = invoke("eval", "dispatch", "--broker", mosquitto.url, "--fleet", FLEET, "--queue", tmp_path / "queue",
                 "--dataset-name", "uav-val", "--serve-files", "127.0.0.1:0", "--once", "--duration", WAIT_S,
                 "--lease", 3, "--heartbeat", 0.5, "--json")
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output.strip().splitlines()[-1])
    assert stats["finished"] == 2 and stats["timed_out"] is False
    assert [j.verdict for j in q.jobs()] == ["ok", "ok"]
    assert len(runner.calls) == 2 and len(list((tmp_path / "cache").glob("*.onnx"))) == 2


def test_cli_worker_broker_down_is_one_line(tmp_path):
    from cli_helpers import assert_one_line_error, invoke
    from mqtt_broker import free_port

    res = invoke("eval", "worker", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--fleet", FLEET,
                 "--worker-id", "w1", "--dataset", tmp_path, "--cache", tmp_path / "cache")
    # the banner goes to stderr first; the error is the last line
    assert res.exit_code == 2, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: cannot connect to broker"), res.output
    assert "Traceback" not in res.output
    res = invoke("eval", "dispatch", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--fleet", FLEET,
                 "--queue", tmp_path / "q", "--dataset-name", "x", "--once")
    assert_one_line_error(res, "cannot connect to broker")
