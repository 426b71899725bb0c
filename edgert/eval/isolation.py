"""Run one evaluation in an isolated child process and turn whatever it does into a Verdict.

The child is ``python -m edgert.eval.child REQUEST.json`` (child.py).  It gets:

* its own session / process group, so a timeout kills it *and* everything it spawned;
* resource limits, set between fork and exec: RLIMIT_AS (address space), RLIMIT_CPU, RLIMIT_NOFILE,
  RLIMIT_CORE = 0 (a crash must not write a multi-GB core on an SD card);
* a parent-death signal (SIGKILL, prctl PR_SET_PDEATHSIG), so a killed referee does not leave a child
  running on the device beside the re-run;
* where the OS allows it (probed once, see isolation_available): no network (``unshare -rn``: a new
  user + network namespace holding only a down loopback) and a read-only dataset (``unshare -rm``: a
  private mount namespace in which the dataset is bind-mounted over itself read-only).

Nothing untrusted is interpolated into a shell: the request goes in a JSON file, and the wrapper shell
gets the dataset path and the child's argv as positional parameters ("$1", "$@").  The wrapper tells
the parent on fd 9 that the namespaces and the mount are in place, then closes fd 9 and execs the
child, so "applied" in Verdict.isolation is confirmed, not assumed, and the submission never sees fd 9.

Exit status → verdict: 0 + a result whose verdict is ok → ok; 3 + an invalid result → invalid; a wall
clock past Limits.timeout_s (or SIGXCPU from RLIMIT_CPU) → timeout; anything else → crashed, with the
exit code or signal and the last stderr lines.  Submission misbehaviour never raises; EvalError is for
the harness's own problems (missing dataset, unwritable work folder, namespaces that fail to set up).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgert.errors import EvalError
from edgert.eval.types import VERDICTS, EvalOptions, Limits, Verdict

EXIT_OK = 0
EXIT_INVALID = 3                 # child.py: the submission is invalid, the result says why
EXIT_SETUP_FAILED = 125          # the wrapper shell: a namespace or the bind mount could not be set up
STATUS_FD = 9                    # the wrapper reports "namespaces ready" here (a single digit: POSIX sh)
TERM_GRACE_S = 2.0               # SIGTERM, then SIGKILL this much later
STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 16 * 1024    # read at most this much of the end of stderr
STDERR_LINE_CHARS = 240
REASON_CHARS = 400
MAX_RESULT_BYTES = 64 * 1024 * 1024
PR_SET_PDEATHSIG = 1             # <linux/prctl.h>

# How an allocation failure shows on stderr: Python's MemoryError, glibc/strerror(ENOMEM),
# C++'s std::bad_alloc, and onnxruntime / numpy phrasing ("Failed to allocate memory", "out of memory").
_OOM_MARKERS = ("MemoryError", "Cannot allocate memory", "bad_alloc", "out of memory",
                "Unable to allocate", "Failed to allocate")

# The wrapper run inside the new namespaces.  $1 = dataset ("" = leave it writable), the rest = argv.
# bind + remount: util-linux before 2.27 ignores "-o ro" on a plain --bind, so remount explicitly.
_WRAPPER = r"""
d=$1; shift
if [ -n "$d" ]; then
  mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" || {
    echo "edgert isolation: read-only bind mount of $d failed" >&2; exit 125; }
