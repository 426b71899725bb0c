"""Conv / ConvTranspose / MatMul / Gemm (the float oracle ops) vs onnxruntime on one-node models."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.ir import Node
from edgert.ops import get_op

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402


def run_ort(op: str, inputs: dict[str, np.ndarray], attrs: dict, opset: int = 17, n_out: int = 1):
    """Run a single ONNX node in onnxruntime; every input is a graph input."""
    names = list(inputs)
    node = helper.make_node(op, names, [f"y{i}" for i in range(n_out)], **attrs)
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in inputs.items()]
    outs = [onnx.ValueInfoProto(name=f"y{i}") for i in range(n_out)]
    graph = helper.make_graph([node], "g", vis, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def run_edgert(op: str, inputs: list, attrs: dict):
    node = Node(op, "n", [f"i{j}" if v is not None else "" for j, v in enumerate(inputs)], ["y"],
                dict(attrs))
    return get_op(node).run(*inputs)


def _both(op, inputs: dict, attrs, opset=17, rtol=1e-4, atol=1e-4):
    want = run_ort(op, inputs, attrs, opset)[0]
    got = run_edgert(op, list(inputs.values()), attrs)[0]
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return got


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


CONV_CASES = [
    # (x shape, w shape, attrs, bias)
    ((1, 3, 9, 9), (4, 3, 3, 3), {}, True),
    ((2, 4, 8, 7), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}, True),
    ((1, 6, 10, 10), (6, 1, 3, 3), {"group": 6, "pads": [1, 0, 2, 1], "strides": [2, 2]}, True),
    ((1, 4, 11, 9), (8, 1, 5, 5), {"group": 4, "pads": [2, 2, 2, 2], "dilations": [2, 1]}, False),
    ((1, 3, 12, 12), (5, 3, 3, 3), {"dilations": [2, 2], "strides": [1, 2]}, True),
    ((1, 3, 10, 11), (4, 3, 3, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True),
    ((1, 3, 10, 11), (4, 3, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [3, 2]}, False),
    ((1, 3, 10, 11), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 1]}, True),
    ((2, 3, 17), (4, 3, 3), {"pads": [1, 2], "strides": [2], "dilations": [2]}, True),
    ((1, 4, 16), (4, 1, 5), {"group": 4, "auto_pad": "SAME_UPPER"}, True),
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 3), {"pads": [0, 1, 1, 1, 0, 1]}, True),
    ((1, 8, 6, 6), (8, 8, 1, 1), {}, True),
]


@pytest.mark.parametrize("xs,ws,attrs,bias", CONV_CASES)
def test_conv_vs_ort(xs, ws, attrs, bias):
    rng = np.random.default_rng(hash((xs, ws)) & 0xFFFF)
    inputs = {"x": _rand(rng, *xs), "w": _rand(rng, *ws)}
    if bias:
        inputs["b"] = _rand(rng, ws[0])
    _both("Conv", inputs, attrs)


def test_conv_caches_weights_per_instance():
    rng = np.random.default_rng(1)
    x, w = _rand(rng, 1, 3, 8, 8), _rand(rng, 4, 3, 3, 3)
    op = get_op(Node("Conv", "c", ["x", "w"], ["y"], {"pads": [1, 1, 1, 1]}))
    y1 = op.run(x, w)[0]
    rows = op._w_rows
    y2 = op.run(x, w)[0]
    assert op._w_rows is rows
    np.testing.assert_array_equal(y1, y2)
    w2 = w * 2
    np.testing.assert_allclose(op.run(x, w2)[0], 2 * y1, rtol=1e-5, atol=1e-5)


CONVT_CASES = [
    ((1, 4, 5, 5), (4, 3, 2, 2), {"strides": [2, 2]}, True),               # PP-OCRv4 det head
    ((1, 4, 5, 6), (4, 2, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ((2, 4, 4, 4), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 0, 0, 1],
                                  "output_padding": [1, 1]}, False),
    ((1, 6, 4, 5), (6, 2, 3, 2), {"group": 3, "strides": [2, 1], "dilations": [2, 2]}, True),
    ((1, 4, 3, 3), (4, 1, 3, 3), {"group": 4, "strides": [3, 3]}, True),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [9, 10]}, True),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [8, 8]}, False),
    ((1, 2, 4, 5), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, True),
    ((1, 2, 4, 5), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, True),
    ((1, 3, 7), (3, 2, 4), {"strides": [3], "pads": [1, 2]}, True),
]


@pytest.mark.parametrize("xs,ws,attrs,bias", CONVT_CASES)
def test_convtranspose_vs_ort(xs, ws, attrs, bias):
    rng = np.random.default_rng(hash((xs, ws)) & 0xFFFF)
    inputs = {"x": _rand(rng, *xs), "w": _rand(rng, *ws)}
    if bias:
        inputs["b"] = _rand(rng, ws[1] * attrs.get("group", 1))
    _both("ConvTranspose", inputs, attrs)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                                   ((4,), (4, 3)), ((2, 3, 4), (4,)), ((1, 6), (2, 6, 3))])
def test_matmul_vs_ort(sa, sb):
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    _both("MatMul", {"a": _rand(rng, *sa), "b": _rand(rng, *sb)}, {})


@pytest.mark.parametrize("ta,tb,alpha,beta,cshape", [
    (0, 0, 1.0, 1.0, (5,)), (1, 0, 0.5, 2.0, (3, 5)), (0, 1, 1.0, 1.0, (3, 1)),
    (1, 1, 2.0, 0.0, (1, 5)), (0, 0, 1.0, 1.0, None), (0, 1, 1.5, -1.0, ())])
def test_gemm_vs_ort(ta, tb, alpha, beta, cshape):
    rng = np.random.default_rng(7)
    a = _rand(rng, *((4, 3) if ta else (3, 4)))
    b = _rand(rng, *((5, 4) if tb else (4, 5)))
    inputs = {"a": a, "b": b}
    if cshape is not None:
        inputs["c"] = _rand(rng, *cshape)
    _both("Gemm", inputs, {"transA": ta, "transB": tb, "alpha": alpha, "beta": beta})
