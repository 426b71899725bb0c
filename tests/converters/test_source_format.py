"""converters.source_format: a model source is judged by its content, before any other work."""
from __future__ import annotations

import pytest

from converters.source_format import check_source, sniff
from edgert.errors import ConversionError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _relu_model(path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(g), path)
    return path


def test_real_and_hand_made_onnx(det_model, tmp_path):
    assert sniff(det_model) == "onnx"
    assert sniff(_relu_model(tmp_path / "weird.suffix")) == "onnx"     # content, not suffix
    check_source(det_model)


@pytest.mark.parametrize("data,kind", [
    (b"", "unknown"),
    (b"plain text notes\n", "unknown"),
    (b"GGUF\x03\x00\x00\x00" + bytes(32), "gguf"),
    (b"\x1c\x00\x00\x00TFL3" + bytes(32), "tflite"),
])
def test_other_files(tmp_path, data, kind):
    p = tmp_path / "model.onnx"
    p.write_bytes(data)
    assert sniff(p) == kind
    with pytest.raises(ConversionError, match="model.onnx") as ei:
        check_source(p)
    assert "ONNX" in str(ei.value) and len(str(ei.value).splitlines()) == 1


def test_truncated_onnx_is_not_onnx(tmp_path):
    data = _relu_model(tmp_path / "m.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) - 5])          # the graph field runs past the end
    assert sniff(cut) == "unknown"


def test_unreadable_source(tmp_path):
    with pytest.raises(ConversionError, match="cannot read"):
        check_source(tmp_path / "missing.onnx")
