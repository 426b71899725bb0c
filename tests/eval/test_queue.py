"""The referee's queue: submit / claim / finish, the leaderboard, and a server SIGKILLed mid-job."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edgert.errors import EvalError
from edgert.eval.isolation import run_isolated
from edgert.eval.queue import EvalQueue, QueueOptions, serve
from edgert.eval.types import EvalOptions, Limits, Verdict


def ok_result(value: float, dice: float = 0.5, mean_s: float = 0.1, formula: str = "lpcvc2023",
              higher_is_better: bool = True) -> dict:
    return {"verdict": {"status": "ok", "reason": ""},
            "score": {"formula": formula, "value": value, "higher_is_better": higher_is_better},
            "metrics": {"dice_mean": dice}, "timing": {"mean_s": mean_s}}


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    out = {}
    for name in ("a.onnx", "b.pkg", "c.tflite", "d.onnx", "e.onnx", "f.onnx"):
        p = tmp_path / "in" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(name.encode() * 100)
        out[name] = p
    return out


@pytest.fixture
def queue(tmp_path) -> EvalQueue:
    return EvalQueue(QueueOptions(tmp_path / "queue"))


@pytest.fixture
def dataset(tmp_path) -> Path:
    d = tmp_path / "dataset"
    d.mkdir()
    return d


def test_submit_stores_by_content_and_claims_oldest_first(queue, files):
    ids = [queue.submit(files[n], "alice") for n in ("a.onnx", "b.pkg", "c.tflite")]
    again = queue.submit(files["a.onnx"], "bob", note="same bytes")
    assert ids == sorted(ids) and again > ids[-1]
    jobs = queue.jobs("queued")
    assert [j.kind for j in jobs] == ["onnx", "package", "tflite", "onnx"]
    assert jobs[0].sha256 == jobs[3].sha256 and jobs[0].path == jobs[3].path
    assert jobs[0].path.read_bytes() == files["a.onnx"].read_bytes()
    assert jobs[0].path.name == f"{jobs[0].sha256}.onnx"
    assert len(list((queue.root / "submissions").iterdir())) == 3     # one copy per content
    first = queue.claim()
    assert first.id == ids[0] and first.status == "running" and first.attempts == 1
    assert first.started_at is not None
    assert queue.claim().id == ids[1]
    assert [j.id for j in queue.jobs("running")] == ids[:2]
    assert [j.id for j in queue.jobs("queued")] == [ids[2], again]


def test_submit_rejects_what_it_cannot_queue(queue, tmp_path, files):
    weird = tmp_path / "model.pt"
    weird.write_bytes(b"x")
    with pytest.raises(EvalError, match="unknown submission type '.pt'"):
        queue.submit(weird, "alice")
    with pytest.raises(EvalError, match="not found"):
        queue.submit(tmp_path / "missing.onnx", "alice")
    with pytest.raises(EvalError, match="entrant"):
        queue.submit(files["a.onnx"], "   ")
    with pytest.raises(EvalError, match="unknown job status"):
        queue.jobs("lost")
    assert queue.jobs() == []


def test_leaderboard_best_per_entrant_and_failures_listed(queue, files):
    plan = [("a.onnx", "alice", Verdict("ok"), ok_result(2.0, dice=0.6, mean_s=0.3)),
            ("b.pkg", "bob", Verdict("ok"), ok_result(2.5, dice=0.5, mean_s=0.2)),
            ("c.tflite", "alice", Verdict("ok"), ok_result(3.0, dice=0.75, mean_s=0.25)),
            ("d.onnx", "carol", Verdict("invalid", "output has NaN"), {"verdict": {"status": "invalid"}}),
            ("e.onnx", "dave", Verdict("timeout", "no result within 900 s"), None),
            ("f.onnx", "bob", Verdict("crashed", "killed by SIGSEGV"), None)]
    for name, entrant, verdict, result in plan:
        queue.submit(files[name], entrant)
    for _, _, verdict, result in plan:
        job = queue.claim()
        queue.finish(job.id, verdict, result)
    board = queue.leaderboard()
    ranked = [r for r in board if r["rank"] is not None]
    assert [(r["rank"], r["entrant"], r["job_id"]) for r in ranked] == [(1, "alice", 3), (2, "bob", 2)]
    top = ranked[0]
    assert top["score"] == {"formula": "lpcvc2023", "value": 3.0, "higher_is_better": True}
    assert top["dice"] == 0.75 and top["ms_per_image"] == 250.0 and top["top1"] is None
    assert top["submissions"] == 2 and top["submitted_at"].endswith("Z")
    failed = [r for r in board if r["rank"] is None]
    assert [(r["entrant"], r["verdict"], r["reason"]) for r in failed] == [
        ("carol", "invalid", "output has NaN"), ("dave", "timeout", "no result within 900 s"),
        ("bob", "crashed", "killed by SIGSEGV")]
    record = json.loads((queue.root / "results" / "3" / "result.json").read_text())
    assert record["verdict"]["status"] == "ok" and record["job"]["entrant"] == "alice"
    assert record["score"]["value"] == 3.0


def test_lower_is_better_formula_and_ties_go_to_the_earlier(queue, files):
    for name, entrant in (("a.onnx", "x"), ("b.pkg", "y"), ("c.tflite", "z")):
        queue.submit(files[name], entrant)
    for value in (5.0, 2.0, 5.0):
        queue.finish(queue.claim().id, Verdict("ok"), ok_result(value, formula="j_per_image",
                                                                 higher_is_better=False))
    assert [r["entrant"] for r in queue.leaderboard()] == ["y", "x", "z"]


def test_finish_is_idempotent(queue, files):
    job_id = queue.submit(files["a.onnx"], "alice")
    queue.claim()
    queue.finish(job_id, Verdict("ok"), ok_result(2.0))
    first = (queue.root / "results" / str(job_id) / "result.json").read_text()
    queue.finish(job_id, Verdict("ok"), ok_result(9.0))          # a duplicate report of the same job
    queue.finish(job_id, Verdict("crashed", "late"), None)
    assert (queue.root / "results" / str(job_id) / "result.json").read_text() == first
    job = queue.job(job_id)
    assert (job.status, job.verdict, job.score) == ("done", "ok", 2.0)
    assert len(queue.leaderboard()) == 1
    with pytest.raises(EvalError, match="no job #99"):
        queue.finish(99, Verdict("ok"), None)


def test_recover_requeues_then_gives_up_after_max_attempts(queue, files):
    job_id = queue.submit(files["a.onnx"], "alice")
    for attempt in (1, 2):
        assert queue.claim().attempts == attempt
        assert queue.recover() == 1                 # the "server" died; the job is queued again
        assert queue.job(job_id).status == "queued"
    assert queue.claim().attempts == 3
    assert queue.recover() == 0
    job = queue.job(job_id)
    assert (job.status, job.verdict, job.reason) == ("done", "crashed", "server died 3 times during this job")
    assert queue.claim() is None


def test_serve_once_runs_everything_in_order(queue, files, dataset):
    for name in ("a.onnx", "b.pkg"):
        queue.submit(files[name], name[0])
    seen, reported = [], []

    def runner(req, limits):
        seen.append(req.submission.name)
        assert req.dataset == dataset and req.report_dir.parent.parent.name == "results"
        return Verdict("ok"), ok_result(1.0 + len(seen))

    n = serve(queue, dataset, EvalOptions(), Limits(), once=True, poll_s=0.01, runner=runner,
              on_job=lambda job, v, r: reported.append((job.id, job.status, v.status)))
    assert n == 2
    assert seen == [j.path.name for j in queue.jobs()]
    assert reported == [(1, "done", "ok"), (2, "done", "ok")]
    assert serve(queue, dataset, EvalOptions(), Limits(), once=True, runner=runner) == 0


def test_serve_requeues_on_harness_errors_and_rules_on_tampered_files(queue, files, dataset):
    job_id = queue.submit(files["a.onnx"], "alice")

    def broken(req, limits):
        raise EvalError("cannot write to the work folder")

    with pytest.raises(EvalError, match="work folder"):
        serve(queue, dataset, EvalOptions(), Limits(), once=True, runner=broken)
    job = queue.job(job_id)
    assert (job.status, job.attempts) == ("queued", 0)      # not the submission's fault: not consumed
    job.path.chmod(0o644)
    job.path.write_bytes(b"swapped after submission")
    assert serve(queue, dataset, EvalOptions(), Limits(), once=True, runner=broken) == 1
    job = queue.job(job_id)
    assert job.verdict == "invalid" and "does not match its sha256" in job.reason


def test_stop_interrupts_a_running_job_and_requeues_it(queue, files, dataset):
    job_id = queue.submit(files["a.onnx"], "alice")
    stop = threading.Event()

    def slow(req, limits, stop=None):
        threading.Timer(0.2, stop.set).start()
        stop.wait(10)
        raise EvalError("evaluation interrupted: stop requested")

    assert serve(queue, dataset, EvalOptions(), Limits(), stop=stop, poll_s=0.01, runner=slow) == 0
    assert queue.job(job_id).status == "queued"


def test_one_server_per_queue(queue, files, dataset):
    queue.submit(files["a.onnx"], "alice")
    started, release = threading.Event(), threading.Event()

    def blocking(req, limits):
        started.set()
        release.wait(10)
        return Verdict("ok"), ok_result(1.0)

    t = threading.Thread(target=serve, args=(queue, dataset, EvalOptions(), Limits()),
                         kwargs={"once": True, "runner": blocking})
    t.start()
    try:
        assert started.wait(10)
        with pytest.raises(EvalError, match="already serving"):
            serve(EvalQueue(QueueOptions(queue.root)), dataset, EvalOptions(), Limits(), once=True)
        assert queue.jobs()[0].status == "running"   # the second server did not re-queue it
    finally:
        release.set()
        t.join(10)
    assert queue.jobs()[0].status == "done"


# ------------------------------------------------------------------ SIGKILL the server mid-job
SLOW_CHILD = """
import json, os, sys, time
req = json.load(open(sys.argv[1]))
with open(RUNS, "a") as f:
    f.write(f"{os.getpid()}\\n")
