"""Conformance of the numpy reference float / shape ops against onnxruntime on one-node models.

Each case is built as an ONNX model with onnx.helper at a given opset, run in onnxruntime (the
reference), and the same node is run through edgert's op; attributes go through onnx and back to
plain Python values, as the converter hands them over."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.errors import InputError, UnsupportedOp
from edgert.ir import Node
from edgert.ops import get_op

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(0)


def f32(*shape, lo=-3.0, hi=3.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def i64(*vals):
    return np.array(vals, dtype=np.int64)


def fs(*vals):
    return np.array(vals, dtype=np.float32)


def plain_attrs(node: onnx.NodeProto) -> dict:
    """ONNX attributes -> JSON-style Python values (str for bytes, tensor literal dicts)."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            arr = numpy_helper.to_array(v)
            v = {"dtype": str(arr.dtype), "data": arr.reshape(-1).tolist(),
                 "shape": list(arr.shape)}
        elif isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def run_both(op, inputs, attrs=None, opset=17, n_out=1, reference="ort"):
    """(edgert's outputs, the reference's): onnxruntime, or with reference="onnx" the ONNX
    reference evaluator (for the few cases where onnxruntime departs from it)."""
    attrs = attrs or {}
    in_names = [f"x{i}" if v is not None else "" for i, v in enumerate(inputs)]
    while in_names and in_names[-1] == "":
        in_names.pop()
    out_names = [f"y{i}" for i in range(n_out)]
    proto = helper.make_node(op, in_names, out_names, name=f"{op}_node", **attrs)
    feeds = {n: v for n, v in zip(in_names, inputs) if n}
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in feeds.items()]
    outs = [onnx.ValueInfoProto(name=n) for n in out_names]
    model = helper.make_model(helper.make_graph([proto], "g", vis, outs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8 if opset < 15 else 9 if opset < 19 else 10)
    if reference == "onnx":
        from onnx.reference import ReferenceEvaluator
        want = ReferenceEvaluator(model).run(None, feeds)
    else:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        want = sess.run(None, feeds)
    node = Node(op=op, name=proto.name, inputs=in_names, outputs=out_names,
                attrs=plain_attrs(proto))
    got = get_op(node).run(*inputs[:len(in_names)])
    return got, want


def check(op, inputs, attrs=None, opset=17, n_out=1, exact=False, reference="ort", atol=1e-6):
    got, want = run_both(op, inputs, attrs, opset, n_out, reference)
    assert len(got) >= n_out
    for g, w in zip(got[:n_out], want):
        g = np.asarray(g)
        assert g.shape == w.shape, (g.shape, w.shape)
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        if exact or not np.issubdtype(w.dtype, np.floating):
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=atol)


X4 = f32(2, 3, 5, 4)
POS = f32(2, 3, 4, lo=0.1, hi=4.0)
IMG = f32(1, 2, 7, 9)

