"""The ORT backend against the numpy oracle on hand-built IR graphs (docs/design.md contracts):
float outputs allclose, int8 outputs within 1 LSB (ORT requantizes in float)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgert.backends.base import BackendOptions, get_backend  # noqa: E402
from edgert.backends.ort import OrtBackend, _cpu_has_vnni, lower  # noqa: E402
from edgert.errors import InputError, UnsupportedOp  # noqa: E402
from edgert.ir import Graph, Node, ValueInfo  # noqa: E402
from edgert.ops import known_ops  # noqa: E402

OPTS = BackendOptions(threads=1)

# How int8 activations travel inside ORT: as int8 (ARM default), as uint8 with 8-bit weights fed as
# uint8 (x86 without VNNI) and, only where the CPU has VNNI, uint8 x int8.
_VARIANTS = [("int8", False), ("uint8", False)] + ([("uint8", True)] if _cpu_has_vnni() else [])


@pytest.fixture(params=_VARIANTS, ids=lambda v: f"{v[0]}{'-vnni' if v[1] else ''}")
def ort_backend(request):
    act, vnni = request.param
    return OrtBackend(activations=act, vnni=vnni)


def need_ops(*ops: str) -> None:
    missing = sorted(set(ops) - set(known_ops()))
    if missing:
        pytest.skip(f"numpy oracle lacks {missing} (being written)")


def compare(backend, g: Graph, feeds: dict, *, rtol=1e-4, atol=1e-5, lsb=1, capture=None):
    need_ops(*{n.op for n in g.nodes})
    ref = get_backend("numpy").prepare(g, OPTS).run(feeds, capture=capture)
    got = backend.prepare(g, OPTS).run(feeds, capture=capture)
    assert set(got) == set(ref)
    for name, r in ref.items():
        o = got[name]
        assert o.dtype == r.dtype and o.shape == r.shape, name
        if np.issubdtype(r.dtype, np.integer):
            tol = lsb.get(name, 1) if isinstance(lsb, dict) else lsb
            diff = np.abs(o.astype(np.int64) - r.astype(np.int64))
            assert diff.max(initial=0) <= tol, f"{name}: max diff {diff.max()} LSB"
        else:
            np.testing.assert_allclose(o, r, rtol=rtol, atol=atol, err_msg=name)
    return got, ref


def vi(name, dtype, shape):
    return ValueInfo(name, dtype, list(shape))


rng = np.random.default_rng(1234)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def i8(*shape, lo=-127, hi=127):
    return rng.integers(lo, hi + 1, shape).astype(np.int8)


# ------------------------------------------------------------------------------------ float nets
def test_float_conv_net(ort_backend):
    inits = {"w1": f32(8, 3, 3, 3, scale=0.3), "b1": f32(8), "w2": f32(8, 1, 3, 3, scale=0.3),
             "gamma": f32(8) + 1, "beta": f32(8), "mean": f32(8, scale=0.1),
             "var": np.abs(f32(8)) + 0.5, "fc": f32(10, 8), "fcb": f32(10)}
    nodes = [
        Node("Conv", "c1", ["x", "w1", "b1"], ["c1"], {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
        Node("BatchNormalization", "bn", ["c1", "gamma", "beta", "mean", "var"], ["bn"],
             {"epsilon": 1e-5}),
        Node("Relu", "r1", ["bn"], ["r1"]),
        Node("Conv", "dw", ["r1", "w2"], ["c2"], {"pads": [1, 1, 1, 1], "group": 8}),
        Node("HardSwish", "hs", ["c2"], ["h"]),
        Node("Add", "add", ["h", "r1"], ["s"]),
        Node("MaxPool", "mp", ["s"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
        Node("GlobalAveragePool", "gap", ["p"], ["g"]),
        Node("Flatten", "fl", ["g"], ["f"], {"axis": 1}),
        Node("Gemm", "fc", ["f", "fc", "fcb"], ["logits"], {"transB": 1}),
        Node("Softmax", "sm", ["logits"], ["prob"], {"axis": -1}),
    ]
    g = Graph("floatnet", [vi("x", "float32", ["N", 3, 16, 16])],
              [vi("prob", "float32", ["N", 10]), vi("c2", "float32", ["N", 8, 8, 8])], nodes, inits)
    compare(ort_backend, g, {"x": f32(2, 3, 16, 16)})


def test_attr_forms_become_inputs(ort_backend):
    """Squeeze/Unsqueeze/Reduce axes, Clip min/max, Split split, Pad pads/value, Slice attrs."""
    inits = {"ax0": np.array([0], np.int64), "lo": np.array(-0.5, np.float32),
             "sp": np.array([1, 3], np.int64)}
    nodes = [
        Node("Unsqueeze", "u", ["x"], ["u"], {"axes": [0]}),
        Node("Squeeze", "s_attr", ["u"], ["s1"], {"axes": [0]}),
        Node("Unsqueeze", "u2", ["x", "ax0"], ["u2"]),
        Node("Squeeze", "s_in", ["u2", "ax0"], ["s2"]),
        Node("Clip", "clip_attr", ["s1"], ["c1"], {"min": -0.2, "max": 0.3}),
        Node("Clip", "clip_in", ["s2", "lo"], ["c2"]),
        Node("Clip", "clip_max_only", ["s2"], ["c3"], {"max": 0.1}),
        Node("ReduceMean", "rm", ["c1"], ["rm"], {"axes": [2, 3], "keepdims": 1}),
        Node("ReduceSum", "rs", ["c2"], ["rs"], {"axes": [1], "keepdims": 0}),
        Node("ReduceMax", "rx", ["c3"], ["rx"], {"axes": [-1]}),
        Node("Split", "sp_attr", ["c1"], ["sa", "sb"], {"axis": 1, "split": [1, 3]}),
        Node("Split", "sp_in", ["c2", "sp"], ["sc", "sd"], {"axis": 1}),
        Node("Split", "sp_eq", ["c3"], ["se", "sf"], {"axis": 1}),
        Node("Pad", "pad_attr", ["sb"], ["pd"], {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "value": 0.5}),
        Node("Slice", "sl_attr", ["pd"], ["sl"], {"starts": [1, 0], "ends": [100, -1],
                                                 "axes": [2, 3]}),
    ]
    outs = ["rm", "rs", "rx", "sa", "sd", "se", "sf", "sl"]
    g = Graph("attrs", [vi("x", "float32", [2, 4, 5, 6])],
              [ValueInfo(o, "float32", None) for o in outs], nodes, inits)
    g.outputs = [vi(o, "float32", [None] * r) for o, r in
                 zip(outs, [4, 3, 4, 4, 4, 4, 4, 4])]
    compare(ort_backend, g, {"x": f32(2, 4, 5, 6)})


@pytest.mark.parametrize("form", ["opset10", "scales", "sizes"])
def test_resize_forms(ort_backend, form):
    inits = {"scales": np.array([1, 1, 2, 2], np.float32), "sizes": np.array([1, 2, 7, 9], np.int64)}
    ins = {"opset10": ["x", "scales"], "scales": ["x", "", "scales"], "sizes": ["x", "", "", "sizes"]}
    attrs = {"opset10": {"mode": "nearest"},
             "scales": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
             "sizes": {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                       "nearest_mode": "floor"}}[form]
    g = Graph("resize", [vi("x", "float32", [1, 2, 4, 5])], [vi("y", "float32", [1, 2, None, None])],
              [Node("Resize", "rs", ins[form], ["y"], attrs)], inits)
    compare(ort_backend, g, {"x": f32(1, 2, 4, 5)})


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("scales,axes", [([1, 1, 0.7, 1.6], None), ([0.6, 2.5], [2, 3]),
                                         ([1, 1, 2, 3], None)])
def test_resize_align_corners_with_scales(mode, scales, axes):
    """ONNX's align_corners divides by in * scale - 1 (fractional), ORT by the integer output
    length - 1: the lowering makes ORT compute ONNX's mapping (whole-number scales pass
    through).  Dynamic H, W: the mapping is built from the run's shape."""
    attrs = {"mode": mode, "coordinate_transformation_mode": "align_corners"}
    if axes:
        attrs["axes"] = axes
    g = Graph("rs_ac", [vi("x", "float32", [1, 2, "h", "w"])],
              [vi("y", "float32", [1, 2, None, None])],
              [Node("Resize", "rs", ["x", "", "scales"], ["y"], attrs)],
              {"scales": np.array(scales, np.float32)})
    be = OrtBackend()
    for shape in ((1, 2, 7, 5), (1, 2, 4, 9)):
        compare(be, g, {"x": f32(*shape)})
    low = lower(g, be.act_u8)
    assert (b"tf_crop_and_resize" in low.model) == (scales != [1, 1, 2, 3])


