"""Small ONNX models for the eval tests: honest ones and hostile ones (hang, unbounded allocation,
wrong output, NaN).  Import as ``from eval_models import ...`` (tests/ is on sys.path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(graph, path: Path, opset: int = 13) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8          # what onnxruntime 1.17+ loads
    onnx.save(model, path)
    return path


def _vi(name, shape, elem=None):
    from onnx import TensorProto, helper
    return helper.make_tensor_value_info(name, elem or TensorProto.FLOAT, shape)


def color_segmenter(path: Path, classes: int = 14, seed: int = 0, scale: float = 1.0) -> Path:
    """A 1x1-conv 'segmenter' (per-pixel linear in RGB) with a 2x downsample/upsample."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((classes, 3, 1, 1)) * scale).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2, 2]),
             helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest")]
    return _save(helper.make_graph(nodes, "color", [_vi("x", [1, 3, "h", "w"])],
                                   [_vi("y", [1, classes, "h2", "w2"])], inits), path)


def classifier(path: Path, classes: int = 5, seed: int = 0) -> Path:
    """GlobalAveragePool over RGB then a linear layer: [1,3,h,w] -> [1,classes]."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((3, classes)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 3], np.int64), "shape")]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    return _save(helper.make_graph(nodes, "cls", [_vi("x", [1, 3, "h", "w"])], [_vi("y", [1, classes])], inits),
                 path)


def nan_segmenter(path: Path, classes: int = 14) -> Path:
    """Outputs log(-1) = NaN everywhere: a numerically broken submission."""
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.full((classes, 3, 1, 1), -1.0, np.float32), "w"),
             numpy_helper.from_array(np.full(classes, -10.0, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Log", ["c"], ["y"])]
    return _save(helper.make_graph(nodes, "nan", [_vi("x", [1, 3, "h", "w"])],
                                   [_vi("y", [1, classes, "h", "w"])], inits), path)


def hanging_model(path: Path) -> Path:
    """A Loop with a ~10^12 trip count: runs for days (a submission that hangs)."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("acc_in", [1])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("acc_out", [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    inits = [numpy_helper.from_array(np.array(10 ** 12, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "cond"),
             numpy_helper.from_array(np.zeros(1, np.float32), "acc0")]
    nodes = [helper.make_node("Loop", ["trips", "cond", "acc0"], ["acc"], body=body),
             helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Add", ["acc", "m"], ["y"])]
    return _save(helper.make_graph(nodes, "hang", [_vi("x", [1, 3, "h", "w"])], [_vi("y", [1])], inits), path)


def hungry_model(path: Path) -> Path:
    """ConstantOfShape of 10^12 floats (4 TB): a submission that allocates without bound."""
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([1, 14, 1_000_000, 1_000_000], np.int64), "shape")]
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=numpy_helper.from_array(np.ones(1, np.float32))),
             helper.make_node("ReduceMax", ["x"], ["m"], keepdims=1),
             helper.make_node("Add", ["big", "m"], ["y"])]
    return _save(helper.make_graph(nodes, "hungry", [_vi("x", [1, 3, "h", "w"])], [_vi("y", [1, 14, "a", "b"])],
                                   inits), path)