fi
echo ready >&9; exec 9>&-
exec "$@"
"""

_RO_PROBE = r"""
mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 1
! touch "$1/probe" 2>/dev/null
"""


@dataclass(frozen=True)
class EvalRequest:
    submission: Path
    dataset: Path
    options: EvalOptions = EvalOptions()
    report_dir: Path | None = None
    sensor_root: Path = Path("/")        # where the child probes power sensors: a test seam, not a contest option


# ----------------------------------------------------------------------------------------- probing
_probe_lock = threading.Lock()
_probed: dict[str, bool] | None = None


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def isolation_available() -> dict[str, bool]:
    """What this machine can apply: rlimits always (POSIX); netns and ro_dataset need unprivileged
    user namespaces (or root).  Probed once per process with harmless commands, then cached."""
    global _probed
    with _probe_lock:
        if _probed is None:
            unshare = shutil.which("unshare")
            netns = ro = False
            if unshare is not None:
                netns = _probe([unshare, "-rn", "true"])
                with tempfile.TemporaryDirectory(prefix="edgert-probe-") as d:
                    # the mount must work AND a write under it must then fail
                    ro = _probe([unshare, "-rm", "sh", "-c", _RO_PROBE, "edgert-probe", d])
            _probed = {"rlimits": True, "netns": netns, "ro_dataset": ro}
        return dict(_probed)


# ------------------------------------------------------------------------------------- the child
def _rlimits(limits: Limits) -> tuple[list[tuple[int, int, int]], list[str]]:
    """(resource, soft, hard) to set in the child, never above the current hard limit (an
    unprivileged process cannot raise it), and how each shows in Verdict.isolation."""
    out, applied = [], []

    def cap(res: int, soft: int, hard: int) -> tuple[int, int]:
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        return soft, hard

    mb = int(limits.address_space_mb)
    s, h = cap(resource.RLIMIT_AS, mb << 20, mb << 20)
    out.append((resource.RLIMIT_AS, s, h))
    applied.append(f"rlimit-as={s >> 20}MB")
    cpu = int(limits.cpu_time_s)
    s, h = cap(resource.RLIMIT_CPU, cpu, cpu + 2)     # SIGXCPU at the soft limit, SIGKILL 2 s later
    out.append((resource.RLIMIT_CPU, s, h))
    applied.append(f"rlimit-cpu={s}s")
    n = max(int(limits.open_files), 16)               # Python itself needs a few
    s, h = cap(resource.RLIMIT_NOFILE, n, n)
    out.append((resource.RLIMIT_NOFILE, s, h))
    applied.append(f"rlimit-nofile={s}")
    out.append((resource.RLIMIT_CORE, 0, 0))
    applied.append("rlimit-core=0")
    return out, applied


_libc = None


def _prctl():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    return _libc.prctl if _libc else None


def _preexec(rlimits: list[tuple[int, int, int]], status_w: int | None, parent_pid: int):
    prctl = _prctl()     # loaded here, in the parent: no dlopen between fork and exec

    def fn() -> None:     # runs in the child between fork and exec: keep it to system calls
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:    # the parent died before prctl took effect
                os._exit(137)
        if status_w is not None:
            os.dup2(status_w, STATUS_FD)      # inheritable; the wrapper closes it before exec
        for res, soft, hard in rlimits:
            resource.setrlimit(res, (soft, hard))
    return fn


def _exited(pid: int) -> bool:
    """True once the child has exited, without reaping it: while it is a zombie its pid (and so its
    process-group id) cannot be reused, so killpg after this still hits only its own group."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exit(pid: int, until: float, stop: threading.Event | None = None) -> bool:
    delay = 0.005
    while not _exited(pid):
        now = time.monotonic()
        if now >= until or (stop is not None and stop.is_set()):
            return False
        time.sleep(min(delay, until - now))
        delay = min(delay * 2, 0.1)
    return True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the whole group, SIGKILL it after TERM_GRACE_S, reap the leader."""
    _killpg(proc.pid, signal.SIGTERM)
    _wait_exit(proc.pid, time.monotonic() + TERM_GRACE_S)
    _killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# --------------------------------------------------------------------------------------- reading
def _stderr_tail(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - STDERR_TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if len(data) == STDERR_TAIL_BYTES and size > STDERR_TAIL_BYTES:
        lines = lines[1:]                  # the first line is cut
    lines = [ln.rstrip()[:STDERR_LINE_CHARS] for ln in lines if ln.strip()]
    return lines[-STDERR_TAIL_LINES:]


def _read_result(path: Path) -> tuple[dict | None, str]:
    """(record, "") or (None, why): why == "" means no file at all."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, ""
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    if size > MAX_RESULT_BYTES:
        return None, f"{size} bytes, over the {MAX_RESULT_BYTES >> 20} MB limit"
    try:
        rec = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        return None, f"not JSON ({str(e).splitlines()[0][:80]})"
    if not isinstance(rec, dict) or not isinstance(rec.get("verdict"), dict):
        return None, "no verdict object"
    if rec["verdict"].get("status") not in VERDICTS:
        return None, f"unknown verdict status {str(rec['verdict'].get('status'))[:40]!r}"
    return rec, ""