# -------------------------------------------------------------------------------- quantized nets
def _qconv_chain(abits: int = 8, wmax: int = 127):
    """QuantizeLinear -> QLinearConv(3x3, per-channel, bias, folded ReLU) -> QLinearConv(1x1,
    depthwise-free) -> DequantizeLinear, laid out as the converter does."""
    c_in, c1 = 3, 16
    lo, hi = -(1 << (abits - 1)), (1 << (abits - 1)) - 1
    inits = {
        "x__scale": np.array(0.03, np.float32), "x__zp": np.array(-7, np.int8),
        "w1__q": i8(c1, c_in, 3, 3, lo=-wmax, hi=wmax),
        "w1__scale": rng.uniform(0.002, 0.02, c1).astype(np.float32),
        "c1__bias": rng.integers(-3000, 3000, c1).astype(np.int32),
        "u__scale": np.array(0.05, np.float32), "u__zp": np.array(-20, np.int8),
        "w2__q": i8(c1, c1, 1, 1, lo=-wmax, hi=wmax),
        "w2__scale": rng.uniform(0.002, 0.02, c1).astype(np.float32),
        "c2__bias": rng.integers(-3000, 3000, c1).astype(np.int32),
        "v__scale": np.array(0.04, np.float32), "v__zp": np.array(3, np.int8),
    }
    q = {"qmin": lo, "qmax": hi} if abits < 8 else {}
    nodes = [
        Node("QuantizeLinear", "q_x", ["x", "x__scale", "x__zp"], ["x__q"], dict(q)),
        Node("QLinearConv", "c1", ["x__q", "x__scale", "x__zp", "w1__q", "w1__scale", "",
                                   "u__scale", "u__zp", "c1__bias"], ["u__q"],
             {"pads": [1, 1, 1, 1], "strides": [1, 1], "qmin": max(-20, lo), "qmax": hi}),
        Node("QLinearConv", "c2", ["u__q", "u__scale", "u__zp", "w2__q", "w2__scale", "",
                                   "v__scale", "v__zp", "c2__bias"], ["v__q"], dict(q)),
        Node("DequantizeLinear", "dq_v", ["v__q", "v__scale", "v__zp"], ["v"]),
    ]
    return Graph("qconv", [vi("x", "float32", [1, c_in, 12, 12])],
                 [vi("v", "float32", [1, c1, 12, 12]), vi("v__q", "int8", [1, c1, 12, 12])],
                 nodes, inits)


