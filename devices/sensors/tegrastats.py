"""Jetson power from the `tegrastats` tool, for when the INA3221 sysfs files are not readable.

Line formats (current/average of each rail):
    JetPack 4 (L4T R32):    ... POM_5V_IN 2591/2591 POM_5V_GPU 0/0 POM_5V_CPU 386/386        (mW)
    JetPack 5/6 (R35/R36):  ... VDD_IN 4500mW/4500mW VDD_CPU_GPU_CV 483mW/483mW ...
R36 prefixes each line with "MM-DD-YYYY HH:MM:SS". The tool prints one line per --interval (ms);
a reader thread keeps the latest, so `read()` never waits for the next line once one has arrived."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from devices._sysfs import is_real_root, under
from devices.sensors.base import PowerSample, PowerSensor, register_sensor, total_mw
from edgert.errors import SensorError

# "NAME cur/avg" or "NAME curmW/avgmW", ending at a space: "RAM 2147/7620MB" does not match.
_RAIL = re.compile(r"(?<!\S)([A-Za-z0-9_]+) (\d+(?:\.\d+)?)(?:mW)?/(\d+(?:\.\d+)?)(?:mW)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
_TEMP = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?=\s|$)")
OFFLINE_TEMP_C = -256.0     # what tegrastats prints for a powered-off thermal zone (CV0@-256C)


def parse_tegrastats_line(line: str) -> dict[str, float]:
    """Rail name -> current power in mW (the instantaneous value, not tegrastats' average)."""
    return {name: float(cur) for name, cur, _avg in _RAIL.findall(line)
            if name not in _NOT_RAILS and name != "NC"}


@dataclass(frozen=True)
class TegrastatsLine:
    rails_mw: dict[str, float]
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    cpu_util_pct: list[float | None] = field(default_factory=list)   # None: core off
    gpu_util_pct: float | None = None
    temps_c: dict[str, float] = field(default_factory=dict)


def parse_tegrastats_stats(line: str) -> TegrastatsLine:
    """Everything useful in one line: rails, RAM, per-core CPU load, GR3D (GPU) load, temperatures."""
    ram = _RAM.search(line)
    cpu = _CPU.search(line)
    gpu = _GR3D.search(line)
    cores: list[float | None] = []
    for core in (cpu.group(1).split(",") if cpu else []):
        pct = core.split("%", 1)[0]
        cores.append(float(pct) if pct.strip().isdigit() else None)     # "off"
    temps = {n: float(t) for n, t in _TEMP.findall(line) if float(t) != OFFLINE_TEMP_C}
    return TegrastatsLine(rails_mw=parse_tegrastats_line(line),
                          ram_used_mb=int(ram.group(1)) if ram else None,
                          ram_total_mb=int(ram.group(2)) if ram else None,
                          cpu_util_pct=cores, gpu_util_pct=float(gpu.group(1)) if gpu else None,
                          temps_c=temps)


@dataclass(frozen=True)
class LineSource:
    """A running line producer: its lines, and how to stop it."""
    lines: Iterable[str]
    stop: Callable[[], None] = lambda: None


ProcessFactory = Callable[[list[str]], LineSource]


def spawn_process(argv: list[str]) -> LineSource:
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                bufsize=1)
    except OSError as e:
        raise SensorError(f"cannot start {argv[0]}: {e}") from e

    assert proc.stdout is not None      # stdout=PIPE

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
    return LineSource(proc.stdout, stop)


@register_sensor
class Tegrastats(PowerSensor):
    name = "tegrastats"
    priority = 50
    first_line_timeout_s = 3.0

    def __init__(self, argv: list[str], process_factory: ProcessFactory, interval_ms: int = 100,
                 clock_ns: Callable[[], int] = time.monotonic_ns):
        self.argv, self.process_factory, self.clock_ns = argv, process_factory, clock_ns
        self.rate_hz = 1000.0 / interval_ms
        self.stale_ns = int(max(1.0, 10 * interval_ms / 1000) * 1e9)
        self._cond = threading.Condition()
        self._latest: PowerSample | None = None
        self._bad_line: str | None = None
        self._ended = False
        self._source: LineSource | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, root: Path = Path("/"), process_factory: ProcessFactory | None = None,
             interval_ms: int = 100, **_kw) -> "Tegrastats":
        exe = under(root, "/usr/bin/tegrastats")     # where L4T installs it
        if not exe.exists() and not (is_real_root(root) and shutil.which("tegrastats")):
            raise SensorError(f"no tegrastats at {exe} (not a Jetson)")
        if process_factory is None and not is_real_root(root):
            raise SensorError(f"tegrastats: root {root} is not / and no process_factory was given")
        return cls(["tegrastats", "--interval", str(int(interval_ms))],
                   process_factory or spawn_process, interval_ms)

    def feed(self, line: str) -> None:
        """Take one tegrastats line (the reader thread calls this; tests may call it directly)."""
        rails = parse_tegrastats_line(line)
        with self._cond:
            if rails:
                self._latest = PowerSample(self.clock_ns(), total_mw(rails), rails_mw=rails)
                self._bad_line = None
            else:
                self._bad_line = line.strip()[:80]
            self._cond.notify_all()

    def _pump(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.feed(line)
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _start(self) -> None:
        # Spawned on first read, not at open: probe_all opens every sensor it finds.
        self._source = self.process_factory(self.argv)
        self._thread = threading.Thread(target=self._pump, args=(self._source.lines,),
                                        name="edgert-tegrastats", daemon=True)
        self._thread.start()

    def read(self) -> PowerSample:
        with self._cond:
            if self._source is None and self._latest is None and self._bad_line is None:
                self._start()
            self._cond.wait_for(lambda: self._latest or self._bad_line or self._ended,
                                self.first_line_timeout_s)
            if self._bad_line is not None:
                raise SensorError(f"no power rails in tegrastats line {self._bad_line!r} "
                                  "(the Jetson Nano 2GB has no INA3221)")
            if self._ended:
                raise SensorError(f"{' '.join(self.argv)}: output ended")
            if self._latest is None:
                raise SensorError(f"{' '.join(self.argv)}: no line within {self.first_line_timeout_s} s")
            age_ns = self.clock_ns() - self._latest.t_ns
            if age_ns > self.stale_ns:
                raise SensorError(f"tegrastats: last line is {age_ns / 1e9:.1f} s old")
            return self._latest

    def close(self) -> None:
        if self._source is not None:
            self._source.stop()
        if self._thread is not None:
            self._thread.join(timeout=2)
