"""The evaluation harness, in-process: time a submission per image, score it, build the result record.

What 2023's referee did wrong and this does instead (ANCHORS.md): the harness measures time itself,
with a monotonic clock, per image, after a stated number of warm-up images, over a stated timed region
(``end-to-end`` = decode + preprocess + inference + postprocess, or ``inference``), at the dataset's
resolution, comparing predictions at full resolution.  The isolation (child process, limits, timeout)
is isolation.py's job; this module is what runs inside the child.
"""
from __future__ import annotations

import datetime as dt
import platform
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgert.errors import EdgertError, EvalError, SensorError
from edgert.eval import scoring
from edgert.eval.types import RESULT_SCHEMA, TASKS, TIMED_REGIONS, EvalOptions
from edgert.versions import versions

MAX_OVERLAYS = 16


@dataclass
class EvalRun:
    """The record plus what the report needs but the JSON does not carry (overlay images)."""
    record: dict
    overlays: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


def _check_options(opts: EvalOptions) -> None:
    if opts.task not in TASKS:
        raise EvalError(f"unknown task {opts.task!r}; known: {', '.join(TASKS)}")
    if opts.timed_region not in TIMED_REGIONS:
        raise EvalError(f"unknown timed region {opts.timed_region!r}; known: {', '.join(TIMED_REGIONS)}")
    if opts.classes < 2:
        raise EvalError(f"classes must be >= 2, got {opts.classes}")
    if opts.warmup < 0 or opts.limit < 0:
        raise EvalError("warmup and limit must be >= 0")
    scoring.get(opts.score)


def _device() -> dict:
    try:
        from devices.detect import detect
        return detect().to_json()
    except (EdgertError, OSError) as e:
        return {"kind": platform.machine(), "error": str(e)}


def _real_sensors(sensor_root: Path) -> list:
    """The device's real power sensors, best first (opened); the utilisation model is an estimate
    and never scores, so it is closed and left out."""
    try:
        from devices.sensors import probe_all
        found = probe_all(Path(sensor_root))
    except (SensorError, OSError, ImportError):
        return []
    for s in found:
        if s.estimated:
            s.close()
    return [s for s in found if not s.estimated]


def has_power_sensor(sensor_root: str | Path = Path("/")) -> bool:
    """Whether this device can measure energy per image (a fleet worker says so when it comes online)."""
    sensors = _real_sensors(Path(sensor_root))
    for s in sensors:
        s.close()
    return bool(sensors)


def _open_meter(sensor_root: Path = Path("/")):
    """An energy meter on the device's real power sensors, best first, or None when it has none.
    It samples on the harness's own clock, time.perf_counter_ns, so timed windows and power samples
    need no conversion between clocks."""
    from devices.meter import EnergyMeter
    sensors = _real_sensors(sensor_root)
    if not sensors:
        return None
    meter = EnergyMeter(sensors, clock_ns=time.perf_counter_ns)
    meter.sample()          # a sample before the first timed window, whatever the thread's start-up
    return meter.start()


def check_energy(opts: EvalOptions, sensor_root: str | Path = Path("/")) -> None:
    """The referee's device, checked before any submission runs (as the dataset is): a score that
    needs energy on a device without a real power sensor is the harness's problem, not a verdict."""
    if not scoring.needs_energy(opts.score):
        return
    if not opts.energy:
        raise EvalError(f"score {opts.score} needs energy per image, and energy measurement is off")
    if not has_power_sensor(sensor_root):
        raise EvalError(f"score {opts.score} needs energy per image, and this device has no usable power sensor "
                        f"(probed under {sensor_root}; the utilisation model is an estimate, never scored)")


def _energy_meter_for(opts: EvalOptions, sensor_root: Path):
    """The meter for this evaluation: None when energy is off or the device has no real sensor,
    EvalError (saying why, from check_energy) when the score needs energy and cannot have it."""
    meter = _open_meter(sensor_root) if opts.energy else None
    if meter is None:
        check_energy(opts, sensor_root)
    return meter


