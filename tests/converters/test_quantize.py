import numpy as np
import pytest

from converters.calibration import ListReader, calibrate
from converters.options import QuantizeOptions
from converters.quantize import (FLOAT, QLINEAR, WEIGHT_ONLY, abits_range, eliminate_dq_q,
                                 layer_sqnr, plan_quantization, quantize_graph)
from edgert.backends.numpy_ref import NumpyExecutable
from edgert.ir import Graph, Node, ValueInfo


def _rng(seed=0):
    return np.random.default_rng(seed)


def conv_graph(seed=0, relu=True, clip=False):
    """x -> conv1(+bias) -> [Relu | Clip(0, 6)] -> conv2 -> y (also: a float Add on the side)."""
    r = _rng(seed)
    inits = {
        "w1": (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
        "b1": r.standard_normal(8).astype(np.float32) * 0.1,
        "w2": (r.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32),
        "b2": r.standard_normal(4).astype(np.float32) * 0.1,
        "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32),
    }
    nodes = [Node("Conv", "conv1", ["x", "w1", "b1"], ["c1"], {"pads": [1, 1, 1, 1]})]
    if clip:
        nodes.append(Node("Clip", "act", ["c1", "zero", "six"], ["a1"]))
    elif relu:
        nodes.append(Node("Relu", "act", ["c1"], ["a1"]))
    else:
        nodes.append(Node("Sigmoid", "act", ["c1"], ["a1"]))
    nodes.append(Node("Conv", "conv2", ["a1", "w2", "b2"], ["y"], {}))
    return Graph("g", [ValueInfo("x", "float32", [1, 3, 8, 8])],
                 [ValueInfo("y", "float32", [1, 4, 8, 8])], nodes, inits)


def batches(graph, n=4, seed=1):
    r = _rng(seed)
    return [{vi.name: r.standard_normal(vi.shape).astype(np.float32) * 2 for vi in graph.inputs}
            for _ in range(n)]


def run_quant(graph, opts, n=4):
    plan = plan_quantization(graph, opts)
    data = batches(graph, n)
    ranges = {}
    if plan.activation_names():
        qmin, qmax = abits_range(opts.abits)
        ranges = calibrate(graph, ListReader(data), plan.activation_names(), "minmax",
                           backend="numpy", progress=False, qmin=qmin, qmax=qmax).ranges
    q = quantize_graph(graph, plan, ranges, opts)
    return plan, q, data


def ops(g):
    return [n.op for n in g.nodes]


def max_rel_err(f, q, data):
    fe, qe = NumpyExecutable(f), NumpyExecutable(q)
    out = f.outputs[0].name
    errs = []
    for d in data:
        a, b = fe.run(d)[out], qe.run(d)[out]
        errs.append(np.abs(a - b).max() / np.abs(a).max())
    return max(errs)


def test_conv_relu_conv_layout_fold_and_dq_q_elimination():
    g = conv_graph()
    plan, q, data = run_quant(g, QuantizeOptions())
    assert plan.activation_names() == {"x", "a1", "y"}       # Relu folded: c1 never observed
    assert ops(q) == ["QuantizeLinear", "QLinearConv", "QLinearConv", "DequantizeLinear"]
    qc1, qc2 = q.nodes[1], q.nodes[2]
    assert qc1.inputs == ["x__q", "x__scale", "x__zp", "w1__q", "w1__scale", "", "a1__scale",
                          "a1__zp", "conv1__bias"]
    assert qc1.outputs == ["a1__q"] and qc2.inputs[0] == "a1__q"      # stays int8 in between
    assert qc1.attrs["qmin"] == int(q.initializers["a1__zp"])        # folded ReLU
    assert qc1.attrs["pads"] == [1, 1, 1, 1]
    assert q.nodes[-1].outputs == ["y"]
    assert q.initializers["w1__q"].dtype == np.int8 and "w1" not in q.initializers
    assert q.initializers["x__zp"].dtype == np.int8 and q.initializers["x__zp"].shape == ()
    assert q.initializers["x__scale"].dtype == np.float32
    assert q.encodings["w1__q"].bits == 8 and q.encodings["w1__q"].scheme == "symmetric"
    assert q.encodings["w1__scale"].scheme == "fp16"
    assert [li.name for li in q.layers] == ["conv1", "conv2"]
    assert q.layers[0].extra["fold"] == "Relu" and q.layers[0].params == 8 * 27 + 8
    assert max_rel_err(g, q, data) < 0.05
    g.nodes  # the float graph is untouched
    assert ops(g) == ["Conv", "Relu", "Conv"]


def test_bias_int32_is_round_b_over_sx_sw():
    g = conv_graph()
    _, q, _ = run_quant(g, QuantizeOptions())
    sx = np.float64(q.initializers["x__scale"])
    sw = q.initializers["w1__scale"].astype(np.float64)
    b32 = q.initializers["conv1__bias"]
    assert b32.dtype == np.int32
    np.testing.assert_array_equal(b32, np.rint(g.initializers["b1"] / (sx * sw)).astype(np.int32))
    # weights were quantized with the fp16-rounded scale
    np.testing.assert_array_equal(sw, sw.astype(np.float16).astype(np.float64))


def test_clip_fold_sets_qmax():
    g = conv_graph(clip=True)
    g.initializers["w1"] *= 20          # push c1 well past 6
    _, q, data = run_quant(g, QuantizeOptions())
    qc1 = q.nodes[1]
    s, z = float(q.initializers["a1__scale"]), int(q.initializers["a1__zp"])
    assert qc1.attrs["qmin"] == z
    assert qc1.attrs["qmax"] == min(127, z + round(6 / s))
    assert "Clip" not in ops(q)
    assert max_rel_err(g, q, data) < 0.05


def test_no_fold_when_activation_not_relu():
    g = conv_graph(relu=False)
    plan, q, _ = run_quant(g, QuantizeOptions())
    assert ops(q) == ["QuantizeLinear", "QLinearConv", "DequantizeLinear", "Sigmoid",
                      "QuantizeLinear", "QLinearConv", "DequantizeLinear"]


def test_keep_float_and_layer_bits_globs():
    g = conv_graph()
    plan, q, data = run_quant(g, QuantizeOptions(keep_float={"conv2"}, layer_bits={"conv*": 4}))
    assert [lp.kind for lp in plan.layers] == [QLINEAR, FLOAT]
    assert q.encodings["w1__q"].bits == 4
    assert "w2" in q.initializers and q.initializers["w2"].dtype == np.float32
    assert ops(q)[-1] == "Conv"
    assert q.layers[1].wbits is None and q.layers[1].extra["note"] == "keep_float"
    # override by output name, exact names beat globs
    plan = plan_quantization(g, QuantizeOptions(layer_bits={"c1": 3, "conv*": 6}))
    assert [lp.wbits for lp in plan.layers] == [3, 6]


def test_narrow_abits_sets_ranges():
    g = conv_graph(relu=False)
    _, q, data = run_quant(g, QuantizeOptions(abits=4, wbits=4))
    for n in q.nodes:
        if n.op in ("QuantizeLinear", "QLinearConv"):
            assert (n.attrs["qmin"], n.attrs["qmax"]) == (-8, 7)
    assert max_rel_err(g, q, data) < 0.4


def test_group_wise_and_conv_transpose_are_weight_only():
    g = conv_graph()
    g.initializers["w2"] = _rng(3).standard_normal((4, 8, 1, 1)).astype(np.float32)
    plan, q, data = run_quant(g, QuantizeOptions(granularity="group", group_size=4, wbits=4))
    assert [lp.kind for lp in plan.layers] == [WEIGHT_ONLY, WEIGHT_ONLY]
    assert plan.activation_names() == set()
    dq2 = next(n for n in q.nodes if n.outputs == ["w2"])
    assert dq2.op == "DequantizeLinear" and dq2.attrs == {"axis": 1, "block_size": 4}
    assert q.initializers["w2__scale"].shape == (4, 2, 1, 1)
    assert q.layers[1].granularity == "group" and q.layers[1].group_size == 4
    assert q.layers[0].group_size == 3            # 3 input channels: one group of 3
    assert max_rel_err(g, q, data) < 0.2      # 4-bit weights
    plan = plan_quantization(g, QuantizeOptions(granularity="group", group_size=5))
    assert plan.layers[1].granularity == "channel" and "group size" in plan.layers[1].note
    assert plan.layers[1].kind == QLINEAR

    ct = Graph("ct", [ValueInfo("x", "float32", [1, 4, 5, 5])], [ValueInfo("y", "float32", [])],
               [Node("ConvTranspose", "up", ["x", "w"], ["y"], {"strides": [2, 2]})],
               {"w": _rng(4).standard_normal((4, 6, 2, 2)).astype(np.float32)})
    plan, q, data = run_quant(ct, QuantizeOptions())
    assert ops(q) == ["DequantizeLinear", "ConvTranspose"]
    assert q.nodes[0].attrs == {"axis": 1} and q.initializers["w__scale"].shape == (6,)
    assert max_rel_err(ct, q, data) < 0.02


def test_matmul_gemm_and_dynamic_matmul():
    r = _rng(5)
    inits = {"B": r.standard_normal((16, 8)).astype(np.float32),
             "G": r.standard_normal((6, 8)).astype(np.float32),    # Gemm transB: [N, K]
             "C": r.standard_normal(6).astype(np.float32)}
    nodes = [Node("MatMul", "mm", ["x", "B"], ["h"]),
             Node("Gemm", "fc", ["h", "G", "C"], ["z"], {"transB": 1, "alpha": 0.5, "beta": 2.0}),
             Node("MatMul", "dyn", ["z", "zt"], ["y"]),
             Node("Transpose", "t", ["z"], ["zt"], {"perm": [1, 0]})]
    nodes = [nodes[0], nodes[1], nodes[3], nodes[2]]
    g = Graph("mm", [ValueInfo("x", "float32", [3, 16])], [ValueInfo("y", "float32", [3, 3])],
              nodes, inits)
    plan, q, data = run_quant(g, QuantizeOptions())
    assert [lp.name for lp in plan.layers] == ["mm", "fc"]          # dynamic MatMul not a layer
    assert ops(q) == ["QuantizeLinear", "QLinearMatMul", "QLinearMatMul", "DequantizeLinear",
                      "Transpose", "MatMul"]
    fc = q.nodes[2]
    assert q.initializers["G__q"].shape == (8, 6)                   # folded to [K, N]
    assert q.initializers["G__scale"].shape == (6,)
    assert len(fc.inputs) == 9 and fc.inputs[8] == "fc__bias"
    sx = np.float64(q.initializers["h__scale"])
    np.testing.assert_array_equal(
        q.initializers["fc__bias"],
        np.rint(2.0 * inits["C"] / (sx * q.initializers["G__scale"].astype(np.float64))))
    fe, qe = NumpyExecutable(g), NumpyExecutable(q)
    for d in data:
        a = fe.run(d, capture={"z"})["z"]
        b = qe.run(d, capture={"z"})["z"]
        assert np.abs(a - b).max() < 0.06 * np.abs(a).max()     # two 8-bit requantizations


def test_eliminate_dq_q_pair_with_equal_params_only():
    s, z = np.array(0.1, np.float32), np.array(3, np.int8)
    inits = {"s": s, "z": z, "s2": s.copy(), "z2": z.copy(), "s3": np.array(0.2, np.float32)}
    nodes = [Node("QuantizeLinear", "q0", ["x", "s", "z"], ["xq"]),
             Node("DequantizeLinear", "d0", ["xq", "s", "z"], ["xf"]),
             Node("QuantizeLinear", "q1", ["xf", "s2", "z2"], ["xq2"]),     # equal values
             Node("DequantizeLinear", "d1", ["xq2", "s2", "z2"], ["y1"]),
             Node("QuantizeLinear", "q2", ["xf", "s3", "z"], ["xq3"]),       # other scale
             Node("DequantizeLinear", "d2", ["xq3", "s3", "z"], ["y2"])]
    g = Graph("p", [ValueInfo("x", "float32", [4])],
              [ValueInfo("y1", "float32", [4]), ValueInfo("y2", "float32", [4])], nodes, inits)
    assert eliminate_dq_q(g) == 1
    assert [n.name for n in g.nodes] == ["q0", "d0", "d1", "q2", "d2"]
    assert g.nodes[2].inputs[0] == "xq"


def test_sparsity_encodings_and_layer_info():
    g = conv_graph()
    _, q, _ = run_quant(g, QuantizeOptions(sparsity=0.5))
    enc = q.encodings["w1__q"]
    assert enc.sparsity == "bitmap"
    assert q.layers[0].sparsity >= 0.5
    assert np.mean(q.initializers["w1__q"] == 0) >= 0.5
    # N:M: conv kernels' last axis (3 / 1) is no multiple of 4 -> bitmap fallback, noted
    _, q, _ = run_quant(g, QuantizeOptions(nm=(2, 4)))
    assert q.encodings["w1__q"].sparsity == "bitmap" and "bitmap" in q.layers[0].extra["note"]
    r = _rng(6)
    mm = Graph("mm", [ValueInfo("x", "float32", [2, 8])], [ValueInfo("y", "float32", [2, 8])],
               [Node("MatMul", "mm", ["x", "B"], ["y"])],
               {"B": r.standard_normal((8, 8)).astype(np.float32)})
    _, q, _ = run_quant(mm, QuantizeOptions(nm=(2, 4)))
    enc = q.encodings["B__q"]
    assert (enc.sparsity, enc.n, enc.m) == ("nm", 2, 4)
    assert np.all((q.initializers["B__q"].reshape(8, 2, 4) != 0).sum(-1) <= 2)


def test_one_bit_weights_use_midrise():
    g = conv_graph()
    _, q, data = run_quant(g, QuantizeOptions(wbits=1, abits=None, mixed_precision="off"))
    assert q.encodings["w1__q"].scheme == "midrise" and q.encodings["w1__q"].bits == 1
    assert set(np.unique(q.initializers["w1__q"])) == {-1, 1}


def test_layer_sqnr_on_captured_floats():
    g = conv_graph()
    plan, q, data = run_quant(g, QuantizeOptions())
    fe = NumpyExecutable(g)
    caps = [{**fe.run(d, capture=plan.sqnr_names(g)), **d} for d in data[:2]]
    s8 = layer_sqnr(q, plan, caps)
    assert set(s8) == {"conv1", "conv2"} and min(s8.values()) > 25
    assert q.layers[0].sqnr_db == round(s8["conv1"], 2)
    plan4, q4, _ = run_quant(g, QuantizeOptions(wbits=3, abits=4))
    s4 = layer_sqnr(q4, plan4, caps)
    assert all(s4[k] < s8[k] for k in s8)


def test_mixed_precision_auto_keeps_depthwise_and_small_layers_at_8_bits(det_model):
    from converters.onnx_import import import_onnx
    from converters.options import QuantizeOptions
    from converters.quantize import plan_quantization

    g = import_onnx(det_model)
    auto = {lp.name: lp for lp in plan_quantization(g, QuantizeOptions(wbits=4)).layers}
    off = {lp.name: lp for lp in plan_quantization(g, QuantizeOptions(wbits=4, mixed_precision="off")).layers}
    assert all(lp.wbits == 4 for lp in off.values() if lp.wbits)
    promoted = [n for n, lp in auto.items() if lp.wbits == 8]
    assert promoted and len(promoted) < len(auto)
    for name in promoted:
        node = auto[name].node
        w = g.initializers[node.inputs[1]]
        assert w.size <= 10000 or int(node.attrs.get("group", 1)) > 1
        assert "mixed precision" in auto[name].note
    big = [n for n, lp in auto.items() if g.initializers[lp.node.inputs[1]].size > 10000
           and int(lp.node.attrs.get("group", 1)) == 1]
    assert big and all(auto[n].wbits == 4 for n in big)
    # an explicit per-layer override wins over the policy
    pinned = plan_quantization(g, QuantizeOptions(wbits=4, layer_bits={promoted[0]: 3}))
    assert {lp.name: lp.wbits for lp in pinned.layers}[promoted[0]] == 3
    # at 8 bits the policy does nothing
    assert all(lp.wbits == 8 for lp in plan_quantization(g, QuantizeOptions(wbits=8)).layers if lp.wbits)