@pytest.mark.parametrize("abits,wmax", [(8, 127), (8, 63), (4, 127)])
def test_qconv_chain(ort_backend, abits, wmax):
    g = _qconv_chain(abits, wmax)
    x = f32(1, 3, 12, 12, scale=2.0)          # saturates some inputs on purpose
    # One LSB per layer (docs/design.md); a 1-LSB difference in u__q can move v__q by a few more
    # since the second layer amplifies it, so the chain's end gets 3 LSB.
    got, ref = compare(ort_backend, g, {"x": x}, atol=3 * 0.04 + 1e-6,
                       lsb={"x__q": 0, "u__q": 1, "v__q": 3}, capture={"u__q", "x__q"})
    assert got["u__q"].min() >= -20                       # the folded ReLU bound holds
    if abits < 8:
        assert got["v__q"].min() >= -8 and got["v__q"].max() <= 7
    # Most values must agree exactly, not merely within 1 LSB.
    assert np.mean(got["v__q"] == ref["v__q"]) > 0.97


def test_qlinearconv_grouped_strided(ort_backend):
    c = 8
    inits = {"xs": np.array(0.02, np.float32), "xz": np.array(5, np.int8), "w": i8(c, 1, 3, 3),
             "ws": rng.uniform(0.005, 0.02, c).astype(np.float32), "wz": np.array(0, np.int8),
             "ys": np.array(0.03, np.float32), "yz": np.array(-4, np.int8),
             "b": rng.integers(-500, 500, c).astype(np.int32)}
    g = Graph("dw", [vi("xq", "int8", [2, c, 9, 9])], [vi("yq", "int8", [2, c, 5, 5])],
              [Node("QLinearConv", "dw", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                    ["yq"], {"group": c, "pads": [1, 1, 1, 1], "strides": [2, 2]})], inits)
    compare(ort_backend, g, {"xq": i8(2, c, 9, 9, lo=-128)})


