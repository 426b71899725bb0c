"""Small readers shared by the probes: sysfs/procfs files under a root, and one-shot commands.

Every hardware probe takes `root: Path = Path("/")` and reads files relative to it, so tests build
fake trees in tmp_path. Commands (vcgencmd, tegrastats) are run only against the real root, through
an injectable runner, so tests feed recorded output instead."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

from edgert.errors import SensorError

# argv -> stdout text; raises SensorError when the command is missing or fails.
Runner = Callable[[list[str]], str]


def under(root: Path, path: str) -> Path:
    """`path` (absolute, as on the device) inside `root`."""
    return Path(root) / path.lstrip("/")


def is_real_root(root: Path) -> bool:
    return Path(root).resolve() == Path("/")


def read_text(path: Path, hint: str = "") -> str:
    """The stripped text of a sysfs/procfs file; a missing or unreadable file raises SensorError."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except PermissionError as e:
        raise SensorError(f"cannot read {path}: permission denied{'; ' + hint if hint else ''}") from e
    except OSError as e:
        raise SensorError(f"cannot read {path}: {e.strerror or e}") from e


def read_int(path: Path, hint: str = "") -> int:
    text = read_text(path, hint)
    try:
        return int(text)
    except ValueError:
        raise SensorError(f"{path}: expected an integer, got {text[:40]!r}") from None


def read_optional(path: Path) -> str | None:
    """Text of a file that may legitimately be absent (detection, thermal): None when missing or
    unreadable. Device-tree strings are NUL-terminated; the NULs are kept for the caller to split."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def run_command(argv: list[str], timeout_s: float = 2.0) -> str:
    """Default runner: stdout of `argv`, SensorError when it is missing, fails or hangs."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise SensorError(f"{argv[0]} not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise SensorError(f"{' '.join(argv)} did not finish within {timeout_s} s") from None
    if done.returncode != 0:
        err = (done.stderr or done.stdout).strip().splitlines()
        raise SensorError(f"{' '.join(argv)} exited with {done.returncode}: {err[0] if err else ''}")
    return done.stdout


def pick_runner(root: Path, runner: Runner | None, what: str) -> Runner:
    """The runner to use: the injected one, else subprocess on the real root. A fake root without
    an injected runner raises: running the host's commands would describe the wrong machine."""
    if runner is not None:
        return runner
    if not is_real_root(root):
        raise SensorError(f"{what}: root {root} is not / and no runner was given")
    return run_command
