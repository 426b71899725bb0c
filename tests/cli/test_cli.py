"""The CLI end to end on the real PP-OCRv4 det model, and every bad-input path: one line, exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, invoke

SIZE = "160x160"   # text on rendered pages is legible at this size (smaller maps are near-empty)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    from converters.synthetic import write_calibration_folder
    d = tmp_path_factory.mktemp("calib")
    write_calibration_folder(d, 3, seed=3, kind="page", size=(160, 160))
    return d


@pytest.fixture(scope="module")
def det_pkg(det_model, calib_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "det.pkg"
    res = invoke("convert", det_model, "-o", out, "--wbits", 4, "--abits", 8, "--calib", calib_dir,
                 "--size", SIZE, "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--channels", "bgr",
                 "--quiet")
    assert res.exit_code == 0, res.output
    assert out.is_file()
    # the summary table names the size ratio and per-layer bits
    assert "ratio" in res.output.lower()
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    from converters.synthetic import write_calibration_folder
    d = tmp_path_factory.mktemp("page")
    write_calibration_folder(d, 1, seed=77, kind="page", size=(160, 160))
    return next(d.iterdir())


def test_inspect_text_and_json(det_pkg):
    res = invoke("inspect", det_pkg)
    assert res.exit_code == 0, res.output
    assert "sha256" in res.output and "QLinearConv" in res.output
    res = invoke("inspect", det_pkg, "--json")
    info = json.loads(res.output)
    assert info["size_bytes"] == det_pkg.stat().st_size
    layers = info["models"][0]["layers"]
    assert layers and any(L.get("wbits") == 4 for L in layers)
    assert info["models"][0]["preprocess"]["size"] == [160, 160]


@pytest.mark.parametrize("backend", ["numpy", "ort"])
def test_run_image_writes_npy_json_png(det_pkg, page, tmp_path, backend):
    out = tmp_path / "out"
    res = invoke("run", det_pkg, "--input", page, "--out", out, "--backend", backend)
    assert res.exit_code == 0, res.output
    npys = list(out.glob("*.npy"))
    assert len(npys) == 1
    prob = np.load(npys[0])
    assert prob.shape == (1, 1, 160, 160) and 0.0 <= prob.min() and prob.max() <= 1.0
    assert list(out.glob("*.png")), "a probability map gets a PNG"
    summary = json.loads((out / "result.json").read_text())
    assert summary["backend"] == backend


def test_backends_agree_on_page(det_pkg, page, tmp_path):
    outs = {}
    for backend in ("numpy", "ort"):
        d = tmp_path / backend
        assert invoke("run", det_pkg, "--input", page, "--out", d, "--backend", backend).exit_code == 0
        outs[backend] = np.load(next(d.glob("*.npy")))
    assert np.abs(outs["numpy"] - outs["ort"]).mean() < 0.02
    a, b = outs["numpy"] > 0.3, outs["ort"] > 0.3
    assert a.sum() > 100, "the page must produce a non-trivial text map"
    iou = (a & b).sum() / (a | b).sum()
    assert iou >= 0.9, iou   # int8 layers agree within 1 LSB each; differences compound over ~60 layers


def test_bench_json(det_pkg):
    res = invoke("bench", det_pkg, "--backend", "numpy", "--warmup", 0, "--iters", 2, "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["iters"] == 2 and r["latency_ms"]["p50"] > 0 and r["package_bytes"] == det_pkg.stat().st_size
    assert r["input_shapes"]["x"] == [1, 3, 160, 160]
    res = invoke("bench", det_pkg, "--backend", "ort", "--warmup", 1, "--iters", 3)
    assert res.exit_code == 0 and "p99" in res.output


def test_sign_verify_require(det_pkg, tmp_path):
    pkg = tmp_path / "signed.pkg"
    pkg.write_bytes(det_pkg.read_bytes())
    assert invoke("keygen", "--out", tmp_path / "k").exit_code == 0
    assert_one_line_error(invoke("verify", pkg), "sign")
    assert_one_line_error(invoke("run", pkg, "--input", "x.npy", "--require-signature"), "sign")
    assert invoke("sign", pkg, "--key", tmp_path / "k.key").exit_code == 0
    assert invoke("verify", pkg, "--key", tmp_path / "k.pub").exit_code == 0
    invoke("keygen", "--out", tmp_path / "other")
    assert_one_line_error(invoke("verify", pkg, "--key", tmp_path / "other.pub"))


def test_corrupt_and_truncated_package(det_pkg, tmp_path):
    data = bytearray(det_pkg.read_bytes())
    bad = tmp_path / "flip.pkg"
    data[len(data) // 2] ^= 0x10
    bad.write_bytes(bytes(data))
    assert_one_line_error(invoke("inspect", bad), str(bad))
    short = tmp_path / "short.pkg"
    short.write_bytes(det_pkg.read_bytes()[:1000])
    assert_one_line_error(invoke("run", short, "--input", "x.npy"))
    assert_one_line_error(invoke("inspect", tmp_path / "missing.pkg"))


def test_wrong_input_shape_and_dtype(det_pkg, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 4, 160, 160), np.float32))
    assert_one_line_error(invoke("run", det_pkg, "--input", x, "--backend", "numpy"), "dim 1")
    np.save(x, np.zeros((3, 160, 160), np.float32))
    assert_one_line_error(invoke("run", det_pkg, "--input", x, "--backend", "ort"), "rank")
    np.save(x, np.array(["a"]))
    assert_one_line_error(invoke("run", det_pkg, "--input", x), "dtype")


def test_unreadable_image(det_pkg, tmp_path):
    img = tmp_path / "broken.png"
    img.write_bytes(b"not a png at all")
    assert_one_line_error(invoke("run", det_pkg, "--input", img), "broken.png")


def test_missing_calibration_folder(det_model, tmp_path):
    out = tmp_path / "x.pkg"
    assert_one_line_error(invoke("convert", det_model, "-o", out, "--calib", tmp_path / "nope",
                                 "--size", SIZE, "--quiet"), "nope")
    assert not out.exists() and not list(tmp_path.glob("*.tmp")), "nothing half-written"


def test_unknown_op_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Mish", ["x"], ["y"], name="weird_node")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    src = tmp_path / "mish.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), src)
    res = invoke("convert", src, "-o", tmp_path / "m.pkg", "--calib-random", 2, "--quiet")
    assert_one_line_error(res, "Mish", "weird_node")


def test_no_camera_is_a_clear_error(det_pkg):
    pytest.importorskip("cv2")
    res = invoke("run", det_pkg, "--camera", "--camera-index", 57, "--frames", 1)
    assert_one_line_error(res, "camera")


# ---- issue 10 §5: what a new user tries first

def test_tiny_input_is_one_line_and_ort_prints_nothing(det_pkg, tmp_path, capfd):
    """A 1x3x7x7 array on the det package: edgert's one line (the recorded pad_multiple), exit 2,
    and not a byte from ONNX Runtime's own logger on the terminal."""
    import edgert
    from edgert.errors import InputError

    x = tmp_path / "tiny.npy"
    np.save(x, np.zeros((1, 3, 7, 7), np.float32))
    capfd.readouterr()
    res = invoke("run", det_pkg, "--input", x, "--backend", "ort")
    assert_one_line_error(res, "'x'", "height 7", "multiple of 32")
    out = capfd.readouterr()
    assert not out.out.strip() and not out.err.strip(), out
    # without the recorded multiple, shape propagation still refuses it in one line, before ORT
    sess = edgert.load(det_pkg, backend="ort")
    sess.graph.preprocess = None
    with pytest.raises(InputError, match="cannot run") as ei:
        sess.run(np.zeros((1, 3, 7, 7), np.float32))
    assert len(str(ei.value).splitlines()) == 1
    # and ORT's own failure, when reached, is silent too (its text is in the exception only)
    with pytest.raises(InputError, match="ort backend"):
        sess._exe.run({"x": np.zeros((1, 3, 7, 7), np.float32)})
    out = capfd.readouterr()
    assert "onnxruntime" not in out.err + out.out, out
    sess.close()