@pytest.mark.parametrize("per_column,bias,batch", [(True, True, (2,)), (False, True, ()),
                                                   (True, False, ())])
def test_qlinearmatmul(ort_backend, per_column, bias, batch):
    k, n = 64, 24
    inits = {"a_s": np.array(0.04, np.float32), "a_z": np.array(-9, np.int8), "b": i8(k, n),
             "b_s": (rng.uniform(0.002, 0.01, n) if per_column else np.array(0.006)
                     ).astype(np.float32),
             "y_s": np.array(0.08, np.float32), "y_z": np.array(11, np.int8),
             "bias": rng.integers(-20000, 20000, n).astype(np.int32)}
    ins = ["a", "a_s", "a_z", "b", "b_s", "", "y_s", "y_z"] + (["bias"] if bias else [])
    shape = (*batch, 5, k)
    g = Graph("qmm", [vi("a", "int8", shape)], [vi("y", "int8", (*batch, 5, n))],
              [Node("QLinearMatMul", "mm", ins, ["y"], {"qmin": -100})], inits)
    got, ref = compare(ort_backend, g, {"a": i8(*shape, lo=-128)})
    assert got["y"].min() >= -100
    assert np.mean(got["y"] == ref["y"]) > 0.97


def test_quantize_dequantize_per_axis_narrow(ort_backend):
    inits = {"s": np.array([0.1, 0.2, 0.05], np.float32), "z": np.array([0, -3, 4], np.int8)}
    nodes = [Node("QuantizeLinear", "q", ["x", "s", "z"], ["xq"], {"axis": 1, "qmin": -8, "qmax": 7}),
             Node("DequantizeLinear", "dq", ["xq", "s", "z"], ["y"], {"axis": 1})]
    g = Graph("qdq", [vi("x", "float32", [4, 3, 5])],
              [vi("y", "float32", [4, 3, 5]), vi("xq", "int8", [4, 3, 5])], nodes, inits)
    got, _ = compare(ort_backend, g, {"x": f32(4, 3, 5)}, lsb=0, atol=1e-6)
    assert got["xq"].min() >= -8 and got["xq"].max() <= 7


