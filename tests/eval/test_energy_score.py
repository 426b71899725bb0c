"""Energy per image with a power sensor: a fake INA260 hwmon tree (tests/device_trees.py) under
`sensor_root`, the harness's own timing, and the accuracy_per_joule score built on both."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, invoke
from device_trees import build_pi4, build_pi4_ina260, set_power_uw, write
from edgert.errors import EvalError
from edgert.eval import harness, scoring
from edgert.eval.harness import evaluate
from edgert.eval.synthetic import write_synthetic_classification, write_synthetic_segmentation
from edgert.eval.types import EvalOptions
from eval_models import classifier, color_segmenter

INA_HWMON = "/sys/class/hwmon/hwmon1"      # build_pi4_ina260's INA260


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    return write_synthetic_segmentation(tmp_path_factory.mktemp("seg") / "data", 6, size=64, seed=5)


def _tolerance_j(power_w: float) -> float:
    """The record's rounding, nothing else: under a constant power each window is bracketed by
    samples of that power, so the meter's trapezoid gives exactly P·Δt.  per_image_ms is rounded to
    0.1 µs (the mean of them is off by at most 0.05 µs) and j_per_image to 1 nJ."""
    return power_w * 0.05e-6 + 0.5e-9 + 1e-12


def _timed_s(rec: dict) -> np.ndarray:
    return np.asarray(rec["timing"]["per_image_ms"]) / 1000.0


@pytest.fixture
def meters(monkeypatch) -> list:
    """The harness's EnergyMeter, as _open_meter makes it: tests wait on the meter's own samples."""
    made: list = []
    real = harness._open_meter

    def capture(sensor_root):
        made.append(real(sensor_root))
        return made[-1]

    monkeypatch.setattr(harness, "_open_meter", capture)
    return made


def _wait(cond, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"meter: no {what} within {timeout_s} s")
        time.sleep(0.002)


@pytest.mark.parametrize("task, region, power_uw", [("segmentation", "end-to-end", 2_000_000),
                                                    ("classification", "inference", 3_500_000)])
def test_constant_power_gives_power_times_time_and_the_score(task, region, power_uw, seg_data, tmp_path):
    root = build_pi4_ina260(tmp_path / "pi4", power_uw)
    if task == "segmentation":
        model, data, accuracy = color_segmenter(tmp_path / "m.onnx"), seg_data, "dice_mean"
        opts = EvalOptions(warmup=1, timed_region=region, score="accuracy_per_joule")
    else:
        data = write_synthetic_classification(tmp_path / "cls", n_per_class=2, size=32, classes=5, seed=1)
        model, accuracy = classifier(tmp_path / "c.onnx", classes=5), "top1"
        opts = EvalOptions(task="classification", classes=5, warmup=1, timed_region=region,
                           score="accuracy_per_joule")
    rec = evaluate(model, data, opts, sensor_root=root).record
    e, power_w = rec["energy"], power_uw / 1e6
    assert e["j_per_image"] == pytest.approx(power_w * _timed_s(rec).mean(), rel=0, abs=_tolerance_j(power_w))
    assert e["sensor"] == "ina2xx" and e["estimated"] is False
    assert e["images"] == rec["timing"]["images"] and "error" not in e
    assert e["clock"] == "time.perf_counter_ns" and e["sensor_root"] == str(root)
    # scoring.accuracy_of: mean Dice for segmentation, top-1 for classification
    acc = rec["metrics"][accuracy]
    assert acc is not None and acc > 0
    s = rec["score"]
    assert s["formula"] == "accuracy_per_joule" and s["higher_is_better"]
    assert s["inputs"] == {accuracy: acc, "j_per_image": e["j_per_image"], "energy_estimated": False}
    assert s["value"] == round(acc / e["j_per_image"], 6)


def test_a_power_step_is_integrated_on_each_side(seg_data, tmp_path, meters):
    """2 W for the first three images, 4 W for the last three.  The step is made while the harness
    waits in its progress callback, with a sample on each side of it, so every window is bracketed by
    samples of one power: no sleeps, no race with the meter's thread."""
    root = build_pi4_ina260(tmp_path / "pi4", 2_000_000)

    def progress(done: int, n: int) -> None:
        if done == 3:
            (meter,) = meters
            ended = time.perf_counter_ns()      # after the third window; the meter is on this clock
            _wait(lambda: meter.last_sample_ns > ended, "sample after the third image")   # 2 W: before the step
            set_power_uw(root, INA_HWMON, 4_000_000)
            _wait(lambda: meter.power_mw == 4000.0, "4 W sample")    # every later sample reads 4 W

    rec = evaluate(color_segmenter(tmp_path / "m.onnx"), seg_data, EvalOptions(warmup=0, score="accuracy_per_joule"),
                   progress, sensor_root=root).record
    dt = _timed_s(rec)
    expected = (2.0 * dt[:3].sum() + 4.0 * dt[3:].sum()) / 6
    assert rec["energy"]["j_per_image"] == pytest.approx(expected, rel=0, abs=_tolerance_j(4.0))
    assert rec["energy"]["images"] == 6