class _WindowEnergy:
    """Joules per timed window, each integrated once the meter holds a sample after the window's end.

    The meter's thread samples at the sensor's rate (50 Hz for sysfs sensors): slower than a ms-long
    image.  A window is integrated from the samples bracketing it, power linear between them
    (devices/meter.py), never from the last power held past the newest sample.  Waiting for the
    thread's next sample costs the timing loop nothing: no sensor read between images."""

    def __init__(self, meter):
        self.meter = meter
        self.pending: deque[tuple[int, int]] = deque()
        self.windows: list = []     # devices.meter.EnergyWindow, in image order
        self.lost = 0               # windows the meter could not cover (sensor gone, history pruned)

    def add(self, t0_ns: int, t1_ns: int) -> None:
        self.pending.append((t0_ns, t1_ns))
        self._settle()

    def _settle(self) -> None:
        until = self.meter.last_sample_ns
        while self.pending and until is not None and self.pending[0][1] <= until:
            t0, t1 = self.pending.popleft()
            try:
                self.windows.append(self.meter.summarise(t0, t1))
            except SensorError:
                self.lost += 1

    def finish(self) -> dict:
        """The record's energy: mean J per timed image.  Unless every timed image was measured,
        j_per_image is None and `error` says why: a mean over some of the images is not per image."""
        self.meter.stop()
        if self.meter.sample() is not None:     # closes the last windows; None: the sensor is gone
            self._settle()
        self.lost += len(self.pending)
        self.pending.clear()
        names = list(dict.fromkeys(n for w in self.windows for n in w.sensor.split("+")))
        energy = {"j_per_image": None, "estimated": any(w.estimated for w in self.windows),
                  "sensor": "+".join(names or [self.meter.active_sensor.name]), "images": len(self.windows),
                  "clock": "time.perf_counter_ns"}
        if self.lost:
            why = "; ".join(self.meter.failures[-2:]) or "windows outside the meter's samples"
            energy["error"] = (f"energy measured for {len(self.windows)} of {len(self.windows) + self.lost} "
                               f"timed images ({why})")
        elif self.windows:
            # to the nJ: a 1 ms image at 2 W is 2 mJ, and the score divides by this figure
            energy["j_per_image"] = round(sum(w.joules for w in self.windows) / len(self.windows), 9)
        return energy


def _label_of(sample, task: str):
    from edgert.eval.dataset import read_label
    return read_label(sample.label) if task == "segmentation" else int(sample.label)


def _meter_for(opts: EvalOptions):
    from edgert.eval.metrics import ClassificationMeter, SegmentationMeter
    return SegmentationMeter(opts.classes) if opts.task == "segmentation" else ClassificationMeter(opts.classes)


def _pct(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 4)


def evaluate(submission: str | Path, dataset_root: str | Path, opts: EvalOptions = EvalOptions(),
             progress: Callable[[int, int], None] | None = None, *,
             sensor_root: str | Path = Path("/")) -> EvalRun:
    """Evaluate one submission on one dataset.  EdgertError (-> verdict invalid) for a bad submission.

    ``sensor_root``: where the power sensors are probed (devices.sensors.probe_all); a test seam for
    fake sysfs trees, "/" on a device."""
    from edgert.bench import peak_rss_mb
    from edgert.eval.dataset import open_dataset, read_image
    from edgert.eval.submission import open_submission

    _check_options(opts)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    wall0 = time.monotonic()
    ds = open_dataset(dataset_root, opts.task, opts.classes)
    samples = list(ds.samples[:opts.limit] if opts.limit else ds.samples)
    if not samples:
        raise EvalError(f"dataset {ds.root} has no samples")
    energy_meter = _energy_meter_for(opts, Path(sensor_root))    # no sensor for this score: before any image
    predictor = None
    try:
        predictor = open_submission(submission, opts)

        def run_one(sample):
            """One image through the pipeline: (prediction, t0, t_inf0, t_inf1, t1 in ns, decoded image)."""
            t0 = time.perf_counter_ns()
            img = read_image(sample.image)
            x = predictor.prepare(img)
            ti0 = time.perf_counter_ns()
            out = predictor.infer(x)
            ti1 = time.perf_counter_ns()
            pred = predictor.postprocess(out, img.shape[:2])
            t1 = time.perf_counter_ns()
            return pred, t0, ti0, ti1, t1, img

        for s in samples[:opts.warmup]:        # warm-up: untimed, unscored (stated in the record)
            run_one(s)
        meter = _meter_for(opts)
        timed_ns = np.empty(len(samples), dtype=np.int64)
        harness_ns = np.empty(len(samples), dtype=np.int64)
        scoring_ns = np.empty(len(samples), dtype=np.int64)
        energy = _WindowEnergy(energy_meter) if energy_meter is not None else None
        overlays = []
        for i, s in enumerate(samples):
            loop0 = time.perf_counter_ns()
            pred, t0, ti0, ti1, t1, img = run_one(s)
            if opts.timed_region == "inference":
                a, b = ti0, ti1
            else:
                a, b = t0, t1
            timed_ns[i] = b - a
            sc0 = time.perf_counter_ns()
            label = _label_of(s, opts.task)
            meter.add(pred, label)
            scoring_ns[i] = time.perf_counter_ns() - sc0
            if opts.task == "segmentation" and len(overlays) < min(opts.overlays, MAX_OVERLAYS):
                overlays.append((s.name, img, label, pred))
            if energy is not None:
                energy.add(a, b)        # the meter samples on perf_counter_ns too: same clock
            # the harness's own per-image bookkeeping: outside the submission's pipeline and scoring
            harness_ns[i] = (time.perf_counter_ns() - loop0) - (t1 - t0) - scoring_ns[i]
            if progress is not None:
                progress(i + 1, len(samples))
        metrics = meter.result()
        ms = timed_ns / 1e6
        timing = {"images": len(samples), "per_image_ms": [round(float(v), 4) for v in ms],
                  "mean_s": round(float(ms.mean()) / 1000.0, 7), "p50_ms": _pct(ms, 50), "p90_ms": _pct(ms, 90),
                  "p99_ms": _pct(ms, 99), "min_ms": round(float(ms.min()), 4), "max_ms": round(float(ms.max()), 4),
                  "throughput_ips": round(1000.0 / float(ms.mean()), 3) if ms.mean() > 0 else None,
                  "total_s": round(float(ms.sum()) / 1000.0, 4),
                  "harness_overhead_ms_mean": round(float(harness_ns.mean()) / 1e6, 4),
                  "scoring_ms_mean": round(float(scoring_ns.mean()) / 1e6, 4),
                  "clock": "time.perf_counter_ns (monotonic)"}
        energy_record = energy.finish() if energy is not None else None
        if energy_record is not None and Path(sensor_root).resolve() != Path("/"):
            energy_record["sensor_root"] = str(sensor_root)     # a fake tree: say so in the record
        record = {
            "schema": RESULT_SCHEMA,
            "verdict": {"status": "ok", "reason": ""},
            "submission": {"path": str(predictor.path), "sha256": predictor.sha256, "kind": predictor.kind,
                           "bytes": predictor.bytes, "input_hw": list(predictor.input_hw(img.shape[:2]))},
            "dataset": {"path": str(ds.root), "sha256": ds.sha256, "task": ds.task, "images": len(samples),
                        "classes": opts.classes, "resolution": list(img.shape[:2]),
                        "class_names": list(ds.class_names) or None},
            "device": _device(), "versions": versions("onnxruntime", "pillow", "opencv-python-headless"), "options": opts.to_json(),
            "timed_region": opts.timed_region, "warmup": min(opts.warmup, len(samples)),
            "metrics": metrics, "timing": timing, "peak_rss_mb": round(peak_rss_mb(), 1), "energy": energy_record,
            "robustness": None, "started_utc": started,
        }
        if opts.robustness:
            record["robustness"] = robustness_suite(predictor, samples, opts, metrics)
        record["score"] = scoring.score(record, opts.score)
        record["wall_s"] = round(time.monotonic() - wall0, 3)
        return EvalRun(record, overlays)
    finally:
        if energy_meter is not None:
            energy_meter.close()
        if predictor is not None:
            predictor.close()