# (id, op, inputs, attrs, opset, n_out)
CASES = [
    # ---- elementwise binary, broadcasting
    ("add_bcast", "Add", [f32(2, 3, 4), f32(3, 1)], {}, 13, 1),
    ("add_scalar", "Add", [f32(2, 3), np.array(1.5, np.float32)], {}, 7, 1),
    ("sub_bcast", "Sub", [f32(4, 1, 5), f32(1, 3, 1)], {}, 14, 1),
    ("mul_bcast", "Mul", [f32(2, 3, 4), f32(4)], {}, 14, 1),
    ("div_float", "Div", [f32(2, 3), f32(2, 3, lo=0.5, hi=2)], {}, 14, 1),
    ("div_int", "Div", [i64(7, -7, 7, -7, 9), i64(2, 2, -2, -2, 3)], {}, 14, 1),
    ("pow_float", "Pow", [POS, fs(2.0, 0.5, -1.0, 3.0)], {}, 15, 1),
    ("pow_int_exp", "Pow", [POS, i64(2)], {}, 15, 1),
    ("pow_f64_exp", "Pow", [POS, np.array([0.5], np.float64)], {}, 12, 1),
    ("max_var", "Max", [f32(3, 4), f32(4), f32(1, 1)], {}, 13, 1),
    ("min_var", "Min", [f32(3, 4), f32(3, 1)], {}, 13, 1),
    ("max_one", "Max", [f32(3, 4)], {}, 8, 1),
    ("equal", "Equal", [i64(1, 2, 3, 4), i64(1, 0, 3, 5)], {}, 13, 1),
    ("less", "Less", [f32(2, 3), f32(3)], {}, 13, 1),
    ("greater", "Greater", [f32(2, 3), f32(2, 1)], {}, 13, 1),
    ("where", "Where", [RNG.random((2, 3)) > 0.5, f32(2, 3), f32(3)], {}, 16, 1),
    ("not", "Not", [RNG.random((5,)) > 0.5], {}, 1, 1),
    # ---- elementwise unary
    ("sqrt", "Sqrt", [POS], {}, 13, 1),
    ("relu", "Relu", [X4], {}, 14, 1),
    ("sigmoid", "Sigmoid", [f32(50, lo=-100, hi=100)], {}, 13, 1),
    ("tanh", "Tanh", [X4], {}, 13, 1),
    ("erf", "Erf", [f32(1000, lo=-5, hi=5)], {}, 13, 1),
    ("exp", "Exp", [X4], {}, 13, 1),
    ("neg", "Neg", [X4], {}, 13, 1),
    ("floor", "Floor", [X4], {}, 13, 1),
    ("ceil", "Ceil", [X4], {}, 13, 1),
    ("round_half_even", "Round", [fs(0.5, 1.5, 2.5, -0.5, -1.5, 1.2, -2.7)], {}, 11, 1),
    ("identity", "Identity", [X4], {}, 16, 1),
    ("hardsigmoid", "HardSigmoid", [X4], {}, 6, 1),
    ("hardsigmoid_attrs", "HardSigmoid", [X4], {"alpha": 0.3, "beta": 0.4}, 6, 1),
    ("hardswish", "HardSwish", [f32(40, lo=-5, hi=5)], {}, 14, 1),
    # ---- Clip: attrs (opset 6) vs inputs (11+)
    ("clip6", "Clip", [X4], {"min": -1.0, "max": 0.5}, 6, 1),
    ("clip6_default", "Clip", [X4], {}, 6, 1),
    ("clip12", "Clip", [X4, fs(-1.0).reshape(()), fs(0.5).reshape(())], {}, 12, 1),
    ("clip12_min_only", "Clip", [X4, fs(0.0).reshape(())], {}, 12, 1),
    ("clip13_max_only", "Clip", [X4, None, fs(6.0).reshape(())], {}, 13, 1),
    # ---- Softmax
    ("softmax13", "Softmax", [X4], {}, 13, 1),
    ("softmax13_axis1", "Softmax", [X4], {"axis": 1}, 13, 1),
    ("softmax11_last", "Softmax", [X4], {"axis": -1}, 11, 1),
    # ---- pooling
    ("gap", "GlobalAveragePool", [X4], {}, 1, 1),
    ("avgpool_basic", "AveragePool", [IMG], {"kernel_shape": [2, 2]}, 11, 1),
    ("avgpool_pads", "AveragePool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2],
                                            "pads": [1, 1, 1, 1]}, 11, 1),
    ("avgpool_pads_incl", "AveragePool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                 "pads": [1, 0, 1, 2],
                                                 "count_include_pad": 1}, 11, 1),
    ("avgpool_ceil", "AveragePool", [IMG], {"kernel_shape": [2, 2], "strides": [2, 2],
                                            "ceil_mode": 1}, 11, 1),
    ("avgpool_ceil_incl", "AveragePool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                 "ceil_mode": 1, "pads": [1, 1, 1, 1],
                                                 "count_include_pad": 1}, 19, 1),
    ("avgpool_same_upper", "AveragePool", [IMG], {"kernel_shape": [3, 2], "strides": [2, 2],
                                                  "auto_pad": "SAME_UPPER"}, 11, 1),
    ("avgpool_same_lower", "AveragePool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 1],
                                                  "auto_pad": "SAME_LOWER"}, 11, 1),
    ("avgpool_valid", "AveragePool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2],
                                             "auto_pad": "VALID"}, 11, 1),
    ("avgpool_1d", "AveragePool", [f32(2, 3, 11)], {"kernel_shape": [3], "strides": [2],
                                                    "pads": [1, 1]}, 11, 1),
    ("avgpool_dil", "AveragePool", [IMG], {"kernel_shape": [2, 2], "dilations": [2, 2],
                                           "pads": [1, 1, 1, 1]}, 19, 1),
    ("maxpool_basic", "MaxPool", [IMG], {"kernel_shape": [2, 2], "strides": [2, 2]}, 12, 1),
    ("maxpool_pads", "MaxPool", [IMG], {"kernel_shape": [3, 3], "strides": [1, 1],
                                        "pads": [1, 1, 1, 1]}, 12, 1),
    ("maxpool_ceil", "MaxPool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2],
                                        "ceil_mode": 1}, 12, 1),
    ("maxpool_ceil_pads", "MaxPool", [IMG], {"kernel_shape": [2, 2], "strides": [2, 2],
                                             "ceil_mode": 1, "pads": [1, 0, 1, 0]}, 12, 1),
    ("maxpool_same", "MaxPool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2],
                                        "auto_pad": "SAME_UPPER"}, 12, 1),
    ("maxpool_same_lower", "MaxPool", [IMG], {"kernel_shape": [2, 2], "strides": [2, 2],
                                              "auto_pad": "SAME_LOWER"}, 12, 1),
    ("maxpool_dil", "MaxPool", [IMG], {"kernel_shape": [2, 3], "dilations": [2, 1],
                                       "pads": [1, 1, 0, 1]}, 12, 1),
    ("maxpool_idx", "MaxPool", [f32(2, 3, 6, 7)], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                   "pads": [1, 1, 1, 1]}, 12, 2),
    ("maxpool_idx_col", "MaxPool", [f32(2, 3, 6, 7)], {"kernel_shape": [2, 2], "strides": [2, 2],
                                                       "storage_order": 1}, 12, 2),
    ("maxpool_int8", "MaxPool", [RNG.integers(-128, 127, (1, 2, 6, 6)).astype(np.int8)],
     {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]}, 12, 1),
    # ---- reductions: axes attr (old) vs input (new), empty axes, noop
    ("rmean_attr", "ReduceMean", [X4], {"axes": [1, -1]}, 13, 1),
    ("rmean_attr_nokeep", "ReduceMean", [X4], {"axes": [2], "keepdims": 0}, 11, 1),
    ("rmean_all", "ReduceMean", [X4], {}, 13, 1),
    ("rmean_input", "ReduceMean", [X4, i64(-2, 1)], {}, 18, 1),
    ("rmean_empty_all", "ReduceMean", [X4, np.zeros(0, np.int64)], {"keepdims": 0}, 18, 1),
    ("rmean_noop", "ReduceMean", [X4, np.zeros(0, np.int64)], {"noop_with_empty_axes": 1}, 18, 1),
    ("rmax_attr", "ReduceMax", [X4], {"axes": [0, 2]}, 13, 1),
    ("rmax_input", "ReduceMax", [X4, i64(3)], {"keepdims": 0}, 18, 1),
    ("rsum_attr", "ReduceSum", [X4], {"axes": [1]}, 11, 1),
    ("rsum_input", "ReduceSum", [X4, i64(-1, 0)], {}, 13, 1),
    ("rsum_noaxes", "ReduceSum", [X4], {"keepdims": 0}, 13, 1),
    ("rsum_noop", "ReduceSum", [X4], {"noop_with_empty_axes": 1}, 13, 1),
    ("rsum_int", "ReduceSum", [i64(1, 2, 3, 4).reshape(2, 2), i64(1)], {}, 13, 1),
    # ---- shape ops
    ("concat", "Concat", [f32(2, 3), f32(2, 1), f32(2, 4)], {"axis": -1}, 13, 1),
    ("reshape", "Reshape", [X4, i64(0, -1, 4)], {}, 14, 1),
    ("reshape_allowzero", "Reshape", [X4, i64(6, 5, 4)], {"allowzero": 1}, 14, 1),
    ("transpose", "Transpose", [X4], {"perm": [0, 2, 3, 1]}, 13, 1),
    ("transpose_default", "Transpose", [X4], {}, 13, 1),
    ("slice10", "Slice", [X4, i64(1, -3), i64(100, -1), i64(1, 2)], {}, 10, 1),
    ("slice13_steps", "Slice", [X4, i64(-1, 0), i64(-100, 9223372036854775807), i64(2, 3),
                                i64(-2, 2)], {}, 13, 1),
    ("slice13_noaxes", "Slice", [X4, i64(0, 1), i64(1, 3)], {}, 13, 1),
    ("slice1_attrs", "Slice", [X4], {"starts": [1, 0], "ends": [3, -1], "axes": [1, 3]}, 1, 1),
    ("squeeze11", "Squeeze", [f32(1, 3, 1, 2)], {"axes": [0, -2]}, 11, 1),
    ("squeeze11_all", "Squeeze", [f32(1, 3, 1, 2)], {}, 11, 1),
    ("squeeze13", "Squeeze", [f32(1, 3, 1, 2), i64(2)], {}, 13, 1),
    ("squeeze13_all", "Squeeze", [f32(1, 3, 1, 2)], {}, 13, 1),
    ("unsqueeze11", "Unsqueeze", [f32(3, 2)], {"axes": [0, -1]}, 11, 1),
    ("unsqueeze13", "Unsqueeze", [f32(3, 2), i64(1, 3)], {}, 13, 1),
    ("unsqueeze13_neg", "Unsqueeze", [f32(3, 2), i64(-1, 0)], {}, 13, 1),
    ("shape", "Shape", [X4], {}, 13, 1),
    ("shape15_slice", "Shape", [X4], {"start": 1, "end": -1}, 15, 1),
    ("shape15_neg", "Shape", [X4], {"start": -2}, 15, 1),
    ("flatten", "Flatten", [X4], {}, 13, 1),
    ("flatten_axis0", "Flatten", [X4], {"axis": 0}, 13, 1),
    ("flatten_neg", "Flatten", [X4], {"axis": -1}, 13, 1),
    ("gather0", "Gather", [X4, i64(1, 0, -1)], {}, 13, 1),
    ("gather_axis", "Gather", [X4, np.array([[0, 2], [-1, 1]], np.int64)], {"axis": 2}, 13, 1),
    ("gather_scalar", "Gather", [X4, np.array(2, np.int64)], {"axis": 3}, 13, 1),
    ("gather_int32", "Gather", [X4, np.array([1], np.int32)], {"axis": 1}, 13, 1),
    ("split11_attr", "Split", [f32(2, 6)], {"axis": 1, "split": [1, 2, 3]}, 11, 3),
    ("split11_equal", "Split", [f32(6, 2)], {}, 11, 3),
    ("split13_input", "Split", [f32(2, 6), i64(4, 2)], {"axis": -1}, 13, 2),
    ("split18_num", "Split", [f32(2, 7)], {"axis": 1, "num_outputs": 3}, 18, 3),
    ("expand", "Expand", [f32(3, 1), i64(2, 1, 4)], {}, 13, 1),
    ("expand_smaller", "Expand", [f32(2, 3), i64(3)], {}, 13, 1),
    ("tile", "Tile", [f32(2, 3), i64(2, 3)], {}, 13, 1),
    ("range_int", "Range", [np.array(2, np.int64), np.array(11, np.int64),
                            np.array(3, np.int64)], {}, 11, 1),
    ("range_float", "Range", [np.array(0.5, np.float32), np.array(-2.0, np.float32),
                              np.array(-0.3, np.float32)], {}, 11, 1),
    ("range_empty", "Range", [np.array(5, np.int64), np.array(1, np.int64),
                              np.array(1, np.int64)], {}, 11, 1),
    ("cos_default", "ConstantOfShape", [i64(2, 3)], {}, 9, 1),
    ("cos_int", "ConstantOfShape", [i64(3)],
     {"value": helper.make_tensor("v", onnx.TensorProto.INT64, [1], [7])}, 9, 1),
    ("cos_float", "ConstantOfShape", [i64(2, 1)],
     {"value": helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [0.25])}, 9, 1),
    ("cast_f2i", "Cast", [fs(1.7, -1.7, 2.5, -0.2)], {"to": onnx.TensorProto.INT64}, 13, 1),
    ("cast_i2f", "Cast", [i64(1, -3, 5)], {"to": onnx.TensorProto.FLOAT}, 13, 1),
    ("cast_f2b", "Cast", [fs(0.0, 1.5, -2.0)], {"to": onnx.TensorProto.BOOL}, 13, 1),
    ("cast_f2h", "Cast", [X4], {"to": onnx.TensorProto.FLOAT16}, 13, 1),
    ("argmax", "ArgMax", [X4], {}, 13, 1),
    ("argmax_axis", "ArgMax", [X4], {"axis": -1, "keepdims": 0}, 13, 1),
    ("argmax_last", "ArgMax", [np.array([[1, 3, 3], [2, 2, 0]], np.float32)],
     {"axis": 1, "select_last_index": 1}, 13, 1),
    ("argmax_first", "ArgMax", [np.array([[1, 3, 3], [2, 2, 0]], np.float32)], {"axis": 1}, 13, 1),
    ("constant_float", "Constant", [], {"value_float": 2.5}, 13, 1),
    ("constant_ints", "Constant", [], {"value_ints": [1, 2, 3]}, 13, 1),
    ("constant_int", "Constant", [], {"value_int": 4}, 13, 1),
    ("constant_floats", "Constant", [], {"value_floats": [1.0, -2.0]}, 13, 1),
    ("constant_tensor", "Constant", [],
     {"value": helper.make_tensor("v", onnx.TensorProto.FLOAT, [2, 2], [1, 2, 3, 4])}, 13, 1),
    # ---- normalisation
    ("batchnorm", "BatchNormalization",
     [X4, f32(3), f32(3), f32(3), f32(3, lo=0.1, hi=2)], {"epsilon": 1e-3}, 15, 1),
    ("batchnorm9_2d", "BatchNormalization",
     [f32(4, 3), f32(3), f32(3), f32(3), f32(3, lo=0.1, hi=2)], {}, 9, 1),
    ("layernorm", "LayerNormalization", [X4, f32(4), f32(4)], {}, 17, 1),
    ("layernorm_axis", "LayerNormalization", [X4, f32(5, 4)], {"axis": 2, "epsilon": 1e-3}, 17, 1),
    ("layernorm_stats", "LayerNormalization", [X4, f32(4), f32(4)], {}, 17, 3),
    # ---- Pad: pads attr (opset 2) vs input (11+), modes, axes (18), negative pads
    ("pad2_attr", "Pad", [f32(2, 3)], {"pads": [1, 0, 2, 1], "value": 1.5}, 2, 1),
    ("pad11_const", "Pad", [X4, i64(0, 0, 1, 2, 0, 0, 2, 1), fs(-1.0).reshape(())], {}, 11, 1),
    ("pad11_noval", "Pad", [X4, i64(0, 1, 1, 0, 0, 0, 1, 1)], {}, 11, 1),
    ("pad11_reflect", "Pad", [X4, i64(0, 0, 2, 1, 0, 0, 1, 3)], {"mode": "reflect"}, 11, 1),
    ("pad11_edge", "Pad", [X4, i64(0, 0, 2, 1, 0, 0, 1, 3)], {"mode": "edge"}, 11, 1),
    ("pad19_wrap", "Pad", [X4, i64(0, 0, 2, 1, 0, 0, 1, 3)], {"mode": "wrap"}, 19, 1),
    ("pad18_axes", "Pad", [X4, i64(1, 2, 3, 0), None, i64(2, -1)], {}, 18, 1),
    ("pad11_negative", "Pad", [X4, i64(0, 0, -1, 1, 0, 0, 2, -2)], {}, 11, 1),
]

