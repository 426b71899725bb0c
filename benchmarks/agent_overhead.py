"""Telemetry overhead of the on-device agent (issue 3 targets).

1. The call on the inference thread, ``Recorder.record(t0_ns, t1_ns)``: target <= 50 us per inference.
   Anchor, measured in the same run: the naive design, JSON-encoding each inference and handing it to
   paho (QoS 1) on the inference thread.
2. The agent's background work (recorder batching + energy integration + SQLite spool + MQTT link +
   energy-meter sampling) while inferences arrive at 100/s: target <= 2 % of one core.  Measured as
   the CPU time of every thread except the inference thread (psutil per-thread times), over wall time.

The broker is a separate process (mosquitto if installed, else `edgert fleet broker`), so its CPU is
not counted.  Usage: python benchmarks/agent_overhead.py [--seconds 20] [--rate 100]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgert.telemetry import schema, topics  # noqa: E402
from edgert.telemetry.link import Link, LinkOptions  # noqa: E402
from edgert.telemetry.mqtt import BrokerOptions, make_client  # noqa: E402
from edgert.telemetry.recorder import Probes, Recorder, RecorderOptions  # noqa: E402
from edgert.telemetry.spool import Spool  # noqa: E402

FLEET, DEV = "bench", "overhead"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen, str, str]:
    port = _free_port()
    mosq = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if mosq:
        conf = workdir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"{user}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        proc = subprocess.Popen([mosq, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = "mosquitto"
    else:
        proc = subprocess.Popen([sys.executable, "-m", "edgert", "fleet", "broker", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = "embedded amqtt"
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"mqtt://127.0.0.1:{port}", name
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{name} did not start on port {port}")


def time_record_call(n: int = 200_000) -> dict:
    """Per-call cost of Recorder.record with its flusher running (spool on a temp dir)."""
    with tempfile.TemporaryDirectory() as d, Spool(Path(d) / "s.db") as sp:
        rec = Recorder(sp, FLEET, DEV, RecorderOptions(flush_interval_s=0.5, summary_interval_s=5)).start()
        samples = np.empty(n // 100, dtype=np.int64)
        record, clock = rec.record, time.perf_counter_ns
        for i in range(n // 100):
            t0 = clock()
            for _ in range(100):
                record(1, 2)
            samples[i] = clock() - t0
        rec.stop()
    per = samples / 100 / 1000.0
    return {"p50_us": float(np.median(per)), "p99_us": float(np.percentile(per, 99)), "mean_us": float(per.mean())}


def time_naive_publish(url: str, n: int = 5_000) -> dict:
    """The anchor: JSON + paho publish (QoS 1) per inference, on the inference thread."""
    client = make_client(BrokerOptions(url=url), "bench-naive")
    host, port = url.rsplit("/", 1)[1].split(":")
    client.connect(host, int(port))
    client.loop_start()
    t = topics.topic(FLEET, "naive", "telemetry")
    per = np.empty(n, dtype=np.float64)
    infos = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        body = json.dumps({"v": 1, "type": "record", "seq": i, "t_ms": time.time_ns() // 1_000_000,
                           "latency_us": 1234.5, "energy_mj": None}).encode()
        infos.append(client.publish(t, body, qos=1))
        per[i] = (time.perf_counter_ns() - t0) / 1000.0
        if i % 100 == 99:
            time.sleep(0.01)     # let paho's thread drain, as at ~100 inferences/s
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    return {"p50_us": float(np.median(per)), "p99_us": float(np.percentile(per, 99)), "mean_us": float(per.mean())}


def background_cpu(url: str, seconds: float, rate_hz: float) -> dict:
    """Run the telemetry stack at rate_hz inferences/s; CPU of all non-inference threads / wall."""
    import psutil

    from devices.meter import EnergyMeter
    from devices.sensors import probe_all

    proc = psutil.Process()
    main_tid = threading.get_native_id()
    with tempfile.TemporaryDirectory() as d, Spool(Path(d) / "s.db") as sp:
        meter = EnergyMeter(probe_all()).start()
        link = Link(LinkOptions(BrokerOptions(url=url), FLEET, DEV), sp, birth=lambda b: {
            **schema.header("birth", FLEET, DEV, 0), "bdseq": b, "device_info": {}, "package": None,
            "backend": None, "versions": {}, "sensor": None, "summary_interval_s": 10.0}).start()
        if not link.wait_connected(10):
            raise SystemExit(f"cannot connect to {url}: {link.stats.last_error}")
        rec = Recorder(sp, FLEET, DEV, RecorderOptions(), on_spooled=link.wake,
                       probes=Probes(energy_j=meter.energy_j,
                                     sensor=lambda: (meter.active_sensor.name, meter.estimated))).start()
        time.sleep(1.0)     # settle: first flush, meter history

        def cpu_by_thread() -> dict[int, float]:
            return {t.id: t.user_time + t.system_time for t in proc.threads()}

        before, w0 = cpu_by_thread(), time.monotonic()
        period, next_t, n = 1.0 / rate_hz, time.monotonic(), 0
        end = w0 + seconds
        while time.monotonic() < end:
            t0 = time.monotonic_ns()
            t1 = t0 + 2_000_000          # a "2 ms inference"; the model itself is not what is measured
            rec.record(t0, t1)
            n += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        after, wall = cpu_by_thread(), time.monotonic() - w0
        rec.stop()
        drained = link.wait_drained(10)
        sensor = meter.active_sensor.name
        link.stop()
        meter.close()
        bg = sum(after[t] - before.get(t, 0.0) for t in after if t != main_tid)
        return {"inferences": n, "wall_s": wall, "rate_hz": n / wall, "bg_cpu_s": bg,
                "bg_core_pct": 100.0 * bg / wall, "published": link.stats.published, "acked": link.stats.acked,
                "drained": drained, "sensor": sensor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=100.0)
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as d:
        broker, url, name = start_broker(Path(d))
        try:
            rec = time_record_call()
            naive = time_naive_publish(url)
            bg = background_cpu(url, args.seconds, args.rate)
        finally:
            broker.terminate()
            broker.wait(10)
    print(f"broker: {name} (separate process); background run: {bg['inferences']} inferences in "
          f"{bg['wall_s']:.1f} s ({bg['rate_hz']:.1f}/s), {bg['published']} messages published, "
          f"{bg['acked']} acked, spool drained: {bg['drained']}, energy sensor: {bg['sensor']}")
    print()
    print("| what | measured | target | vs target | vs anchor (naive per-inference publish) |")
    print("|---|---|---|---|---|")
    print(f"| record() on the inference thread, p50 | {rec['p50_us']:.2f} us | <= 50 us | "
          f"{rec['p50_us'] / 50:.3f}x | {rec['p50_us'] / naive['p50_us']:.3f}x |")
    print(f"| record() p99 | {rec['p99_us']:.2f} us | <= 50 us | {rec['p99_us'] / 50:.3f}x | "
          f"{rec['p99_us'] / naive['p99_us']:.3f}x |")
    print(f"| anchor: json + paho publish per inference, p50 / p99 | {naive['p50_us']:.1f} / "
          f"{naive['p99_us']:.1f} us | - | - | 1.000x |")
    print(f"| background CPU at {args.rate:g} inferences/s | {bg['bg_core_pct']:.2f} % of one core | <= 2 % | "
          f"{bg['bg_core_pct'] / 2:.3f}x | - |")


if __name__ == "__main__":
    main()
