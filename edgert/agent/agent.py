"""The on-device agent: run a package on an input source at a rate, measure, publish, obey commands.

Threads: the main thread runs inferences and executes commands between them (so a deploy swaps the
session while nothing runs on it); the recorder thread batches records into the spool; the link thread
drains the spool to the broker; the energy meter samples its sensor.  Telemetry never blocks
inference: a broker that is down only makes the spool grow (bounded, see docs/telemetry.md).
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgert.agent.config import AgentConfig
from edgert.errors import EdgertError, InputError, SensorError
from edgert.telemetry import schema
from edgert.telemetry.link import Link, LinkOptions
from edgert.telemetry.recorder import Probes, Recorder, RecorderOptions
from edgert.telemetry.spool import Spool, SpoolOptions
from edgert.versions import versions

MAX_ERROR_EVENTS_PER_MIN = 6


@dataclass
class AgentReport:
    inferences: int = 0
    errors: int = 0
    commands: int = 0
    deploys: int = 0
    last_error: str = ""
    extra: dict = field(default_factory=dict)


class Agent:
    def __init__(self, cfg: AgentConfig, root: Path = Path("/")):
        self.cfg = cfg
        self.root = root
        self.fleet = cfg.fleet
        self.device = cfg.device()
        self.report = AgentReport()
        self._stop = threading.Event()
        self._commands: queue.Queue[dict] = queue.Queue()
        self._error_times: list[float] = []
        self._started_s = time.monotonic()
        self.session = None
        self.source = None
        self.meter = None
        self.spool: Spool | None = None
        self.recorder: Recorder | None = None
        self.link: Link | None = None

    # -- set-up -----------------------------------------------------------------------------
    def _public_key(self) -> bytes | None:
        if not self.cfg.public_key:
            return None
        from edgert.package.signing import load_public_key
        return load_public_key(self.cfg.public_key)

    def _load(self, path: Path):
        """Load a package and open the input source for it; both must work or neither is used."""
        import edgert
        from edgert.agent.sources import open_source

        key = self._public_key()
        session = edgert.load(path, backend=self.cfg.backend, public_key=key, require_signature=key is not None)
        try:
            source = open_source(self.cfg.source, session)
            session.run(source.next())            # a dry run: a package that loads but cannot run is refused
        except BaseException:
            session.close()
            raise
        return session, source

    def _open_meter(self):
        from devices.meter import EnergyMeter
        from devices.sensors import open_sensor, probe_all

        sensors = probe_all(self.root)
        if self.cfg.sensor != "auto":
            chosen = open_sensor(self.cfg.sensor, self.root)
            sensors = [chosen] + [s for s in sensors if s.name != chosen.name]
        return EnergyMeter(sensors, on_sensor_change=self._sensor_changed).start()

    def _sensor_changed(self, old: str, new: str, reason: str) -> None:
        if self.recorder is not None:
            self.recorder.event("sensor_change", False, f"sensor {old} failed ({reason}); now using {new}",
                                detail={"old": old, "new": new, "reason": reason})
        if self.link is not None:
            self.link.set_state(self._state("running"))

    def _thermal(self):
        from devices.thermal import read_thermal
        return read_thermal(self.root)

    def _probes(self) -> Probes:
        meter = self.meter

        def temp_c():
            try:
                return self._thermal().max_temp_c()
            except (SensorError, OSError):
                return None

        def throttled():
            try:
                return self._thermal().throttled
            except (SensorError, OSError):
                return None

        def energy_j(t0_ns: int, t1_ns: int):
            try:
                return meter.energy_j(t0_ns, t1_ns)
            except SensorError:        # the window fell out of the meter's history: no figure
                return None

        return Probes(energy_j=energy_j, temp_c=temp_c, throttled=throttled,
                      sensor=lambda: (meter.active_sensor.name, meter.estimated))

    def _package_info(self) -> dict | None:
        if self.session is None:
            return None
        pkg = self.session.package
        return {"sha256": pkg.file_sha256, "path": str(pkg.path), "bytes": pkg.size_bytes,
                "signed": bool(pkg.signed)}

    def _birth(self, bdseq: int) -> dict:
        from devices.detect import detect

        meter = self.meter
        return {**schema.header("birth", self.fleet, self.device), "bdseq": bdseq,
                "device_info": detect(self.root).to_json(), "package": self._package_info(),
                "backend": self.session.backend if self.session else None, "versions": versions("onnxruntime", "paho-mqtt"),
                "sensor": None if meter is None else {"name": meter.active_sensor.name,
                                                      "estimated": bool(meter.estimated)},
                "rate_hz": self.cfg.rate_hz, "summary_interval_s": self.cfg.summary_interval_s}

    def _state(self, status: str) -> dict:
        summary = self.recorder.last_summary if self.recorder else None
        spool = None if self.spool is None else {"pending": self.spool.pending,
                                                 "pending_bytes": self.spool.pending_bytes}
        return {**schema.header("state", self.fleet, self.device), "online": True,
                "bdseq": self.link.bdseq if self.link else 0, "status": status,
                "package": self._package_info(), "backend": self.session.backend if self.session else None,
                "summary": summary, "spool": spool}

    def setup(self) -> None:
        from edgert.agent.store import PackageStore, StoreOptions

        cfg = self.cfg
        self.spool = Spool(cfg.spool, SpoolOptions(max_bytes=cfg.spool_max_bytes))
        key = self._public_key()
        self.store = PackageStore(StoreOptions(root=cfg.store_dir, public_key=key,
                                               require_signature=key is not None))
        path = self.store.current
        if path is None:
            if not cfg.package:
                raise InputError("no package to run: give --package (or `package` in the config), "
                                 "or deploy one with a command")
            path = self.store.install_initial(Path(cfg.package))
        self.session, self.source = self._load(path)
        self.meter = self._open_meter()
        self.link = Link(LinkOptions(cfg.broker_options(), self.fleet, self.device), self.spool,
                         birth=self._birth, on_command=self._commands.put, on_bad_command=self._bad_command)
        self.recorder = Recorder(self.spool, self.fleet, self.device,
                                 RecorderOptions(flush_interval_s=cfg.flush_interval_s,
                                                 summary_interval_s=cfg.summary_interval_s),
                                 probes=self._probes(), on_spooled=self.link.wake,
                                 on_summary=lambda s: self.link.set_state(self._state("running")))
        self.recorder.set_context(self.session.package.file_sha256, self.session.backend)
        self.link.set_state(self._state("running"))
        self.recorder.start()
        self.link.start()
        self.recorder.event("started", True, f"agent started: {self.session.backend} backend, "
                            f"source {cfg.source}, {cfg.rate_hz:g} Hz",
                            detail={"package": self._package_info(), "pid": os.getpid()})

    # -- the loop ---------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self, duration_s: float | None = None, max_inferences: int | None = None) -> AgentReport:
        """Set up, run until stop()/duration/count, shut down cleanly.  Set-up errors propagate."""
        self.start()
        return self.serve(duration_s, max_inferences)

    def start(self) -> "Agent":
        """Set up everything; on failure release what was opened and re-raise."""
        try:
            self.setup()
        except BaseException:
            self.shutdown()
            raise
        return self

    def serve(self, duration_s: float | None = None, max_inferences: int | None = None) -> AgentReport:
        """The inference loop of a started agent, then a clean shutdown."""
        try:
            self._loop(duration_s, max_inferences)
        finally:
            self.shutdown()
        return self.report

    def _loop(self, duration_s: float | None, max_inferences: int | None) -> None:
        period = 1.0 / self.cfg.rate_hz if self.cfg.rate_hz > 0 else 0.0
        end = None if duration_s is None else time.monotonic() + duration_s
        next_t = time.monotonic()
        while not self._stop.is_set():
            if end is not None and time.monotonic() >= end:
                break
            if max_inferences is not None and self.report.inferences >= max_inferences:
                break
            self._drain_commands()
            try:
                feeds = self.source.next()
                t0 = time.monotonic_ns()
                self.session.run(feeds)
                t1 = time.monotonic_ns()
                self.recorder.record(t0, t1)
                self.report.inferences += 1
            except EdgertError as e:
                self._error(str(e))
            if period:
                next_t += period
                delay = next_t - time.monotonic()
                if delay < -period:          # fell behind (slow model): don't try to catch up in a burst
                    next_t = time.monotonic()
                elif delay > 0:
                    self._stop.wait(delay)

    def shutdown(self) -> None:
        """Flush, say goodbye, release everything (safe to call twice, or after a failed set-up)."""
        if self.recorder is not None:
            self.recorder.stop()
            if self.recorder.records_total:
                self.recorder.summarize()
            self.recorder.event("stopping", True, f"agent stopping after {self.report.inferences} inferences")
            self.recorder = None
        if self.link is not None:
            self.link.stop(drain_s=2.0)
        if self.meter is not None:
            self.meter.close()         # stops the sampler and closes the sensors (tegrastats, I2C)
            self.meter = None
        for name in ("source", "session", "spool"):
            thing = getattr(self, name)
            if thing is not None:
                thing.close()
                setattr(self, name, None)

    def _error(self, message: str) -> None:
        self.report.errors += 1
        self.report.last_error = message
        now = time.monotonic()
        self._error_times = [t for t in self._error_times if now - t < 60] + [now]
        if len(self._error_times) <= MAX_ERROR_EVENTS_PER_MIN:   # rate-limited: a broken input can't flood
            self.recorder.event("error", False, message)

    def _bad_command(self, reason: str) -> None:
        self.recorder.event("unknown_cmd", False, f"ignored a malformed command: {reason}")

    # -- commands (main thread, between inferences) -----------------------------------------------
    def _drain_commands(self) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            self.report.commands += 1
            handler = {"deploy": self._cmd_deploy, "bench": self._cmd_bench, "status": self._cmd_status}
            try:
                handler[cmd["cmd"]](cmd)
            except EdgertError as e:
                self.recorder.event(cmd["cmd"], False, str(e), request_id=cmd["id"])

    def _cmd_status(self, cmd: dict) -> None:
        link = self.link.stats
        detail = {"package": self._package_info(), "backend": self.session.backend,
                  "uptime_s": round(time.monotonic() - self._started_s, 1),
                  "inferences": self.report.inferences, "errors": self.report.errors,
                  "spool_pending": self.spool.pending, "link": {"connects": link.connects,
                                                               "published": link.published,
                                                               "acked": link.acked},
                  "sensor": self.meter.active_sensor.name, "sensor_failures": list(self.meter.failures)}
        self.recorder.event("status", True, "ok", request_id=cmd["id"], detail=detail)

    def _cmd_bench(self, cmd: dict) -> None:
        from edgert.bench import BenchOptions, run_bench

        iters = max(1, min(int(cmd.get("iterations", 20)), 10_000))
        feeds = self.source.next()
        result = run_bench(self.session, self.session.check_feeds(feeds), BenchOptions(warmup=3, iters=iters),
                           package_bytes=self.session.package.size_bytes)
        self.recorder.event("bench", True, f"p50 {result.latency_ms['p50']:.3f} ms over {iters} runs",
                            request_id=cmd["id"], detail=result.to_json())

    def _cmd_deploy(self, cmd: dict) -> None:
        if "url" not in cmd:
            raise InputError("deploy needs a url (file path, file://, http:// or https://)")
        loaded: dict[str, Any] = {}

        def try_load(path: Path):
            loaded["pair"] = self._load(path)

        result = self.store.deploy(cmd["url"], cmd.get("sha256"), try_load)
        if result.ok and "pair" in loaded:
            old_session, old_source = self.session, self.source
            self.session, self.source = loaded["pair"]
            old_source.close()
            old_session.close()
            self.recorder.set_context(self.session.package.file_sha256, self.session.backend)
            self.report.deploys += 1
            self.link.set_state(self._state("running"))
        elif "pair" in loaded:        # loaded fine but the swap failed: release what was opened
            new_session, new_source = loaded["pair"]
            new_source.close()
            new_session.close()
        self.recorder.event("deploy", result.ok, result.message, request_id=cmd["id"],
                            detail={"sha256": result.sha256, "path": str(result.path) if result.path else None,
                                    "previous": str(result.previous) if result.previous else None})
