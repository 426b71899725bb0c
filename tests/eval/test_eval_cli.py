"""`edgert eval …` from the command line, with real isolation: ok, timeout, out of memory, invalid,
the queue (submit / serve / leaderboard) and a referee killed mid-run."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from cli_helpers import assert_one_line_error, invoke
from edgert.eval.synthetic import write_synthetic_segmentation
from eval_models import color_segmenter, hanging_model, hungry_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_segmentation(tmp_path_factory.mktemp("d") / "data", 4, size=64, seed=2)


def test_eval_json_and_report(data, tmp_path):
    model = color_segmenter(tmp_path / "m.onnx")
    res = invoke("eval", model, "--dataset", data, "--json", "--report", tmp_path / "rep", "--warmup", "1")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)
    assert rec["verdict"]["status"] == "ok" and rec["score"]["formula"] == "lpcvc2023"
    assert rec["timed_region"] == "end-to-end" and rec["warmup"] == 1
    for name in ("result.json", "report.md", "report.html", "latency_hist.png", "per_class_dice.png"):
        assert (tmp_path / "rep" / name).is_file(), name
    md = (tmp_path / "rep" / "report.md").read_text()
    assert rec["submission"]["sha256"][:12] in md and "end-to-end" in md
    # human output: one summary line
    res = invoke("eval", model, "--dataset", data, "--timed-region", "inference", "--no-isolation")
    assert res.exit_code == 0 and "Dice" in res.output and "inference" in res.output


def test_hanging_submission_times_out(data, tmp_path):
    t0 = time.monotonic()
    res = invoke("eval", hanging_model(tmp_path / "hang.onnx"), "--dataset", data, "--timeout", "4")
    assert_one_line_error(res, "verdict timeout")
    assert time.monotonic() - t0 < 20


def test_unbounded_allocation_crashes_cleanly(data, tmp_path):
    res = invoke("eval", hungry_model(tmp_path / "big.onnx"), "--dataset", data, "--memory-mb", "2048")
    assert_one_line_error(res, "verdict crashed", "out of memory")


def test_corrupt_package_is_invalid(data, tmp_path):
    bad = tmp_path / "bad.pkg"
    bad.write_bytes(b"not a package at all" * 10)
    assert_one_line_error(invoke("eval", bad, "--dataset", data), "verdict invalid")
    assert_one_line_error(invoke("eval", tmp_path / "nope.pkg", "--dataset", data), "not found")
    assert_one_line_error(invoke("eval", bad, "--dataset", tmp_path / "nodata", "--no-isolation"))


def test_submit_serve_leaderboard(data, tmp_path):
    q = tmp_path / "q"
    good_a = color_segmenter(tmp_path / "a.onnx", seed=1)
    good_b = color_segmenter(tmp_path / "b.onnx", seed=2)
    assert invoke("eval", "submit", good_a, "--queue", q, "--entrant", "team-a", "--dataset", data).exit_code == 0
    assert invoke("eval", "submit", good_b, "--queue", q, "--entrant", "team-b").exit_code == 0
    bad = tmp_path / "bad.pkg"
    bad.write_bytes(b"junk" * 50)
    assert_one_line_error(invoke("eval", "submit", bad, "--queue", q, "--entrant", "team-c"))   # caught locally
    from edgert.eval.queue import EvalQueue, QueueOptions
    EvalQueue(QueueOptions(q)).submit(bad, "team-c")             # ... unless it skips the local check
    res = invoke("eval", "serve", "--queue", q, "--dataset", data, "--once", "--warmup", "0")
    assert res.exit_code == 0, res.output
    board = json.loads(invoke("eval", "leaderboard", "--queue", q, "--json").output)
    text = json.dumps(board)
    assert "team-a" in text and "team-b" in text and "invalid" in text
    res = invoke("eval", "leaderboard", "--queue", q)
    assert res.exit_code == 0 and "team-a" in res.output


def test_serve_killed_mid_run_reruns_the_job_once(data, tmp_path):
    q = tmp_path / "q"
    from edgert.eval.queue import EvalQueue, QueueOptions
    queue = EvalQueue(QueueOptions(q))
    job = queue.submit(hanging_model(tmp_path / "hang.onnx"), "slowpoke")
    cmd = [sys.executable, "-m", "edgert", "eval", "serve", "--queue", str(q), "--dataset", str(data),
           "--timeout", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    end = time.monotonic() + 30
    while time.monotonic() < end and not any(j.status == "running" for j in queue.jobs()):
        time.sleep(0.1)
    assert any(j.status == "running" for j in queue.jobs())
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)           # the referee dies mid-evaluation
    proc.wait(10)
    assert [j.status for j in queue.jobs()] == ["running"]
    res = invoke("eval", "serve", "--queue", q, "--dataset", data, "--once", "--timeout", "3")
    assert res.exit_code == 0, res.output
    jobs = queue.jobs()
    assert len(jobs) == 1 and jobs[0].id == job and jobs[0].status == "done" and jobs[0].verdict == "timeout"
    assert jobs[0].attempts == 2               # re-run once after the kill, never lost, never doubled
    board = queue.leaderboard()
    assert sum(1 for r in board if r.get("job_id") == job) <= 1
