"""TFLite submissions on ai-edge-litert: the same function as an ONNX submission gives the same
predictions and metrics; static input sizes, NCHW, int8 / uint8 / float16 inputs; a bad model or a
failing interpreter is an `invalid` verdict with a one-line reason."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter", reason="TFLite submissions need ai-edge-litert")
pytest.importorskip("onnxruntime", reason="the ONNX reference needs onnxruntime")

from cli_helpers import assert_one_line_error, invoke  # noqa: E402
from edgert.errors import BackendUnavailable, EvalError  # noqa: E402
from edgert.eval.harness import evaluate  # noqa: E402
from edgert.eval.submission import open_submission  # noqa: E402
from edgert.eval.synthetic import write_synthetic_classification, write_synthetic_segmentation  # noqa: E402
from edgert.eval.types import EvalOptions  # noqa: E402
from eval_models import classifier, color_segmenter  # noqa: E402
from tflite_models import classifier_tflite, color_segmenter_tflite, offset_model_tflite  # noqa: E402

# centred input: this seed of the random per-pixel linear segmenter then predicts 7 classes on the
# synthetic set rather than one or two, so agreement is checked at many class boundaries
NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
SEG = {"seed": 3}
# dtype, (scale, zero point), normalisation.  int8 with scale 1/255, zero point -128 over [0, 1] pixels is
# TFLite's usual image input (exact); the centred ones span [-2, 2] in steps of 4/255, where each
# normalised pixel (p - 127.5) / 63.75 falls halfway between two codes: the worst case of input rounding
QUANT_INPUTS = {"int8": (np.int8, (1 / 255, -128), {}), "int8-centred": (np.int8, (4 / 255, 0), NORM),
                "uint8-centred": (np.uint8, (4 / 255, 128), NORM), "float16": (np.float16, None, NORM)}


def _run(model, data, **kw):
    """The record and every image's full-resolution prediction (the overlays carry them)."""
    run = evaluate(model, data, EvalOptions(warmup=0, energy=False, overlays=16, **kw))
    return run.record, [pred for *_, pred in run.overlays]


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    return write_synthetic_segmentation(tmp_path_factory.mktemp("seg") / "data", 4, size=64, seed=5)


@pytest.fixture(scope="module")
def onnx_ref(seg_data, tmp_path_factory):
    model = color_segmenter(tmp_path_factory.mktemp("onnx") / "m.onnx", **SEG)
    rec, preds = _run(model, seg_data, **NORM)
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) >= 5    # a non-trivial reference
    return rec, preds


@pytest.mark.parametrize("variant", [{}, {"layout": "nchw"}, {"hw": (64, 64)}],
                         ids=["resizable-nhwc", "resizable-nchw", "static-64"])
def test_tflite_matches_onnx(seg_data, onnx_ref, tmp_path, variant):
    ref, ref_preds = onnx_ref
    rec, preds = _run(color_segmenter_tflite(tmp_path / "m.tflite", **SEG, **variant), seg_data, **NORM)
    assert rec["verdict"]["status"] == "ok" and rec["submission"]["kind"] == "tflite"
    assert rec["submission"]["input_hw"] == [64, 64]
    assert len(preds) == len(ref_preds) == 4
    for p, r in zip(preds, ref_preds):
        assert p.shape == r.shape == (64, 64) and np.array_equal(p, r)
    for key in ("dice_mean", "miou", "pixel_accuracy"):
        assert rec["metrics"][key] == pytest.approx(ref["metrics"][key], abs=1e-6)
    assert rec["metrics"]["per_class"] == ref["metrics"]["per_class"]


def test_static_input_size_is_the_model_input(seg_data, tmp_path):
    """A static [1, 128, 128, 3] model gets images resized to 128x128, as ONNX does with --size 128x128;
    predictions are compared at the dataset's 64x64.  --size on a static model resizes its input."""
    onnx = color_segmenter(tmp_path / "m.onnx", **SEG)
    tfl = color_segmenter_tflite(tmp_path / "m.tflite", hw=(128, 128), **SEG)
    for size in (None, (96, 96)):
        rec, preds = _run(tfl, seg_data, size=size, **NORM)
        ref, ref_preds = _run(onnx, seg_data, size=size or (128, 128), **NORM)
        assert rec["submission"]["input_hw"] == list(size or (128, 128))
        assert rec["dataset"]["resolution"] == [64, 64]
        assert all(p.shape == (64, 64) and np.array_equal(p, r) for p, r in zip(preds, ref_preds))
        assert rec["metrics"]["dice_mean"] == pytest.approx(ref["metrics"]["dice_mean"], abs=1e-6)


