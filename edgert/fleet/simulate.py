"""A simulated fleet for load tests and broker sizing: N devices, each its own MQTT connection.

Each device sends a birth, then one spooled-style message per tick (``records`` with one simulated
inference, every 50th a ``summary``) with a per-device ``seq`` from 1, QoS 1, then a clean death.
Devices are spread over worker processes (one thread per process drives the schedule; paho's network
thread per client does the I/O), so the publisher side is not the bottleneck on small machines.
"""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import random
import time
from dataclasses import dataclass, field

from edgert.errors import TelemetryError
from edgert.telemetry import schema, topics
from edgert.telemetry.mqtt import BrokerOptions, make_client, parse_broker_url

SUMMARY_EVERY = 50


@dataclass(frozen=True)
class SimOptions:
    devices: int = 200
    rate_hz: float = 10.0          # messages per second per device
    duration_s: float = 60.0
    fleet: str = "sim"
    prefix: str = "sim"            # device ids: <prefix>-0000 ...
    processes: int = 4
    connect_timeout_s: float = 30.0
    seed: int = 0


@dataclass
class SimResult:
    devices: int = 0
    published: int = 0             # telemetry messages (records + summaries), excluding births/deaths
    acked: int = 0                 # of those, PUBACKed by the broker
    last_seq: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    late_ticks: int = 0            # ticks that started more than one period late (publisher overload)
    errors: list[str] = field(default_factory=list)

    @property
    def msgs_per_s(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s else 0.0


def device_ids(opts: SimOptions) -> list[str]:
    return [f"{opts.prefix}-{i:04d}" for i in range(opts.devices)]


def _records(fleet: str, dev: str, seq: int, latency_us: float) -> bytes:
    now = time.time_ns() // 1_000_000
    return schema.encode({**schema.header("records", fleet, dev, now), "seq": seq, "package_sha256": "0" * 64,
                          "backend": "sim", "t_ms": [now], "latency_us": [latency_us], "energy_mj": [None]})


def _summary(fleet: str, dev: str, seq: int, latency_ms: float, interval_s: float) -> bytes:
    lat = {"p50": latency_ms, "p90": latency_ms * 1.2, "p99": latency_ms * 1.5, "mean": latency_ms,
           "max": latency_ms * 2}
    return schema.encode({**schema.header("summary", fleet, dev, time.time_ns() // 1_000_000), "seq": seq,
                          "window_s": interval_s, "count": SUMMARY_EVERY, "latency_ms": lat,
                          "energy_j_per_inference": None, "power_w": None, "energy_estimated": True,
                          "sensor": None, "temp_c": None, "throttled": None, "package_sha256": "0" * 64,
                          "backend": "sim"})


def _worker(broker: BrokerOptions, devs: list[str], opts: SimOptions, out) -> None:
    """One process: connect every device, publish on schedule, wait for PUBACKs, report."""
    res = SimResult(devices=len(devs))
    rng = random.Random(hash((opts.seed, devs[0])))
    addr = parse_broker_url(broker.url)
    clients, infos = {}, []
    try:
        for dev in devs:
            c = make_client(broker, f"sim-{opts.fleet}-{dev}")
            c.max_inflight_messages_set(100)
            c.will_set(topics.topic(opts.fleet, dev, "death"),
                       schema.encode({**schema.header("death", opts.fleet, dev, 0), "bdseq": 1}), qos=1)
            c.connect_async(addr.host, addr.port, keepalive=30)
            c.loop_start()
            clients[dev] = c
        end = time.monotonic() + opts.connect_timeout_s
        while not all(c.is_connected() for c in clients.values()):
            if time.monotonic() > end:
                raise TelemetryError(f"{sum(not c.is_connected() for c in clients.values())} simulated "
                                     f"devices could not connect to {broker.url}")
            time.sleep(0.05)
        for dev, c in clients.items():
            birth = {**schema.header("birth", opts.fleet, dev, time.time_ns() // 1_000_000), "bdseq": 1,
                     "device_info": {"kind": "sim", "model": "simulated device", "arch": "sim"},
                     "package": {"sha256": "0" * 64}, "backend": "sim", "versions": {},
                     "sensor": None, "rate_hz": opts.rate_hz, "summary_interval_s": SUMMARY_EVERY / opts.rate_hz}
            infos.append(c.publish(topics.topic(opts.fleet, dev, "birth"), schema.encode(birth), qos=1))
        base_lat = {dev: rng.uniform(5.0, 20.0) for dev in devs}
        ticks = int(round(opts.duration_s * opts.rate_hz))
        period = 1.0 / opts.rate_hz
        t0 = time.monotonic()
        for tick in range(ticks):
            target = t0 + tick * period
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif -delay > period:
                res.late_ticks += 1
            seq = tick + 1
            for dev, c in clients.items():
                lat_ms = base_lat[dev] * rng.uniform(0.9, 1.1)
                body = (_summary(opts.fleet, dev, seq, lat_ms, SUMMARY_EVERY * period) if seq % SUMMARY_EVERY == 0
                        else _records(opts.fleet, dev, seq, lat_ms * 1000))
                infos.append(c.publish(topics.topic(opts.fleet, dev, "telemetry"), body, qos=1))
                res.published += 1
                res.last_seq[dev] = seq
        end = time.monotonic() + 60
        for info in infos:
            info.wait_for_publish(max(0.01, end - time.monotonic()))
        res.acked = sum(1 for i in infos[len(devs):] if i.is_published())
        res.elapsed_s = time.monotonic() - t0
        deaths = [c.publish(topics.topic(opts.fleet, dev, "death"),
                            schema.encode({**schema.header("death", opts.fleet, dev, 0), "bdseq": 1}), qos=1)
                  for dev, c in clients.items()]
        for d in deaths:
            d.wait_for_publish(5)
    except (TelemetryError, OSError, RuntimeError, ValueError) as e:
        res.errors.append(f"{type(e).__name__}: {e}")
    finally:
        for c in clients.values():
            c.disconnect()
            c.loop_stop()
        out.put(res)


def simulate(broker: BrokerOptions, opts: SimOptions = SimOptions()) -> SimResult:
    """Run the simulated fleet to completion; returns the merged counts (TelemetryError on failure)."""
    if opts.devices < 1 or opts.rate_hz <= 0 or opts.duration_s <= 0 or opts.processes < 1:
        raise TelemetryError("simulate needs devices >= 1, rate_hz > 0, duration_s > 0, processes >= 1")
    parse_broker_url(broker.url)
    devs = device_ids(opts)
    nproc = min(opts.processes, len(devs))
    groups = [devs[i::nproc] for i in range(nproc)]
    ctx = mp.get_context("spawn")      # no fork of a threaded parent (paho, pytest-xdist)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(broker, g, opts, out), daemon=True) for g in groups]
    for p in procs:
        p.start()
    total = SimResult()
    deadline = time.monotonic() + opts.duration_s + opts.connect_timeout_s + 120
    for _ in procs:
        try:
            r = out.get(timeout=max(1.0, deadline - time.monotonic()))
        except queue_mod.Empty:
            total.errors.append("a simulator process did not report in time")
            break
        total.devices += r.devices
        total.published += r.published
        total.acked += r.acked
        total.last_seq.update(r.last_seq)
        total.elapsed_s = max(total.elapsed_s, r.elapsed_s)
        total.late_ticks += r.late_ticks
        total.errors += r.errors
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    if total.errors:
        raise TelemetryError("fleet simulation failed: " + "; ".join(total.errors[:3]))
    return total