def robustness_suite(predictor, samples, opts: EvalOptions, clean_metrics: dict) -> list[dict]:
    """Accuracy under corruptions and system-noise variants (untimed), as a change from clean."""
    from edgert.eval.dataset import read_image
    from edgert.eval.robustness import suite

    key = "dice_mean" if opts.task == "segmentation" else "top1"
    clean = clean_metrics[key]
    rows = []
    for variant in suite():
        rng = np.random.default_rng(0)
        meter = _meter_for(opts)
        for s in samples:
            img = read_image(s.image, decoder=variant.decoder or "pil")
            img = variant.apply(img, rng)
            x = predictor.prepare(img, interpolation=variant.resize_interpolation or "bilinear")
            pred = predictor.postprocess(predictor.infer(x), img.shape[:2])
            meter.add(pred, _label_of(s, opts.task))
        value = meter.result()[key]
        rows.append({"variant": variant.name, "kind": variant.kind, "severity": variant.severity, "metric": key,
                     "value": value, "delta": None if value is None or clean is None else round(value - clean, 6)})
    return rows


def dry_run(submission: str | Path, dataset_root: str | Path, opts: EvalOptions = EvalOptions()) -> dict:
    """The entrant-side check before submitting: loads, validates, runs one image, checks the output."""
    from edgert.eval.dataset import open_dataset, read_image
    from edgert.eval.submission import open_submission

    _check_options(opts)
    ds = open_dataset(dataset_root, opts.task, opts.classes, check="quick")
    predictor = open_submission(submission, opts)
    try:
        s = ds.samples[0]
        img = read_image(s.image)
        t0 = time.perf_counter()
        pred = predictor.postprocess(predictor.infer(predictor.prepare(img)), img.shape[:2])
        ms = (time.perf_counter() - t0) * 1000
        meter = _meter_for(opts)
        meter.add(pred, _label_of(s, opts.task))
        return {"sha256": predictor.sha256, "kind": predictor.kind, "bytes": predictor.bytes, "image": s.name,
                "ms": round(ms, 3), "metrics": meter.result()}
    finally:
        predictor.close()