time.sleep(1.5)
tmp = req["result_path"] + ".tmp"
with open(tmp, "w") as f:
    json.dump({"verdict": {"status": "ok", "reason": ""}, "metrics": {"dice_mean": 0.5},
               "timing": {"mean_s": 0.1}, "score": {"formula": "lpcvc2023", "value": 5.0}}, f)
os.replace(tmp, req["result_path"])
"""

DRIVER = """
import functools, sys
from pathlib import Path
from edgert.eval.isolation import run_isolated
from edgert.eval.queue import EvalQueue, QueueOptions, serve
from edgert.eval.types import EvalOptions, Limits
root, dataset, child = map(Path, sys.argv[1:4])
runner = functools.partial(run_isolated, argv=[sys.executable, str(child)])
serve(EvalQueue(QueueOptions(root)), dataset, EvalOptions(), Limits(timeout_s=30), once=True, poll_s=0.05,
      runner=runner)
"""


def _gone(pid: int, within_s: float = 3.0) -> bool:
    until = time.monotonic() + within_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X") or time.monotonic() > until:
            return state in ("Z", "X")
        time.sleep(0.05)


def test_server_killed_mid_run_reruns_the_job_exactly_once(tmp_path, queue, files, dataset):
    runs = tmp_path / "runs.log"
    child = tmp_path / "slow_child.py"
    child.write_text(textwrap.dedent(SLOW_CHILD).replace("RUNS", repr(str(runs))))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    job_id = queue.submit(files["a.onnx"], "alice")

    with open(tmp_path / "driver.err", "wb") as err:
        server = subprocess.Popen([sys.executable, str(driver), str(queue.root), str(dataset), str(child)],
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 15
        while not (runs.exists() and runs.read_text().count("\n") == 1):
            assert server.poll() is None, (tmp_path / "driver.err").read_text()
            assert time.monotonic() < deadline, "the server never started the job"
            time.sleep(0.02)
        assert queue.job(job_id).status == "running"
    finally:
        server.kill()                                 # SIGKILL: no cleanup of any kind
        server.wait(10)
    first_child = int(runs.read_text().split()[0])
    assert _gone(first_child)                         # parent-death signal: no orphan left evaluating
    job = queue.job(job_id)
    assert (job.status, job.attempts) == ("running", 1)          # not lost, not finished
    assert not (queue.root / "results" / str(job_id) / "result.json").exists()

    runner = functools.partial(run_isolated, argv=[sys.executable, str(child)])
    assert serve(queue, dataset, EvalOptions(), Limits(timeout_s=30), once=True, poll_s=0.05, runner=runner) == 1
    assert runs.read_text().count("\n") == 2                     # re-run exactly once
    job = queue.job(job_id)
    assert (job.status, job.verdict, job.attempts, job.score) == ("done", "ok", 2, 5.0)
    board = queue.leaderboard()
    assert [(r["rank"], r["entrant"], r["job_id"]) for r in board] == [(1, "alice", job_id)]
    record = json.loads((queue.root / "results" / str(job_id) / "result.json").read_text())
    assert record["job"]["attempts"] == 2 and record["verdict"]["status"] == "ok"
    # a restart with nothing left to do runs nothing again
    assert serve(queue, dataset, EvalOptions(), Limits(timeout_s=30), once=True, runner=runner) == 0
    assert runs.read_text().count("\n") == 2