@pytest.mark.parametrize("name", list(QUANT_INPUTS))
def test_quantized_and_half_inputs_agree_with_float(seg_data, tmp_path, name):
    dtype, quant, norm = QUANT_INPUTS[name]
    model = color_segmenter_tflite(tmp_path / "q.tflite", input_dtype=dtype, input_quant=quant, **SEG)
    pred = open_submission(model, EvalOptions(**norm))
    assert np.dtype(pred._in["dtype"]) == np.dtype(dtype)
    pred.close()
    rec, preds = _run(model, seg_data, **norm)
    assert rec["verdict"]["status"] == "ok"
    _, ref_preds = _run(color_segmenter(tmp_path / "m.onnx", **SEG), seg_data, **norm)
    agree = np.mean(np.concatenate([(p == r).ravel() for p, r in zip(preds, ref_preds)]))
    assert agree >= 0.99, f"{name}: {agree:.4f} of pixels agree with float"


def test_uint8_input_without_quantization_takes_raw_pixels(seg_data, tmp_path):
    raw = color_segmenter_tflite(tmp_path / "raw.tflite", input_dtype=np.uint8, input_quant=(0.0, 0), **SEG)
    flt = color_segmenter_tflite(tmp_path / "f.tflite", **SEG)
    (_, a), (_, b) = _run(raw, seg_data), _run(flt, seg_data)
    assert np.mean(np.concatenate([(p == r).ravel() for p, r in zip(a, b)])) >= 0.99


def test_classification_matches_onnx(tmp_path):
    data = write_synthetic_classification(tmp_path / "cls", n_per_class=2, size=32, classes=5, seed=1)
    opts = EvalOptions(task="classification", classes=5, warmup=0, energy=False)
    a = evaluate(classifier(tmp_path / "c.onnx", classes=5), data, opts).record
    for hw in (None, (32, 32)):
        b = evaluate(classifier_tflite(tmp_path / "c.tflite", classes=5, hw=hw), data, opts).record
        assert b["submission"]["kind"] == "tflite" and b["metrics"] == a["metrics"]


def test_bad_models_are_invalid(seg_data, tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all" * 8)
    with pytest.raises(EvalError, match="not a TFLite model"):
        evaluate(junk, seg_data, EvalOptions(energy=False))
    good = color_segmenter_tflite(tmp_path / "m.tflite").read_bytes()
    for name, data in (("truncated", good[: len(good) // 2]), ("scribbled", good[:8] + bytes(len(good) - 8))):
        bad = tmp_path / f"{name}.tflite"
        bad.write_bytes(data)
        with pytest.raises(EvalError, match="cannot load the model"):
            evaluate(bad, seg_data, EvalOptions(energy=False))
    static = color_segmenter_tflite(tmp_path / "s.tflite", hw=(64, 64))
    with pytest.raises(EvalError, match=r"as NCHW expected \[1, 3, H, W\]"):
        evaluate(static, seg_data, EvalOptions(energy=False, layout="nchw"))


def test_interpreter_failure_is_one_line_invalid(seg_data, tmp_path):
    """A fixed-size model runs at its own size; forced to another its ADD cannot broadcast, and the
    interpreter's RuntimeError becomes an EvalError (never a traceback)."""
    model = offset_model_tflite(tmp_path / "fixed.tflite", (64, 64))
    assert evaluate(model, seg_data, EvalOptions(warmup=0, energy=False)).record["submission"]["input_hw"] == [64, 64]
    with pytest.raises(EvalError, match="TFLite interpreter failed") as e:
        evaluate(model, seg_data, EvalOptions(warmup=0, energy=False, size=(48, 48)))
    assert "\n" not in str(e.value)


def test_no_interpreter_is_backend_unavailable(tmp_path, monkeypatch):
    model = color_segmenter_tflite(tmp_path / "m.tflite")
    for mod in ("ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter", "tensorflow",
                "tensorflow.lite"):
        monkeypatch.setitem(sys.modules, mod, None)      # None in sys.modules: that import raises ImportError
    with pytest.raises(BackendUnavailable, match="pip install ai-edge-litert"):
        open_submission(model, EvalOptions())


def test_cli_eval_tflite(seg_data, tmp_path):
    model = color_segmenter_tflite(tmp_path / "m.tflite", hw=(32, 32), **SEG)
    res = invoke("eval", model, "--dataset", seg_data, "--json", "--warmup", "1", "--mean", "0.5,0.5,0.5",
                 "--std", "0.25,0.25,0.25")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)
    assert rec["verdict"]["status"] == "ok" and rec["submission"]["kind"] == "tflite"
    assert rec["submission"]["input_hw"] == [32, 32] and rec["score"]["value"] > 0
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    assert_one_line_error(invoke("eval", junk, "--dataset", seg_data), "verdict invalid", "not a TFLite model")