def test_pad_multiple_binds_dynamic_dims_only(tmp_path):
    from converters.package_writer import WriteOptions, write_package
    from tiny_pkg import tiny_graph

    g = tiny_graph()
    g.preprocess.pad_multiple = 8            # inputs [1, 3, "h", "w"]: h, w dynamic
    pkg = tmp_path / "tiny.pkg"
    write_package(pkg, [g], WriteOptions(zstd_level=1))
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 16, 12), np.float32))
    assert_one_line_error(invoke("run", pkg, "--input", x, "--backend", "numpy"),
                          "width 12", "multiple of 8")
    np.save(x, np.zeros((1, 3, 16, 24), np.float32))
    assert invoke("run", pkg, "--input", x, "--backend", "numpy").exit_code == 0
    g.inputs[0].shape = [1, 3, 12, 12]      # fixed dims: the model says what it takes
    g.outputs[0].shape = [1, 2, 12, 12]
    write_package(pkg, [g], WriteOptions(zstd_level=1))
    np.save(x, np.zeros((1, 3, 12, 12), np.float32))
    res = invoke("run", pkg, "--input", x, "--backend", "numpy")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("name,data", [
    ("notes.txt", b"remember: convert the det model at 640x640\n"),
    ("notes.onnx", b"# not a model, whatever the suffix says\n"),      # content, not suffix
    ("empty.onnx", b""),
])
def test_convert_a_non_model_names_what_edgert_reads(tmp_path, name, data):
    src = tmp_path / name
    src.write_bytes(data)
    # no calibration flags on purpose: the source is judged first
    res = invoke("convert", src, "-o", tmp_path / "x.pkg")
    assert_one_line_error(res, name, "not a model edgert can read", "ONNX")
    assert "calibration" not in res.output


