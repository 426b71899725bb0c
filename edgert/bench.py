"""Latency benchmark of a loaded session: warm-up, then timed iterations with a monotonic clock."""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgert.errors import InputError
from edgert.ir import ValueInfo


@dataclass
class BenchOptions:
    warmup: int = 5
    iters: int = 50
    seed: int = 0


@dataclass
class BenchResult:
    backend: str
    warmup: int
    iters: int
    input_shapes: dict[str, list[int]]
    latency_ms: dict[str, float]          # p50, p90, p99, mean, min, max
    throughput_ips: float                 # inferences per second, 1 / mean latency
    peak_rss_mb: float
    package_bytes: int
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def concrete_shape(vi: ValueInfo, hw: tuple[int, int] | None, override: list[int] | None) -> list[int]:
    """A concrete shape for a graph input: fixed dims as declared, batch 1, spatial dims from `hw`."""
    if override is not None:
        if len(override) != len(vi.shape):
            raise InputError(f"--shape for {vi.name!r} has rank {len(override)}, the model wants "
                             f"{len(vi.shape)}")
        return list(override)
    out = []
    rank = len(vi.shape)
    for i, d in enumerate(vi.shape):
        if isinstance(d, int) and d > 0:
            out.append(d)
        elif i == 0:
            out.append(1)
        elif hw is not None and rank == 4 and i in (rank - 2, rank - 1):
            out.append(hw[i - (rank - 2)])
        else:
            raise InputError(f"input {vi.name!r} has a dynamic dim {i} ({d}); give --shape")
    return out


def synthetic_feeds(inputs: list[ValueInfo], hw: tuple[int, int] | None,
                    overrides: dict[str, list[int]] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in inputs:
        shape = concrete_shape(vi, hw, (overrides or {}).get(vi.name))
        dt = np.dtype(vi.dtype)
        if dt.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dt)
        else:
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(dt)
    return feeds


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


def run_bench(session, feeds: dict[str, np.ndarray], opts: BenchOptions, package_bytes: int = 0,
              progress=None) -> BenchResult:
    feeds = session.check_feeds(feeds)
    for _ in range(opts.warmup):
        session._exe.run(feeds)
    t_ns = np.empty(opts.iters, dtype=np.int64)
    for i in range(opts.iters):
        t0 = time.perf_counter_ns()
        session._exe.run(feeds)
        t_ns[i] = time.perf_counter_ns() - t0
        if progress:
            progress(i + 1)
    ms = t_ns / 1e6
    lat = {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
           "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()),
           "min": float(ms.min()), "max": float(ms.max())}
    return BenchResult(backend=session.backend, warmup=opts.warmup, iters=opts.iters,
                       input_shapes={k: list(v.shape) for k, v in feeds.items()},
                       latency_ms=lat, throughput_ips=1000.0 / lat["mean"] if lat["mean"] else 0.0,
                       peak_rss_mb=peak_rss_mb(), package_bytes=package_bytes)
