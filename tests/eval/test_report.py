"""edgert.eval.report: the report folder of one result record."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgert.eval.report import PALETTE, colorize, overlay_panel, write_report

SUB_SHA = "ab" * 32
DATA_SHA = "cd" * 32


def _result(**over) -> dict:
    rng = np.random.default_rng(0)
    ms = [float(v) for v in rng.gamma(4.0, 3.0, 60)]
    per_class = [{"class": c, "dice": None if c == 5 else round(float(rng.random()), 4),
                  "iou": None if c == 5 else 0.5, "pixels": 0 if c == 5 else 1000 * (c + 1),
                  "images_present": 0 if c == 5 else 3} for c in range(14)]
    r = {
        "schema": 1,
        "verdict": {"status": "ok", "reason": ""},
        "submission": {"path": "/subs/team7/tinyseg.pkg", "sha256": SUB_SHA, "kind": "package",
                       "bytes": 5186},
        "dataset": {"path": "/data/uav-test", "sha256": DATA_SHA, "task": "segmentation",
                    "images": 60, "classes": 14},
        "device": {"kind": "x86_64", "model": "AMD EPYC 7B13", "arch": "x86_64", "cores": 2},
        "versions": {"edgert": "0.1.0", "numpy": "2.4.6", "onnxruntime": "1.31.1"},
        "timed_region": "end-to-end",
        "warmup": 5,
        "metrics": {"images": 60, "dice_mean": 0.6123, "miou": 0.48, "pixel_accuracy": 0.91,
                    "per_class": per_class},
        "timing": {"per_image_ms": ms, "mean_s": float(np.mean(ms)) / 1000,
                   "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                   "p99_ms": float(np.percentile(ms, 99)), "throughput_ips": 1000 / float(np.mean(ms)),
                   "total_s": float(np.sum(ms)) / 1000},
        "peak_rss_mb": 143.2,
        "energy": None,
        "score": {"formula": "lpcvc2023", "description": "accuracy / mean seconds per image",
                  "value": 51.0625, "higher_is_better": True,
                  "inputs": {"dice_mean": 0.6123, "mean_s": 0.01199}},
        "robustness": [
            {"variant": "jpeg_q30", "kind": "corruption", "severity": 3, "metric": "dice_mean",
             "value": 0.55, "delta": -0.0623},
            {"variant": "resize_bicubic", "kind": "system", "severity": 1, "metric": "dice_mean",
             "value": 0.615, "delta": 0.0027},
            {"variant": "broken", "kind": "system", "severity": 1, "metric": "dice_mean",
             "value": None, "delta": None}],
    }
    r.update(over)
    return r


def _overlays(n=2, hw=(96, 128), pred_hw=(48, 64)):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        lab = rng.integers(0, 14, hw).astype(np.uint8)
        pred = rng.integers(0, 14, pred_hw).astype(np.uint8)      # harness-size mismatch tolerated
        out.append((f"scene/{i}", img, lab, pred))
    return out


def _png_size(path):
    from PIL import Image
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_full_report(tmp_path):
    pytest.importorskip("matplotlib")
    files = write_report(_result(), tmp_path, _overlays(), class_names=[f"k{i}" for i in range(14)])
    for key in ("json", "markdown", "html", "latency_hist", "per_class_dice", "robustness",
                "overlay_scene_0", "overlay_scene_1"):
        assert files[key].is_file(), key
        assert files[key].parent == tmp_path
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in files.values()}
    for key in ("latency_hist", "per_class_dice", "robustness"):
        w, h = _png_size(files[key])
        assert 300 <= w <= 3000 and 150 <= h <= 3000, (key, w, h)
    assert _png_size(files["overlay_scene_0"]) == (3 * 128 + 2 * 4, 96)

    md = files["markdown"].read_text()
    assert "51.0625" in md and "lpcvc2023" in md and "higher is better" in md
    assert "end-to-end" in md and "5 warm-up images" in md
    assert SUB_SHA in md and DATA_SHA in md
    assert "AMD EPYC 7B13" in md and "onnxruntime 1.31.1" in md
    assert "0.6123" in md and "n/a (no power sensor)" in md
    assert "| 5 k5 | absent |" in md
    assert "jpeg_q30" in md and "-0.0623" in md and "+0.0027" in md
    for name in ("latency_hist.png", "per_class_dice.png", "robustness.png", "overlay_scene_0.png"):
        assert f"({name})" in md
        assert f"src='{name}'" in files["html"].read_text()

    back = json.loads(files["json"].read_text())
    assert back["submission"]["sha256"] == SUB_SHA
    assert back["timing"]["per_image_ms"] == pytest.approx(_result()["timing"]["per_image_ms"])


def test_minimal_record_does_not_crash(tmp_path):
    files = write_report({"verdict": {"status": "crashed", "reason": "exit code -9 (killed)"}}, tmp_path)
    assert set(files) == {"json", "markdown", "html"}
    md = files["markdown"].read_text()
    assert "crashed" in md and "exit code -9" in md
    assert "Score | n/a" in md and "Timed region | not stated" in md
    assert files["html"].read_text().startswith("<!doctype html>")


def test_partial_record_and_energy(tmp_path):
    r = _result(robustness=None, energy={"j_per_image": 0.0421, "estimated": True,
                                         "sensor": "utilisation-model"},
                timed_region="inference", warmup=1)
    del r["metrics"]["per_class"], r["timing"]["p99_ms"], r["device"]
    r["timing"]["per_image_ms"] = []
    files = write_report(r, tmp_path)
    assert "robustness" not in files and "latency_hist" not in files
    md = files["markdown"].read_text()
    assert "0.0421 J/image (estimated, utilisation-model)" in md
    assert "inference only" in md and "1 warm-up image " in md
    assert "No per-class metrics" in md and "/ n/a ms" in md


def test_classification_record(tmp_path):
    r = _result(metrics={"images": 50, "top1": 0.82, "top5": 0.97}, robustness=None)
    r["dataset"]["task"] = "classification"
    files = write_report(r, tmp_path)
    md = files["markdown"].read_text()
    assert "Top-1 | 0.8200" in md and "Top-5 | 0.9700" in md
    assert "Per-class" not in md and "per_class_dice" not in files


def test_nan_becomes_null_and_names_are_escaped(tmp_path):
    r = _result()
    r["metrics"]["dice_mean"] = float("nan")
    r["peak_rss_mb"] = np.float32(12.5)
    img, lab, pred = _overlays(1)[0][1:]
    files = write_report(r, tmp_path, [("<script>x</script>", img, lab, pred)])
    back = json.loads(files["json"].read_text(), parse_constant=lambda c: pytest.fail(c))
    assert back["metrics"]["dice_mean"] is None and back["peak_rss_mb"] == 12.5
    html = files["html"].read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert all(p.parent == tmp_path for p in files.values())


def test_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)         # `import matplotlib...` fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    files = write_report(_result(), tmp_path, _overlays(1))
    assert not any(k in files for k in ("latency_hist", "per_class_dice", "robustness"))
    assert not list(tmp_path.glob("latency_hist.png"))
    assert files["overlay_scene_0"].is_file()                    # overlays need only Pillow
    md = files["markdown"].read_text()
    assert "matplotlib is not installed" in md and "51.0625" in md
    assert "matplotlib is not installed" in files["html"].read_text()


def test_bad_overlay_is_an_eval_error(tmp_path):
    from edgert.errors import EvalError
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(EvalError, match="overlay 'x'"):
        write_report(_result(), tmp_path, [("x", img, np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8)))])


def test_overlay_panel_and_palette():
    assert len(PALETTE) == 14 and len({tuple(c) for c in PALETTE}) == 14
    lab = np.array([[0, 13], [255, 3]], np.uint8)
    rgb = colorize(lab)
    assert tuple(rgb[0, 0]) == tuple(PALETTE[0]) and tuple(rgb[0, 1]) == tuple(PALETTE[13])
    assert tuple(rgb[1, 0]) == (0, 0, 0)                          # ignore / out of palette
    img = np.zeros((4, 6, 3), np.uint8)
    panel = overlay_panel(img, np.zeros((4, 6), np.uint8), np.ones((2, 3), np.uint8), alpha=1.0, gap=2)
    assert panel.shape == (4, 3 * 6 + 2 * 2, 3)
    assert (panel[:, :6] == 0).all()
    assert (panel[:, 8:14] == PALETTE[0]).all() and (panel[:, 16:] == PALETTE[1]).all()