@pytest.mark.parametrize("asymmetric", [False, True])
def test_weight_only_blocked_dequant_matmul(ort_backend, asymmetric):
    k, n, block = 64, 48, 16
    if asymmetric:      # uint8 codes + a per-group zero point, as the `asymmetric` scheme stores them
        w = rng.integers(0, 16, (k, n)).astype(np.uint8)
        inits = {"w__q": w, "w__zp": rng.integers(0, 16, (k // block, n)).astype(np.uint8)}
    else:
        inits = {"w__q": i8(k, n, lo=-7, hi=7)}
    inits["w__scale"] = rng.uniform(0.01, 0.05, (k // block, n)).astype(np.float32)
    ins = ["w__q", "w__scale"] + (["w__zp"] if asymmetric else [])
    nodes = [Node("DequantizeLinear", "dq_w", ins, ["w"], {"axis": 0, "block_size": block}),
             Node("MatMul", "mm", ["x", "w"], ["y"])]
    g = Graph("wo", [vi("x", "float32", ["B", 3, k])], [vi("y", "float32", ["B", 3, n])],
              nodes, inits)
    compare(ort_backend, g, {"x": f32(2, 3, k)}, atol=1e-4)


def test_int8_graph_input_through_data_movement(ort_backend):
    """int8 values crossing shift-transparent ops and back to int8 graph outputs."""
    inits = {"s": np.array(0.1, np.float32), "z": np.array(-5, np.int8),
             "shape": np.array([2, -1], np.int64)}
    nodes = [Node("Reshape", "rs", ["xq", "shape"], ["r"]),
             Node("Transpose", "tr", ["r"], ["t"], {"perm": [1, 0]}),
             Node("DequantizeLinear", "dq", ["t", "s", "z"], ["y"]),
             Node("QuantizeLinear", "q", ["y", "s", "z"], ["yq"]),
             Node("Concat", "cat", ["yq", "t"], ["cat"], {"axis": 0})]
    g = Graph("mv", [vi("xq", "int8", [2, 3, 4])],
              [vi("cat", "int8", [24, 2]), vi("y", "float32", [12, 2])], nodes, inits)
    compare(ort_backend, g, {"xq": i8(2, 3, 4, lo=-128)}, lsb=0)


# ------------------------------------------------------------------------- plumbing and errors
def _tiny():
    return Graph("tiny", [vi("x", "float32", ["N", 4])], [vi("y", "float32", ["N", 4])],
                 [Node("Relu", "r", ["x"], ["h"]), Node("Neg", "n", ["h"], ["y"])], {})


def test_registry_returns_ort():
    b = get_backend("ort")
    assert isinstance(b, OrtBackend) and b.name == "ort" and OrtBackend.available()


def test_unknown_op_raises_unsupported():
    g = Graph("bad", [vi("x", "float32", [2])], [vi("y", "float32", [2])],
              [Node("FancyOp", "my_node", ["x"], ["y"])], {})
    with pytest.raises(UnsupportedOp, match="FancyOp.*my_node"):
        OrtBackend().prepare(g, OPTS)


@pytest.mark.parametrize("feeds,match", [
    ({}, "missing"),
    ({"x": np.zeros((2, 4), np.float32), "z": np.zeros(1)}, "unknown"),
    ({"x": np.zeros((2, 4), np.float64)}, "dtype"),
    ({"x": np.zeros((4,), np.float32)}, "rank"),
    ({"x": np.zeros((2, 5), np.float32)}, "shape"),
])
def test_bad_feeds_raise_input_error(feeds, match):
    exe = OrtBackend().prepare(_tiny(), OPTS)
    with pytest.raises(InputError, match=match) as ei:
        exe.run(feeds)
    assert "\n" not in str(ei.value)


def test_capture_and_threads():
    exe = OrtBackend().prepare(_tiny(), BackendOptions(threads=2))
    x = f32(3, 4)
    out = exe.run({"x": x}, capture={"h"})
    np.testing.assert_array_equal(out["h"], np.maximum(x, 0))
    np.testing.assert_array_equal(out["y"], -np.maximum(x, 0))
    assert set(exe.run({"x": x})) == {"y"}
    with pytest.raises(InputError, match="nope"):
        exe.run({"x": x}, capture={"nope"})


def test_large_initializers_go_external_and_small_inline():
    w = f32(256, 256)
    g = Graph("big", [vi("x", "float32", [1, 256])], [vi("y", "float32", [1, 256])],
              [Node("MatMul", "mm", ["x", "w"], ["y"])], {"w": w})
    low = lower(g)
    assert list(low.external) == ["w"] and len(low.model) < 1024
    x = f32(1, 256)
    y = OrtBackend().prepare(g, OPTS).run({"x": x})["y"]
    np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4)


def test_lowered_model_is_valid_onnx():
    onnx = pytest.importorskip("onnx")
    for g in (_qconv_chain(4), _tiny()):
        low = lower(g, act_u8=True, vnni=False)
        m = onnx.load_from_string(low.model)
        if not low.external:
            onnx.checker.check_model(m, full_check=True)
        assert m.opset_import[0].version == 21


def test_upsample_dropout_lowerings():
    """Ops the oracle may not have: checked against their ONNX definitions directly."""
    g = Graph("up", [vi("x", "float32", [1, 1, 2, 3])], [vi("y", "float32", [1, 1, 4, 6])],
              [Node("Dropout", "do", ["x"], ["d"], {"ratio": 0.5}),
               Node("Upsample", "up", ["d"], ["y"], {"scales": [1.0, 1.0, 2.0, 2.0]})], {})
    x = f32(1, 1, 2, 3)
    y = OrtBackend().prepare(g, OPTS).run({"x": x})["y"]
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))


def test_ort_rejection_is_unsupported_op():
    g = Graph("rej", [vi("x", "float32", [2])], [vi("y", "float32", [2])],
              [Node("Relu", "r", ["x"], ["y"], {"not_an_attr": 1})], {})
    with pytest.raises(UnsupportedOp, match="onnxruntime rejected") as ei:
        OrtBackend().prepare(g, OPTS)
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_legacy_opset_semantics_match_oracle(opset):
    """Softmax before opset 13 coerces to 2-D at `axis`; the importer marks such nodes with `opset`."""
    from edgert.ir import Graph as _G, Node as _N, ValueInfo as _V
    g = _G("g", [_V("x", "float32", [2, 3, 4])], [_V("y", "float32", [2, 3, 4])],
           [_N("Softmax", "sm", ["x"], ["y"], {"axis": 1, "opset": opset})], {})
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    ref = get_backend("numpy").prepare(g, BackendOptions()).run({"x": x})["y"]
    got = get_backend("ort").prepare(g, BackendOptions()).run({"x": x})["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    sums = ref.reshape(2, -1).sum(1) if opset < 13 else ref.sum(1)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


def test_numpy_backend_precomputes_constant_nodes_once():
    """Weight-only DequantizeLinear on an initializer runs at prepare time, not on every run."""
    from edgert.ir import Graph as _G, Node as _N, ValueInfo as _V
    rng = np.random.default_rng(0)
    wq = rng.integers(-7, 8, size=(8, 4)).astype(np.int8)
    g = _G("g", [_V("x", "float32", [2, 8])], [_V("y", "float32", [2, 4])],
           [_N("DequantizeLinear", "dq", ["wq", "ws"], ["w"], {}),
            _N("MatMul", "mm", ["x", "w"], ["y"], {})],
           {"wq": wq, "ws": np.array(0.5, np.float32)})
    exe = get_backend("numpy").prepare(g, BackendOptions())
    assert [n.op for n, _ in exe._live] == ["MatMul"]
    x = rng.standard_normal((2, 8)).astype(np.float32)
    out = exe.run({"x": x}, capture={"w"})
    np.testing.assert_allclose(out["w"], wq.astype(np.float32) * 0.5)
    np.testing.assert_allclose(out["y"], x @ (wq.astype(np.float32) * 0.5), rtol=1e-6)
