"""run_isolated against stand-in children (small scripts, no edgert, no numpy) that misbehave on purpose.

Each stand-in gets the request path as argv[1], like ``python -m edgert.eval.child``; they write their
result the way child.py does (temp file + rename).  Namespace checks skip where the OS refuses them.
"""
from __future__ import annotations

import json
import signal
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edgert.errors import EvalError
from edgert.eval.isolation import EvalRequest, isolation_available, run_isolated
from edgert.eval.types import Limits

PRELUDE = """
import json, os, sys
req = json.load(open(sys.argv[1]))
def write(rec):
    tmp = req["result_path"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f)
    os.replace(tmp, req["result_path"])
OK = {"verdict": {"status": "ok", "reason": ""}, "score": {"formula": "lpcvc2023", "value": 2.5},
      "metrics": {"dice_mean": 0.5}, "timing": {"mean_s": 0.2}, "submission": {"sha256": "0" * 64}}
"""

OK_CHILD = """
import resource
OK["limits"] = {"as": resource.getrlimit(resource.RLIMIT_AS)[0],
                "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                "core": resource.getrlimit(resource.RLIMIT_CORE)[0]}
OK["fds"] = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
write(OK)
"""

INVALID_CHILD = """
write({"verdict": {"status": "invalid", "reason": "output 0 has shape (1, 3) where (1, 14, 512, 512) was expected"}})
sys.exit(3)
"""

# ignores SIGTERM (so the SIGKILL escalation is exercised) and leaves a grandchild in its group
HANG_CHILD = """
import signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
with open("pids", "w") as f:
    f.write(f"{os.getpid()} {kid.pid}")
while True:
    time.sleep(1)
"""

OOM_CHILD = """
b = []
while True:
    b.append(bytearray(50_000_000))
"""

EXIT1_CHILD = """
for i in range(40):
    print(f"progress line {i}", file=sys.stderr)
print("RuntimeError: the backend exploded", file=sys.stderr)
sys.exit(1)
"""

SEGV_CHILD = """
import signal
print("about to crash", file=sys.stderr, flush=True)
os.kill(os.getpid(), signal.SIGSEGV)
"""

MALFORMED_CHILD = """
with open(req["result_path"], "w") as f:
    f.write('{"verdict": {"status": "ok"')
"""

NO_VERDICT_CHILD = """
write({"score": {"value": 1e9}})
"""

NET_CHILD = """
import socket
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
    OK["net"] = "connected"
except OSError as e:
    OK["net"] = f"failed: {e}"
write(OK)
"""

WRITE_DATASET_CHILD = """
try:
    with open(os.path.join(req["dataset"], "planted.txt"), "w") as f:
        f.write("x")
    OK["write"] = "written"
except OSError as e:
    OK["write"] = f"failed: {e}"
write(OK)
"""


def stand_in(tmp_path: Path, body: str, **subs) -> list[str]:
    text = PRELUDE + textwrap.dedent(body)
    for k, v in subs.items():
        text = text.replace(k, str(v))
    path = tmp_path / "child.py"
    path.write_text(text)
    return [sys.executable, str(path)]


@pytest.fixture
def req(tmp_path) -> EvalRequest:
    sub = tmp_path / "model.onnx"
    sub.write_bytes(b"not really onnx")
    ds = tmp_path / "dataset"
    (ds / "images").mkdir(parents=True)
    (ds / "images" / "0.png").write_bytes(b"png")
    return EvalRequest(sub, ds)


def gone(pid: int, within_s: float = 2.0) -> bool:
    """The process no longer runs (absent, or a zombie waiting for init to reap it)."""
    until = time.monotonic() + within_s
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        if time.monotonic() > until:
            return False
        time.sleep(0.05)