def test_sensor_gone_mid_run_leaves_no_partial_mean(seg_data, tmp_path, meters):
    root = build_pi4_ina260(tmp_path / "pi4", 2_000_000)

    def progress(done: int, n: int) -> None:
        if done == 2:
            ended = time.perf_counter_ns()
            _wait(lambda: meters[0].last_sample_ns > ended, "sample after the second image")
            for f in (root / INA_HWMON.lstrip("/")).iterdir():
                f.unlink()

    rec = evaluate(color_segmenter(tmp_path / "m.onnx"), seg_data, EvalOptions(warmup=0), progress,
                   sensor_root=root).record
    e = rec["energy"]
    assert e["j_per_image"] is None and e["images"] == 2
    assert e["error"].startswith("energy measured for 2 of 6 timed images (ina2xx: cannot read")
    with pytest.raises(EvalError, match="no usable power sensor .energy measured for 2 of 6"):
        scoring.score(rec, "accuracy_per_joule")
    from edgert.eval.report import write_report
    md = write_report(rec, tmp_path / "report")["markdown"].read_text()
    assert "Energy | n/a (energy measured for 2 of 6 timed images" in md


def test_utilisation_model_only_is_never_scored(seg_data, tmp_path):
    root = build_pi4(tmp_path / "pi4")          # /proc/stat, no power sensor: probe_all gives the model only
    model = color_segmenter(tmp_path / "m.onnx")
    with pytest.raises(EvalError, match="no usable power sensor"):
        evaluate(model, seg_data, EvalOptions(score="accuracy_per_joule"), sensor_root=root)
    with pytest.raises(EvalError, match="no usable power sensor"):
        harness.check_energy(EvalOptions(score="accuracy_per_joule"), root)
    with pytest.raises(EvalError, match="energy measurement is off"):
        harness.check_energy(EvalOptions(score="accuracy_per_joule", energy=False), root)
    harness.check_energy(EvalOptions(score="lpcvc2023"), root)     # a score without energy needs no sensor
    rec = evaluate(model, seg_data, EvalOptions(warmup=0, score="accuracy"), sensor_root=root).record
    assert rec["energy"] is None
    # a record carrying an estimate (from anywhere) is refused too
    with pytest.raises(EvalError, match="never scored"):
        scoring.score({**rec, "energy": {"j_per_image": 0.01, "estimated": True, "sensor": "utilisation"}},
                      "accuracy_per_joule")


def test_cli_energy_score_with_and_without_a_sensor(seg_data, tmp_path):
    model = color_segmenter(tmp_path / "m.onnx")
    bare = build_pi4(tmp_path / "bare")
    # refused before any child runs: the device's problem, not an invalid submission
    res = invoke("eval", model, "--dataset", seg_data, "--score", "accuracy_per_joule", "--sensor-root", bare)
    assert_one_line_error(res, "no usable power sensor")
    assert "verdict" not in res.output
    # isolated: the sensor root reaches the child through the request
    root = build_pi4_ina260(tmp_path / "pi4", 2_000_000)
    res = invoke("eval", model, "--dataset", seg_data, "--score", "accuracy_per_joule", "--sensor-root", root,
                 "--warmup", "1", "--json")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)
    assert rec["energy"]["sensor"] == "ina2xx" and rec["energy"]["sensor_root"] == str(root.resolve())
    assert rec["energy"]["j_per_image"] == pytest.approx(2.0 * _timed_s(rec).mean(), rel=0, abs=_tolerance_j(2.0))
    assert rec["score"]["value"] == round(rec["metrics"]["dice_mean"] / rec["energy"]["j_per_image"], 6)
    assert "--sensor-root" not in invoke("eval", "run", "--help").output        # a test seam, hidden


def test_ina_tree_helpers(tmp_path):
    from devices.sensors import probe_all

    root = build_pi4_ina260(tmp_path, 1_234_000)
    sensors = probe_all(root)
    assert [s.name for s in sensors] == ["ina2xx", "utilisation"] and sensors[0].read().power_mw == 1234.0
    set_power_uw(root, INA_HWMON, 5_000_000)
    assert sensors[0].read().power_mw == 5000.0
    write(root, {"/sys/class/hwmon/hwmon1/power1_input": "7000000\n"})
    assert sensors[0].read().power_mw == 7000.0