# ---- Resize: opsets 11/13/18/19, scales vs sizes, every coordinate / nearest mode
R_X = f32(1, 2, 4, 5)
R_NONE = np.zeros(0, np.float32)
for _opset in (11, 13):
    for _coord in ("asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel",
                   "tf_half_pixel_for_nn"):
        for _nm in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
            for _sc in ((2.0, 2.0), (0.5, 0.6), (1.5, 2.5)):
                CASES.append((f"resize{_opset}_nearest_{_coord}_{_nm}_{_sc[0]}", "Resize",
                              [R_X, R_NONE, fs(1, 1, *_sc)],
                              {"mode": "nearest", "coordinate_transformation_mode": _coord,
                               "nearest_mode": _nm}, _opset, 1))
    for _coord in ("asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel"):
        for _sc in ((2.0, 2.0), (0.5, 0.6), (1.5, 2.5)):
            CASES.append((f"resize{_opset}_linear_{_coord}_{_sc[0]}", "Resize",
                          [R_X, R_NONE, fs(1, 1, *_sc)],
                          {"mode": "linear", "coordinate_transformation_mode": _coord}, _opset, 1))
CASES += [
    # PaddleOCR det (DBNet FPN) exports: Resize(X, roi, scales) nearest with 2x scales
    ("resize11_paddle_nearest", "Resize", [f32(1, 4, 6, 8), R_NONE, fs(1, 1, 2, 2)],
     {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
      "nearest_mode": "floor"}, 11, 1),
    ("resize11_paddle_default", "Resize", [f32(1, 4, 6, 8), R_NONE, fs(1, 1, 2, 2)],
     {"mode": "nearest"}, 11, 1),
    ("resize13_scales_noroi", "Resize", [f32(1, 4, 6, 8), None, fs(1, 1, 2, 2)],
     {"mode": "nearest"}, 13, 1),
    ("resize13_sizes", "Resize", [R_X, None, None, i64(1, 2, 7, 3)],
     {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, 13, 1),
    ("resize13_sizes_nearest", "Resize", [R_X, None, None, i64(1, 2, 9, 11)],
     {"mode": "nearest", "coordinate_transformation_mode": "half_pixel"}, 13, 1),
    ("resize11_sizes_empty_scales", "Resize", [R_X, R_NONE, R_NONE, i64(1, 2, 3, 8)],
     {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, 11, 1),
    ("resize13_cubic", "Resize", [R_X, None, fs(1, 1, 2, 1.5)], {"mode": "cubic"}, 13, 1),
    ("resize13_cubic_excl", "Resize", [R_X, None, fs(1, 1, 0.8, 2)],
     {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}, 13, 1),
    ("resize13_cubic_asym", "Resize", [R_X, None, fs(1, 1, 2, 2)],
     {"mode": "cubic", "coordinate_transformation_mode": "asymmetric"}, 13, 1),
    ("resize13_crop_linear", "Resize", [R_X, fs(0, 0, 0.2, -0.1, 1, 1, 0.9, 1.3), None,
                                        i64(1, 2, 5, 6)],
     {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
      "extrapolation_value": -7.0}, 13, 1),
    ("resize13_crop_nearest", "Resize", [R_X, fs(0, 0, 0.2, -0.1, 1, 1, 0.9, 1.3), None,
                                         i64(1, 2, 5, 6)],
     {"mode": "nearest", "coordinate_transformation_mode": "tf_crop_and_resize"}, 13, 1),
    ("resize18_axes_sizes", "Resize", [R_X, None, None, i64(8, 3)],
     {"mode": "linear", "axes": [2, 3]}, 18, 1),
    ("resize18_not_larger", "Resize", [R_X, None, None, i64(8, 20)],
     {"mode": "nearest", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, 18, 1),
    ("resize18_not_smaller", "Resize", [R_X, None, None, i64(8, 3)],
     {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller"}, 18, 1),
    ("resize19_half_pixel_symmetric", "Resize", [R_X, None, fs(1, 1, 1.7, 0.6)],
     {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, 19, 1),
    ("resize10", "Resize", [R_X, fs(1, 1, 2, 3)], {"mode": "nearest"}, 10, 1),
    ("resize10_down", "Resize", [R_X, fs(1, 1, 0.5, 0.5)], {"mode": "nearest"}, 10, 1),
    ("resize10_linear", "Resize", [R_X, fs(1, 1, 2, 1.5)], {"mode": "linear"}, 10, 1),
]
# antialias=1 (opset 18) downscaling: the linear / cubic kernel stretched by 1 / scale
R_BIG = f32(1, 2, 9, 11)
for _mode in ("linear", "cubic"):
    for _tag, _ins in (("scales", [R_BIG, None, fs(1, 1, 0.5, 0.3)]),
                       ("sizes", [R_BIG, None, None, i64(1, 2, 4, 5)]),
                       ("mixed", [R_BIG, None, fs(1, 1, 0.7, 1.6)])):
        for _extra in ({}, {"exclude_outside": 1},
                       {"coordinate_transformation_mode": "pytorch_half_pixel"}):
            CASES.append((f"resize18_antialias_{_mode}_{_tag}_{'_'.join(_extra) or 'default'}",
                          "Resize", _ins, {"mode": _mode, "antialias": 1, **_extra}, 18, 1))
# align_corners with `scales` whose scale * dim is fractional (the 2.5 on the width of 5 above,
# and these): ONNX maps x_out to x_out * (in - 1) / (scale * in - 1) (its reference evaluator and
# node tests; onnx/onnx#2462), onnxruntime divides by the integer output length - 1 instead.
# edgert follows ONNX, so these cases are checked against the ONNX reference evaluator.
for _mode in ("nearest", "linear", "cubic"):
    for _aa in (0, 1):
        if not (_mode == "nearest" and _aa):
            CASES.append((f"resize18_align_corners_fractional_{_mode}_aa{_aa}", "Resize",
                          [R_BIG, None, fs(1, 1, 0.7, 1.6)],
                          {"mode": _mode, "antialias": _aa,
                           "coordinate_transformation_mode": "align_corners"}, 18, 1))
ONNX_REFERENCE = {c[0] for c in CASES
                  if c[0].startswith("resize18_align_corners_fractional")
                  or ("_align_corners_" in c[0] and c[0].endswith("_1.5"))}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_onnxruntime(case):
    name, op, inputs, attrs, opset, n_out = case
    check(op, inputs, attrs, opset, n_out, reference="onnx" if name in ONNX_REFERENCE else "ort",
          atol=1e-5 if attrs.get("antialias") else 1e-6)    # many float32 taps per output


def test_float32_stays_float32():
    x = f32(2, 3)
    for op, extra in [("Relu", []), ("Sigmoid", []), ("Erf", []), ("Softmax", []),
                      ("HardSwish", []), ("Pow", [np.array(2.0)]), ("Sqrt", [])]:
        node = Node(op=op, name="n", inputs=["x"] * (1 + len(extra)), outputs=["y"])
        assert get_op(node).run(np.abs(x), *extra)[0].dtype == np.float32, op


def test_constantofshape_converter_form():
    """converters/onnx_import.py hands ConstantOfShape.value over as a scalar + value_dtype."""
    for v, dt in [(7, "int32"), (0.5, "float16"), (True, "bool"), (3, "float32")]:
        node = Node(op="ConstantOfShape", name="c", inputs=["s"], outputs=["y"],
                    attrs={"value": v, "value_dtype": dt})
        y = get_op(node).run(i64(2, 3))[0]
        assert y.dtype == np.dtype(dt) and y.shape == (2, 3) and np.all(y == np.array(v, dt))


def test_softmax_legacy_opset_hint():
    """A Softmax converted from opset < 13 carries attrs {"opset": 11}: 2-D coercion semantics."""
    x = f32(2, 3, 4)
    got, want = run_both("Softmax", [x], {"axis": 1}, opset=11)
    assert not np.allclose(got[0], want[0])          # without the hint: opset-13 rules
    node = Node(op="Softmax", name="sm", inputs=["x"], outputs=["y"],
                attrs={"axis": 1, "opset": 11})
    np.testing.assert_allclose(get_op(node).run(x)[0], want[0], rtol=1e-5, atol=1e-6)


def _node(op, attrs=None, n_in=1, n_out=1, name="bad_node"):
    return Node(op=op, name=name, inputs=[f"i{i}" for i in range(n_in)],
                outputs=[f"o{i}" for i in range(n_out)], attrs=attrs or {})


BAD = [
    ("add_unbroadcastable", _node("Add", n_in=2), [f32(2, 3), f32(4)]),
    ("add_mixed_dtype", _node("Add", n_in=2), [f32(2), np.ones(2, np.float64)]),
    ("where_bad_cond", _node("Where", n_in=3), [f32(2), f32(2), f32(2)]),
    ("squeeze_non1", _node("Squeeze", {"axes": [1]}), [f32(1, 3)]),
    ("squeeze_axis_range", _node("Squeeze", n_in=2), [f32(1, 3), i64(2)]),
    ("unsqueeze_dup", _node("Unsqueeze", n_in=2), [f32(3), i64(0, 0)]),
    ("reshape_bad", _node("Reshape", n_in=2), [f32(2, 3), i64(4, -1)]),
    ("reduce_axis_range", _node("ReduceSum", {"axes": [4]}), [f32(2, 3)]),
    ("pool_rank", _node("MaxPool", {"kernel_shape": [2, 2]}), [f32(3, 4)]),
    ("pool_window_too_big", _node("AveragePool", {"kernel_shape": [5, 5]}), [f32(1, 1, 3, 3)]),
    ("pool_bad_pads", _node("MaxPool", {"kernel_shape": [2, 2], "pads": [1, 1]}),
     [f32(1, 1, 4, 4)]),
    ("split_uneven", _node("Split", n_out=4), [f32(6)]),
    ("split_bad_sizes", _node("Split", {"split": [1, 2]}, n_out=2), [f32(6)]),
    ("slice_len", _node("Slice", n_in=4), [f32(3, 4), i64(0), i64(1, 2), i64(0)]),
    ("gather_oob", _node("Gather", n_in=2), [f32(3, 4), i64(3)]),
    ("concat_shapes", _node("Concat", {"axis": 0}, n_in=2), [f32(2, 3), f32(2, 4)]),
    ("transpose_perm", _node("Transpose", {"perm": [0, 0]}), [f32(2, 3)]),
    ("resize_both", _node("Resize", n_in=4), [R_X, None, fs(1, 1, 2, 2), i64(1, 2, 8, 10)]),
    ("resize_scales_len", _node("Resize", n_in=3), [R_X, None, fs(2, 2)]),
    ("batchnorm_shape", _node("BatchNormalization", n_in=5), [X4, f32(2), f32(3), f32(3), f32(3)]),
    ("tile_len", _node("Tile", n_in=2), [f32(2, 3), i64(2)]),
    ("pad_len", _node("Pad", n_in=2), [f32(2, 3), i64(1, 1)]),
    ("reflect_too_far", _node("Pad", {"mode": "reflect"}, n_in=2), [f32(2, 3), i64(0, 3, 0, 0)]),
    ("expand_bad", _node("Expand", n_in=2), [f32(2, 3), i64(4, 3)]),
    ("clip_nonscalar", _node("Clip", n_in=2), [f32(2, 3), f32(2)]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_inputs_raise_input_error(case):
    _, node, inputs = case
    with pytest.raises((InputError, ValueError)) as ei:
        get_op(node).run(*inputs)
    if isinstance(ei.value, InputError):
        assert "bad_node" in str(ei.value)


@pytest.mark.parametrize("node", [
    _node("Cast", {"to": onnx.TensorProto.STRING}),
    _node("Cast", {"to": onnx.TensorProto.BFLOAT16}),
    _node("BatchNormalization", {"training_mode": 1}, n_in=5),
], ids=["cast_string", "cast_bf16", "bn_training"])
def test_unsupported_variants(node):
    with pytest.raises(UnsupportedOp, match="bad_node"):
        get_op(node)


def test_resize_antialias_widens_the_kernel_when_downscaling():
    """A 4x downscale of a 1-pixel checkerboard: plain linear samples pixel centres (values stay
    +/-1), antialias averages it to ~0 as a low-pass must."""
    x = np.where((np.arange(16)[:, None] + np.arange(16)) % 2, 1.0, -1.0).astype(np.float32)
    x = x.reshape(1, 1, 16, 16)
    for aa, lo, hi in ((0, 0.9, 1.0), (1, 0.0, 0.1)):
        node = _node("Resize", {"mode": "linear", "antialias": aa,
                                "coordinate_transformation_mode": "asymmetric"}, n_in=3)
        y = get_op(node).run(x, None, fs(1, 1, 0.25, 0.25))[0]
        inner = y[..., 1:, 1:]         # the first row / column also weigh the edge padding
        assert y.shape == (1, 1, 4, 4) and lo <= np.abs(inner).min() <= np.abs(inner).max() <= hi, \
            (aa, y)


def test_unknown_op_names_op_and_node():
    with pytest.raises(UnsupportedOp) as ei:
        get_op(Node(op="FancyAttention", name="layer7/attn", inputs=["x"], outputs=["y"]))
    msg = str(ei.value)
    assert "FancyAttention" in msg and "layer7/attn" in msg


POOL_SWEEP = [(op, k, s, p, ceil, incl)
              for op in ("AveragePool", "MaxPool")
              for k, s, p in [((3, 3), (2, 2), (1, 1, 1, 1)), ((2, 3), (3, 2), (0, 1, 1, 0)),
                              ((3, 2), (2, 3), (1, 0, 0, 1)), ((4, 4), (3, 3), (2, 2, 1, 1))]
              for ceil in (0, 1) for incl in (0, 1) if not (op == "MaxPool" and incl)]


@pytest.mark.parametrize("op,k,s,p,ceil,incl", POOL_SWEEP)
def test_pool_sweep(op, k, s, p, ceil, incl):
    attrs = {"kernel_shape": list(k), "strides": list(s), "pads": list(p), "ceil_mode": ceil}
    if op == "AveragePool":
        attrs["count_include_pad"] = incl
    for shape in [(1, 2, 8, 9), (2, 1, 7, 10)]:
        check(op, [f32(*shape)], attrs, opset=19 if op == "AveragePool" else 12)