def _one_line(text: str, limit: int = REASON_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _how_it_ended(rc: int) -> str:
    if rc < 0:
        try:
            sig = signal.Signals(-rc)
            return f"killed by {sig.name} ({signal.strsignal(sig) or sig.name})"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def _crashed(rc: int, tail: list[str], limits: Limits, why: str = "") -> tuple[str, str]:
    """(status, reason) for a child that ended without a usable result."""
    if rc == -signal.SIGXCPU:
        return "timeout", f"CPU-time limit of {limits.cpu_time_s} s exceeded (SIGXCPU)"
    parts = []
    if any(m in line for line in tail for m in _OOM_MARKERS):
        parts.append(f"out of memory (address-space limit {limits.address_space_mb} MB)")
    parts.append(why or _how_it_ended(rc))
    reason = "; ".join(parts)
    # the last lines that say something (not Python 3.11's ^^^^ position markers under a source line)
    telling = [ln for ln in tail if ln.strip(" ^~")]
    if telling:
        reason += ": " + " | ".join(telling[-3:])
    return "crashed", _one_line(reason)


# -------------------------------------------------------------------------------------- the entry
def _wrap(argv: list[str], dataset: Path, limits: Limits) -> tuple[list[str], list[str], list[str]]:
    """(argv to exec, namespaces requested, what could not be applied)."""
    avail = isolation_available()
    want_net = limits.no_network and avail["netns"]
    want_ro = limits.read_only_dataset and avail["ro_dataset"]
    missing = []
    if limits.no_network and not want_net:
        missing.append("netns")
    if limits.read_only_dataset and not want_ro:
        missing.append("ro-dataset")
    if not (want_net or want_ro):
        return argv, [], missing
    flags = "-r" + ("n" if want_net else "") + ("m" if want_ro else "")
    wrapped = [shutil.which("unshare") or "unshare", flags, "--", "sh", "-c", _WRAPPER, "edgert-isolate",
               str(dataset) if want_ro else "", *argv]
    return wrapped, ["netns"] * want_net + ["ro-dataset"] * want_ro, missing


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def run_isolated(req: EvalRequest, limits: Limits = Limits(), workdir: Path | None = None,
                 argv: list[str] | None = None,
                 stop: threading.Event | None = None) -> tuple[Verdict, dict | None]:
    """Evaluate ``req`` in an isolated child; return (verdict, the child's result record or None).

    ``workdir`` holds request.json, result.json, child.out and child.err (a temporary folder, removed
    afterwards, when None).  ``argv`` replaces the child command ``[python, -m, edgert.eval.child]``;
    the request path is appended to it.  Setting ``stop`` kills the child and raises EvalError.
    """
    submission = Path(req.submission).resolve()
    dataset = Path(req.dataset).resolve()
    if not submission.is_file():
        raise EvalError(f"submission not found: {req.submission}")
    if not dataset.exists():
        raise EvalError(f"dataset not found: {req.dataset}")
    if limits.timeout_s <= 0 or limits.address_space_mb <= 0 or limits.cpu_time_s <= 0:
        raise EvalError(f"limits must be positive: {limits}")
    own_tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix="edgert-eval-")) if own_tmp else Path(workdir).resolve()
    try:
        return _run(req, submission, dataset, limits, work, argv, stop)
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)


