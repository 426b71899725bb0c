"""`edgert run --mqtt`: the run pipeline's frames published as the agent publishes inferences.

One telemetry path: the same Spool (SQLite, store-and-forward), Recorder (records + summaries) and
Link (QoS 1, birth / death, backoff) as the on-device agent, with topics and payloads of schema v1
(docs/telemetry.md).  Each processed frame is one record (its inference window); source outages
(a camera unplugged, a stream dropped) become `source_*` events.
"""
from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgert.telemetry import schema
from edgert.telemetry.link import Link, LinkOptions
from edgert.telemetry.mqtt import BrokerOptions
from edgert.telemetry.recorder import Recorder, RecorderOptions
from edgert.telemetry.spool import Spool, SpoolOptions


def default_device_id() -> str:
    name = socket.gethostname().split(".")[0] or "device"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


@dataclass
class RunTelemetry:
    spool: Spool
    link: Link
    recorder: Recorder
    fleet: str
    device: str
    _tmp: tempfile.TemporaryDirectory | None = None

    @classmethod
    def open(cls, broker_url: str, fleet: str, device: str | None, spool_path: Path | None,
             package: Path, app) -> "RunTelemetry":
        from devices.detect import detect
        from edgert.versions import versions

        device = device or default_device_id()
        tmp = None
        if spool_path is None:
            tmp = tempfile.TemporaryDirectory(prefix="edgert-run-spool-")
            spool_path = Path(tmp.name) / "spool.db"
        spool = Spool(spool_path, SpoolOptions())
        info = {"sha256": app.file_sha256, "path": str(package), "bytes": package.stat().st_size,
                "signed": None}

        def birth(bdseq: int) -> dict:
            return {**schema.header("birth", fleet, device), "bdseq": bdseq,
                    "device_info": detect().to_json(), "package": info, "backend": app.backend,
                    "versions": versions("onnxruntime", "paho-mqtt"), "sensor": None,
                    "rate_hz": None, "summary_interval_s": RecorderOptions().summary_interval_s}

        link = Link(LinkOptions(BrokerOptions(url=broker_url), fleet, device), spool, birth=birth)
        recorder = Recorder(spool, fleet, device, RecorderOptions(), on_spooled=link.wake)
        recorder.set_context(app.file_sha256, app.backend)
        link.set_state({**schema.header("state", fleet, device), "online": True, "bdseq": 0,
                        "status": "running", "package": info, "backend": app.backend})
        recorder.start()
        link.start()
        recorder.event("started", True, f"edgert run started: {app.backend} backend",
                       detail={"pid": os.getpid()})
        return cls(spool, link, recorder, fleet, device, tmp)

    def on_frame(self, rec, result: dict) -> None:
        end = rec.capture_ns + int(rec.infer_ms * 1e6)
        self.recorder.record(end - int(rec.infer_ms * 1e6), end)

    def on_source_event(self, kind: str, detail: dict) -> None:
        self.recorder.event(f"source_{kind}", kind in ("reconnected",), f"source {detail.get('source')}: "
                            f"{kind}", detail={k: v for k, v in detail.items()
                                               if isinstance(v, (str, int, float, bool, type(None)))})

    def close(self) -> None:
        self.recorder.event("stopped", True, "edgert run stopped")
        self.recorder.stop()
        self.link.stop(drain_s=2.0)
        self.spool.close()
        if self._tmp is not None:
            self._tmp.cleanup()