def live_in_group(pgid: int) -> list[int]:
    """Pids of running (not zombie) processes in process group ``pgid``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                out.append(int(d.name))
    return out


def test_ok_result_and_limits_applied(tmp_path, req):
    limits = Limits(timeout_s=20, address_space_mb=1024, cpu_time_s=30, open_files=64)
    verdict, rec = run_isolated(req, limits, workdir=tmp_path / "work", argv=stand_in(tmp_path, OK_CHILD))
    assert verdict.status == "ok", verdict
    assert verdict.exit_code == 0
    assert rec["score"]["value"] == 2.5
    assert rec["limits"] == {"as": 1024 << 20, "cpu": 30, "nofile": 64, "core": 0}
    assert {"rlimit-as=1024MB", "rlimit-cpu=30s", "rlimit-nofile=64", "rlimit-core=0"} <= set(verdict.isolation)
    assert 9 not in rec["fds"]            # the wrapper's status pipe does not reach the child
    avail = isolation_available()
    assert ("netns" in verdict.isolation) == avail["netns"]
    assert ("ro-dataset" in verdict.isolation) == avail["ro_dataset"]
    # the request is a file with the child contract's keys
    request = json.loads((tmp_path / "work" / "request.json").read_text())
    assert set(request) == {"submission", "dataset", "options", "report_dir", "result_path", "sensor_root"}
    assert request["sensor_root"] == "/"
    assert request["options"]["task"] == "segmentation"


def test_invalid_exit_3_with_result(tmp_path, req):
    verdict, rec = run_isolated(req, Limits(timeout_s=20), argv=stand_in(tmp_path, INVALID_CHILD))
    assert verdict.status == "invalid"
    assert verdict.exit_code == 3
    assert "shape (1, 3)" in verdict.reason
    assert rec["verdict"]["status"] == "invalid"


def test_hang_times_out_and_the_whole_group_is_killed(tmp_path, req):
    work = tmp_path / "work"
    t0 = time.monotonic()
    verdict, rec = run_isolated(req, Limits(timeout_s=1.0), workdir=work, argv=stand_in(tmp_path, HANG_CHILD))
    elapsed = time.monotonic() - t0
    assert verdict.status == "timeout"
    assert verdict.reason == "no result within 1 s"
    assert rec is None
    assert elapsed < 1.0 + 2.0 + 2.0     # timeout + SIGTERM grace + slack
    child, grandchild = map(int, (work / "pids").read_text().split())
    assert gone(child) and gone(grandchild)
    assert live_in_group(child) == []


def test_unbounded_allocation_is_out_of_memory(tmp_path, req):
    verdict, rec = run_isolated(req, Limits(timeout_s=20, address_space_mb=512), argv=stand_in(tmp_path, OOM_CHILD))
    assert verdict.status == "crashed"
    assert verdict.reason.startswith("out of memory (address-space limit 512 MB)")
    assert "MemoryError" in verdict.reason
    assert rec is None


def test_exit_1_keeps_the_stderr_tail(tmp_path, req):
    verdict, rec = run_isolated(req, Limits(timeout_s=20), argv=stand_in(tmp_path, EXIT1_CHILD))
    assert verdict.status == "crashed"
    assert verdict.exit_code == 1
    assert verdict.reason.startswith("exit code 1: ")
    assert "RuntimeError: the backend exploded" in verdict.reason
    assert "\n" not in verdict.reason
    assert len(verdict.stderr_tail) == 20
    assert verdict.stderr_tail[-1] == "RuntimeError: the backend exploded"
    assert rec is None


def test_segfault_names_the_signal(tmp_path, req):
    verdict, rec = run_isolated(req, Limits(timeout_s=20), argv=stand_in(tmp_path, SEGV_CHILD))
    assert verdict.status == "crashed"
    assert verdict.exit_code == -signal.SIGSEGV
    assert "SIGSEGV" in verdict.reason and "about to crash" in verdict.reason
    assert rec is None


@pytest.mark.parametrize("body", [MALFORMED_CHILD, NO_VERDICT_CHILD], ids=["not-json", "no-verdict"])
def test_malformed_result_is_a_crash(tmp_path, req, body):
    verdict, rec = run_isolated(req, Limits(timeout_s=20), argv=stand_in(tmp_path, body))
    assert verdict.status == "crashed"
    assert verdict.reason.startswith("child wrote a malformed result")
    assert rec is None


def test_exit_0_without_a_result_is_a_crash(tmp_path, req):
    verdict, _ = run_isolated(req, Limits(timeout_s=20), argv=stand_in(tmp_path, "pass"))
    assert verdict.status == "crashed"
    assert "without writing a result" in verdict.reason


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    yield srv
    srv.close()


def test_no_network_inside_the_child(tmp_path, req, listener):
    if not isolation_available()["netns"]:
        pytest.skip("unshare -rn (user + network namespace) is not permitted on this machine")
    argv = stand_in(tmp_path, NET_CHILD, PORT=listener.getsockname()[1])
    verdict, rec = run_isolated(req, Limits(timeout_s=20), argv=argv)
    assert verdict.status == "ok" and "netns" in verdict.isolation
    assert rec["net"].startswith("failed"), rec["net"]
    # and the same stand-in does connect when the network is allowed: the test tests something
    verdict, rec = run_isolated(req, Limits(timeout_s=20, no_network=False), argv=argv)
    assert "netns" not in verdict.isolation
    assert rec["net"] == "connected"


def test_dataset_is_read_only_inside_the_child(tmp_path, req):
    if not isolation_available()["ro_dataset"]:
        pytest.skip("unshare -rm + a read-only bind mount is not permitted on this machine")
    argv = stand_in(tmp_path, WRITE_DATASET_CHILD)
    verdict, rec = run_isolated(req, Limits(timeout_s=20), argv=argv)
    assert verdict.status == "ok" and "ro-dataset" in verdict.isolation
    assert rec["write"].startswith("failed"), rec["write"]
    assert not (req.dataset / "planted.txt").exists()
    verdict, rec = run_isolated(req, Limits(timeout_s=20, read_only_dataset=False), argv=argv)
    assert rec["write"] == "written"


def test_stop_kills_the_child_and_raises(tmp_path, req):
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    work = tmp_path / "work"
    with pytest.raises(EvalError, match="interrupted"):
        polite = HANG_CHILD.replace("signal.signal(signal.SIGTERM, signal.SIG_IGN)", "")
        run_isolated(req, Limits(timeout_s=30), workdir=work, argv=stand_in(tmp_path, polite), stop=stop)
    pids = (work / "pids").read_text().split() if (work / "pids").exists() else []
    assert pids and all(gone(int(p)) for p in pids)
    assert live_in_group(int(pids[0])) == []


def test_harness_problems_raise(tmp_path, req):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(EvalError, match="work folder"):
        run_isolated(req, Limits(timeout_s=5), workdir=blocker / "work", argv=stand_in(tmp_path, OK_CHILD))
    with pytest.raises(EvalError, match="dataset not found"):
        run_isolated(EvalRequest(req.submission, tmp_path / "nope"), argv=stand_in(tmp_path, OK_CHILD))
    with pytest.raises(EvalError, match="submission not found"):
        run_isolated(EvalRequest(tmp_path / "nope.onnx", req.dataset), argv=stand_in(tmp_path, OK_CHILD))


def test_isolation_available_is_cached_and_complete():
    a = isolation_available()
    assert set(a) == {"rlimits", "netns", "ro_dataset"} and a["rlimits"] is True
    assert isolation_available() == a


def test_falls_back_and_says_what_was_not_applied(tmp_path, req, monkeypatch):
    import edgert.eval.isolation as iso
    monkeypatch.setattr(iso, "_probed", {"rlimits": True, "netns": False, "ro_dataset": False})
    verdict, rec = run_isolated(req, Limits(timeout_s=20), argv=stand_in(tmp_path, OK_CHILD))
    assert verdict.status == "ok"
    assert verdict.reason == "isolation not applied: netns, ro-dataset"
    assert {"netns=unavailable", "ro-dataset=unavailable", "rlimit-as=8192MB"} <= set(verdict.isolation)
    assert "netns" not in verdict.isolation and rec["limits"]["nofile"] == 256
