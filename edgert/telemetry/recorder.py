"""Per-inference records and periodic summaries, spooled in batches by a background thread.

The inference thread calls :meth:`Recorder.record` with two monotonic timestamps and nothing else:
one lock and one list append (benchmarks/agent_overhead.py measures it).  Everything costly —
energy integration over the window, JSON, SQLite — happens on the recorder's own thread every
``flush_interval_s``.  Records still in memory when the process is SIGKILLed (at most one flush
interval's worth) are lost *before* they get a seq, so a subscriber's seq accounting stays exact.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgert.errors import TelemetryError
from edgert.telemetry import schema, topics
from edgert.telemetry.spool import Spool


@dataclass(frozen=True)
class RecorderOptions:
    flush_interval_s: float = 0.5     # records batch cadence (bounds the loss window on SIGKILL)
    summary_interval_s: float = 10.0  # p50/p90/p99 + J/inference cadence
    max_batch: int = 2000             # a records message never holds more (bounded payload size)


@dataclass(frozen=True)
class Probes:
    """Where the recorder gets energy, temperature and sensor facts; each may be absent."""
    energy_j: Callable[[int, int], float | None] | None = None      # (t0_ns, t1_ns) -> joules
    temp_c: Callable[[], float | None] | None = None
    throttled: Callable[[], bool | None] | None = None
    sensor: Callable[[], tuple[str | None, bool]] | None = None     # -> (sensor name, estimated)


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values.size else None


class Recorder:
    def __init__(self, spool: Spool, fleet: str, device: str, opts: RecorderOptions = RecorderOptions(),
                 probes: Probes = Probes(), on_spooled: Callable[[], None] | None = None,
                 on_summary: Callable[[dict], None] | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns):
        self.spool, self.fleet, self.device = spool, fleet, device
        self.opts, self.probes = opts, probes
        self._on_spooled, self._on_summary = on_spooled, on_summary
        self._clock_ns = clock_ns
        # wall time of a monotonic stamp = mono + offset (records carry wall ms for display)
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self._lock = threading.Lock()
        self._buf: list[tuple[int, int]] = []
        self._window_lat_us: list[float] = []
        self._window_energy_j: list[float] = []
        self._window_start_ns = clock_ns()
        self._package: str | None = None
        self._backend: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_summary: dict | None = None
        self.records_total = 0
        self.errors: list[str] = []
        self._t_topic = topics.topic(fleet, device, "telemetry")
        self._e_topic = topics.topic(fleet, device, "event")

    # -- inference thread ---------------------------------------------------------------
    def record(self, t0_ns: int, t1_ns: int) -> None:
        """One inference ran from t0_ns to t1_ns (time.monotonic_ns)."""
        with self._lock:
            self._buf.append((t0_ns, t1_ns))

    # -- any thread -----------------------------------------------------------------------
    def set_context(self, package_sha256: str | None, backend: str | None) -> None:
        """A new package or backend: flush what was recorded under the old one first."""
        self.flush()
        with self._lock:
            self._package, self._backend = package_sha256, backend
            self._window_lat_us, self._window_energy_j = [], []
            self._window_start_ns = self._clock_ns()

    def event(self, name: str, ok: bool, message: str, request_id: str | None = None,
              detail: dict | None = None) -> int:
        """Spool an event now; returns its seq."""
        payload = {**schema.header("event", self.fleet, self.device),
                   "event": name, "ok": ok, "message": message}
        if request_id is not None:
            payload["request_id"] = request_id
        if detail is not None:
            payload["detail"] = detail
        seq = self.spool.put(self._e_topic, schema.encode(payload))
        self._spooled()
        return seq

    def start(self) -> "Recorder":
        self._thread = threading.Thread(target=self._run, name="edgert-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.flush()

    # -- the recorder thread ------------------------------------------------------------------
    def _run(self) -> None:
        next_summary = time.monotonic() + self.opts.summary_interval_s
        while not self._stop.wait(self.opts.flush_interval_s):
            try:
                self.flush()
                self._report_overflow()
                if time.monotonic() >= next_summary:
                    next_summary += self.opts.summary_interval_s
                    self.summarize()
            except TelemetryError as e:      # spool full (reject policy) or disk trouble: keep going
                self.errors.append(str(e))
                del self.errors[:-20]

    def _spooled(self) -> None:
        if self._on_spooled is not None:
            self._on_spooled()

    def flush(self) -> int:
        """Spool the buffered records as one or more ``records`` messages; returns how many records."""
        with self._lock:
            buf, self._buf = self._buf, []
            package, backend = self._package, self._backend
        if not buf:
            return 0
        energy = self.probes.energy_j
        msgs = []
        for i in range(0, len(buf), self.opts.max_batch):
            chunk = buf[i:i + self.opts.max_batch]
            t_ms, lat_us, e_mj = [], [], []
            for t0, t1 in chunk:
                t_ms.append((t1 + self._wall_offset_ns) // 1_000_000)
                lat = (t1 - t0) / 1000.0
                lat_us.append(round(lat, 1))
                e = energy(t0, t1) if energy is not None else None
                e_mj.append(None if e is None else round(e * 1000.0, 4))
                self._window_lat_us.append(lat)
                if e is not None:
                    self._window_energy_j.append(e)
            payload = {**schema.header("records", self.fleet, self.device),
                       "package_sha256": package, "backend": backend,
                       "t_ms": t_ms, "latency_us": lat_us, "energy_mj": e_mj}
            msgs.append((self._t_topic, schema.encode(payload), False))
        self.spool.put_many(msgs)
        self.records_total += len(buf)
        self._spooled()
        return len(buf)

    def summarize(self) -> dict:
        """Spool a summary of the window since the last one (and hand it to on_summary)."""
        now = self._clock_ns()
        with self._lock:
            lat = np.asarray(self._window_lat_us, dtype=np.float64) / 1000.0
            energies = self._window_energy_j
            self._window_lat_us, self._window_energy_j = [], []
            start = self._window_start_ns
            window_s = max(1e-9, (now - start) / 1e9)
            self._window_start_ns = now
            package, backend = self._package, self._backend
        sensor, estimated = self.probes.sensor() if self.probes.sensor else (None, False)
        j_per = float(np.mean(energies)) if energies else None
        # mean power over the whole window (idle time included), not just during inferences
        total_j = self.probes.energy_j(start, now) if self.probes.energy_j else None
        payload = {**schema.header("summary", self.fleet, self.device),
                   "window_s": round(window_s, 3), "count": int(lat.size),
                   "latency_ms": {"p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99),
                                  "mean": round(float(lat.mean()), 4) if lat.size else None,
                                  "max": round(float(lat.max()), 4) if lat.size else None},
                   "energy_j_per_inference": None if j_per is None else round(j_per, 6),
                   "power_w": None if total_j is None else round(total_j / window_s, 4),
                   "energy_estimated": bool(estimated), "sensor": sensor,
                   "temp_c": self.probes.temp_c() if self.probes.temp_c else None,
                   "throttled": self.probes.throttled() if self.probes.throttled else None,
                   "package_sha256": package, "backend": backend,
                   "spool_pending": self.spool.pending, "spool_dropped": self.spool.counter("dropped_total")}
        schema.validate({**payload, "seq": 0}, "telemetry")   # seq is spliced in at publish time
        self.spool.put(self._t_topic, schema.encode(payload))
        self.last_summary = payload
        self._spooled()
        if self._on_summary is not None:
            self._on_summary(payload)
        return payload

    def _report_overflow(self) -> None:
        for d in self.spool.take_dropped():
            self.event("spool_overflow", False,
                       f"spool full: dropped {d.count} oldest message(s), seq {d.first_seq}..{d.last_seq}",
                       detail={"first_seq": d.first_seq, "last_seq": d.last_seq, "count": d.count,
                               "bytes": d.nbytes})