def test_convert_a_tflite_file_says_what_it_is(tmp_path):
    src = tmp_path / "model.bin"
    src.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))     # flatbuffer root offset + identifier
    assert_one_line_error(invoke("convert", src, "-o", tmp_path / "x.pkg"), "TFLite", "ONNX")


@pytest.mark.slow
def test_convert_rec_with_random_calibration_and_size(rec_model, tmp_path):
    """`--size HxW` sizes random calibration inputs of a model with dynamic H / W (the rec model
    is [N, 3, ?, W]); the package keeps the dims dynamic and records the size."""
    out = tmp_path / "rec.pkg"
    res = invoke("convert", rec_model, "-o", out, "--calib-random", 2, "--size", "48x320",
                 "--quiet", "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(invoke("inspect", out, "--json").output)["models"][0]
    assert info["preprocess"]["size"] == [48, 320]
    assert info["preprocess"]["pad_multiple"] == 1, "48 is no multiple of 32: no padding rule"
    assert [d if isinstance(d, int) else None for d in info["inputs"][0]["shape"]] == \
        [None, 3, None, None]
    x = tmp_path / "line.npy"
    np.save(x, np.random.default_rng(0).standard_normal((1, 3, 48, 200)).astype(np.float32))
    res = invoke("run", out, "--input", x, "--backend", "ort")
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_convert_rec_with_input_shape(rec_model, tmp_path):
    out = tmp_path / "rec.pkg"
    res = invoke("convert", rec_model, "-o", out, "--calib-random", 2,
                 "--input-shape", "x:1x3x48x160", "--quiet", "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(invoke("inspect", out, "--json").output)["models"][0]
    assert info["inputs"][0]["shape"] == [1, 3, 48, 160]


def test_convert_rec_without_dims_names_the_flags(rec_model, tmp_path):
    res = invoke("convert", rec_model, "-o", tmp_path / "rec.pkg", "--calib-random", 2, "--quiet")
    assert_one_line_error(res, "'x'", "--input-shape x:1x3xHxW", "--size HxW")
    for bad in ("x1x3x48x320", "x:1x3x0x4", "x:1xAx4", ":1x3"):
        assert_one_line_error(invoke("convert", rec_model, "-o", tmp_path / "r.pkg",
                                     "--calib-random", 2, "--input-shape", bad), "--input-shape")
    assert_one_line_error(invoke("convert", rec_model, "-o", tmp_path / "r.pkg",
                                 "--calib-random", 2, "--input-shape", "y:1x3x48x320"),
                          "'y'", "not a model input")