def _run(req: EvalRequest, submission: Path, dataset: Path, limits: Limits, work: Path,
         argv: list[str] | None, stop: threading.Event | None) -> tuple[Verdict, dict | None]:
    report_dir = Path(req.report_dir).resolve() if req.report_dir is not None else None
    result_path = work / "result.json"
    request_path = work / "request.json"
    try:
        work.mkdir(parents=True, exist_ok=True)
        result_path.unlink(missing_ok=True)          # never read a previous run's result
        request_path.write_text(json.dumps({
            "submission": str(submission), "dataset": str(dataset), "options": req.options.to_json(),
            "report_dir": str(report_dir) if report_dir else None, "result_path": str(result_path),
            "sensor_root": str(Path(req.sensor_root).resolve())}, indent=1))
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
        out = open(work / "child.out", "wb")
        err = open(work / "child.err", "wb")
    except OSError as e:
        raise EvalError(f"cannot write to the work folder {work}: {e.strerror or e}") from None

    rlimits, applied = _rlimits(limits)
    cmd = list(argv) if argv is not None else [sys.executable, "-m", "edgert.eval.child"]
    cmd, namespaces, missing = _wrap([*cmd, str(request_path)], dataset, limits)
    if "ro-dataset" in namespaces:
        for p in (work, report_dir):
            if p is not None and _inside(p, dataset):
                raise EvalError(f"{p} is inside the dataset {dataset}, which the child sees read-only")
    status_r = status_w = None
    if namespaces:
        status_r, status_w = os.pipe()
    t0 = time.monotonic()
    try:
        with out, err:
            # close_fds=False: Python's own fds are non-inheritable (PEP 446) and the status pipe must
            # reach the wrapper as fd 9, which the preexec dup2 makes after Popen's close_fds would run.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=work,
                                    start_new_session=True, close_fds=not namespaces,
                                    preexec_fn=_preexec(rlimits, status_w, os.getpid()))
    except OSError as e:
        for fd in (status_r, status_w):
            if fd is not None:
                os.close(fd)
        raise EvalError(f"cannot start the evaluation child {cmd[0]}: {e.strerror or e}") from None
    if status_w is not None:
        os.close(status_w)

    timed_out = False
    try:
        if not _wait_exit(proc.pid, t0 + limits.timeout_s, stop):
            if stop is not None and stop.is_set():
                _stop_group(proc)
                raise EvalError("evaluation interrupted: stop requested")
            timed_out = True
            _stop_group(proc)
        else:
            _killpg(proc.pid, signal.SIGKILL)      # whatever the child left running in its group
            proc.wait()
    finally:
        if proc.returncode is None:                # an exception (KeyboardInterrupt) on the way
            _stop_group(proc)
        ready = b""
        if status_r is not None:
            os.set_blocking(status_r, False)
            try:
                ready = os.read(status_r, 64)
            except BlockingIOError:
                pass
            os.close(status_r)

    rc = proc.returncode
    tail = _stderr_tail(work / "child.err")
    if namespaces and not ready.startswith(b"ready") and not timed_out:
        # the wrapper never reached exec: nothing of the submission ran, this is the harness's problem
        raise EvalError(f"isolation ({', '.join(namespaces)}) could not be set up: "
                        + _one_line(" | ".join(tail[-3:]) or _how_it_ended(rc)))
    isolation = applied + namespaces + [f"{m}=unavailable" for m in missing]

    def verdict(status: str, reason: str) -> Verdict:
        return Verdict(status, _one_line(reason), exit_code=rc, stderr_tail=tail, isolation=isolation)

    if timed_out:
        return Verdict("timeout", f"no result within {limits.timeout_s:g} s", exit_code=None,
                       stderr_tail=tail, isolation=isolation), None
    rec, why = _read_result(result_path)
    status = rec["verdict"]["status"] if rec is not None else None
    if rc == EXIT_OK and status == "ok":
        note = f"isolation not applied: {', '.join(missing)}" if missing else ""
        return verdict("ok", note), rec
    if rc in (EXIT_OK, EXIT_INVALID) and status == "invalid":
        return verdict("invalid", rec["verdict"].get("reason") or "invalid submission"), rec
    if rc in (EXIT_OK, EXIT_INVALID):
        if why:
            problem = f"child wrote a malformed result ({why})"
        elif rec is None:
            problem = f"{_how_it_ended(rc)} without writing a result"
        else:
            problem = f"{_how_it_ended(rc)} with a result whose verdict is {status!r}"
        st, reason = _crashed(rc, tail, limits, problem)
        return verdict(st, reason), None
    st, reason = _crashed(rc, tail, limits)
    return verdict(st, reason), None
