from pathlib import Path

import numpy as np
import pytest

from converters.calibration import ImageFolderReader, ListReader, RandomReader
from converters.convert import ConvertReport, convert, quantize_model
from converters.options import ConvertOptions
from converters.synthetic import render_text_line, render_text_page, write_calibration_folder
from edgert.errors import CalibrationError, ConversionError
from edgert.ir import Preprocess, ValueInfo
from edgert.preprocess import preprocess_array

MODELS = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/rapidocr_onnxruntime/models"
DET = MODELS / "ch_PP-OCRv4_det_infer.onnx"
DET_PP = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def test_synthetic_is_deterministic_and_shaped(tmp_path):
    a = render_text_page(np.random.default_rng(7), (64, 96))
    b = render_text_page(np.random.default_rng(7), (64, 96))
    assert a.shape == (64, 96, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a.min() < 100 < a.max()                   # some dark ink on a light page
    line = render_text_line(np.random.default_rng(1), "hello edge", height=32)
    assert line.shape[0] == 32 and line.shape[1] >= 32
    paths = write_calibration_folder(tmp_path / "c", 3, seed=2, kind="line")
    assert [p.name for p in paths] == ["line_0000.png", "line_0001.png", "line_0002.png"]


def test_image_folder_reader(tmp_path):
    write_calibration_folder(tmp_path, 5, seed=0, size=(40, 40))
    (tmp_path / "notes.txt").write_text("not an image")
    pp = Preprocess(size=(32, 32))
    r = ImageFolderReader(tmp_path, pp, "x", count=3)
    assert len(r) == 3 and [p.name for p in r.files] == [f"page_000{i}.png" for i in range(3)]
    feeds = list(r)
    from edgert.preprocess import preprocess_file
    np.testing.assert_array_equal(feeds[1]["x"], preprocess_file(tmp_path / "page_0001.png", pp))


def test_calibration_errors_name_the_path(tmp_path):
    with pytest.raises(CalibrationError, match="nowhere"):
        ImageFolderReader(tmp_path / "nowhere", Preprocess(), "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="empty"):
        ImageFolderReader(tmp_path / "empty", Preprocess(), "x")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(CalibrationError, match="broken.png"):
        list(ImageFolderReader(bad, Preprocess(size=(8, 8)), "x"))
    with pytest.raises(CalibrationError, match="'x'"):
        RandomReader([ValueInfo("x", "float32", [1, 3, "h", "w"])], 2)


def _small_onnx(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    r = np.random.default_rng(0)
    t = lambda n, a: numpy_helper.from_array(a.astype(np.float32), n)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [t("w1", r.standard_normal((8, 3, 3, 3)) * 0.3), t("b1", r.standard_normal(8) * 0.1),
         t("w2", r.standard_normal((8, 8, 1, 1)) * 0.3), t("wf", r.standard_normal((5, 8))),
         t("bf", r.standard_normal(5))])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_convert_small_model_random_calibration(tmp_path):
    pytest.importorskip("converters.package_writer", reason="package writer not landed")
    src = tmp_path / "small.onnx"
    _small_onnx(src)
    rep = convert(src, tmp_path / "small.pkg",
                  ConvertOptions(calib_random=4, progress=False, preprocess=Preprocess(size=(16, 16))))
    assert isinstance(rep, ConvertReport)
    assert rep.package_bytes == (tmp_path / "small.pkg").stat().st_size > 0
    assert rep.calibration_batches == 4
    assert [li.name for li in rep.layers] == ["conv1", "conv2", "fc"]
    assert all(li.sqnr_db is not None and li.sqnr_db > 20 for li in rep.layers)
    table = rep.format_table()
    assert "conv1" in table and "W8A8" in table and "SQNR" in table
    assert rep.to_json()["layers"][0]["fold"] == "Relu"
    from rich.console import Console
    Console(file=open(tmp_path / "t.txt", "w"), width=120).print(rep.rich_table())
    from edgert.package.reader import read_package
    pkg = read_package(tmp_path / "small.pkg")
    g = pkg.graph()
    assert g.preprocess == Preprocess(size=(16, 16))
    assert [n.op for n in g.nodes][:2] == ["QuantizeLinear", "QLinearConv"]
    assert g.initializers["w1__q"].dtype == np.int8
    pkg.close()


def test_convert_needs_calibration_data_and_valid_options(tmp_path):
    src = tmp_path / "small.onnx"
    _small_onnx(src)
    with pytest.raises(CalibrationError, match="calib"):
        convert(src, tmp_path / "o.pkg", ConvertOptions(progress=False))
    with pytest.raises(ConversionError, match="wbits"):
        convert(src, tmp_path / "o.pkg", ConvertOptions(wbits=9))


def _iou_mae(float_graph, qgraph, feeds_list):
    from edgert.backends.numpy_ref import NumpyExecutable
    fe, qe = NumpyExecutable(float_graph), NumpyExecutable(qgraph)
    out = float_graph.outputs[0].name
    ious, maes = [], []
    for feeds in feeds_list:
        a, b = fe.run(feeds)[out], qe.run(feeds)[out]
        ma, mb = a > 0.3, b > 0.3
        ious.append((ma & mb).sum() / max(1, (ma | mb).sum()))
        maes.append(float(np.abs(a - b).mean()))
    return float(np.mean(ious)), float(np.mean(maes))


@pytest.mark.slow
@pytest.mark.skipif(not DET.exists(), reason="rapidocr det model not installed")
def test_det_model_w8a8_agrees_with_float():
    from converters.onnx_import import ImportOptions, import_onnx
    size = 160                            # multiple of 32; big enough for readable rendered text
    pp = Preprocess(size=(size, size), mean=DET_PP.mean, std=DET_PP.std)
    g = import_onnx(DET, ImportOptions(input_shapes={"x": [1, 3, size, size]}))
    rng = np.random.default_rng(0)
    calib = [{"x": preprocess_array(render_text_page(rng, (size, size)), pp)} for _ in range(8)]
    rng = np.random.default_rng(123)
    test = [{"x": preprocess_array(render_text_page(rng, (size, size)), pp)} for _ in range(3)]
    res = quantize_model(g, ConvertOptions(preprocess=pp, progress=False), ListReader(calib))
    q = res.graph
    assert sum(n.op == "QLinearConv" for n in q.nodes) == 62
    assert res.graph.preprocess == pp
    iou, mae = _iou_mae(g, q, test)
    assert iou >= 0.85 and mae < 0.03, (iou, mae)
    sq = [li.sqnr_db for li in q.layers if li.sqnr_db is not None]
    assert len(sq) == 64 and np.median(sq) > 30
