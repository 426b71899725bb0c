"""QuantizeLinear / DequantizeLinear vs onnxruntime; QLinearConv / QLinearMatMul bit-exact vs a slow
int64 reference with the pure-Python TFLite requantization, and within 1 LSB of onnxruntime (which
requantizes in float)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgert.ir import Node
from edgert.ops import get_op

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


# ---- helpers ---------------------------------------------------------------------------------------
def run_ort(op: str, inputs: dict[str, np.ndarray | None], attrs: dict, opset: int = 13):
    """One-node model in onnxruntime; None inputs are omitted ("")."""
    names = [k if v is not None else "" for k, v in inputs.items()]
    node = helper.make_node(op, names, ["y"], **attrs)
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in inputs.items() if v is not None]
    graph = helper.make_graph([node], "g", vis, [onnx.ValueInfoProto(name="y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v for k, v in inputs.items() if v is not None})[0]


def run_edgert(op: str, inputs: list, attrs: dict, node_op=None):
    node = Node(op, "n", [f"i{j}" if v is not None else "" for j, v in enumerate(inputs)], ["y"],
                dict(attrs))
    return (node_op or get_op(node)).run(*inputs)[0]


def ref_quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = math.floor(q * (1 << 31) + 0.5)
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    return (0, 0) if shift < -31 else (q_fixed, shift)


def ref_requant(acc: int, m0: int, shift: int, zp: int, qmin: int, qmax: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier, transcribed from gemmlowp with Python ints."""
    x = min(max(acc, I32_MIN), I32_MAX)
    x = min(max(x << max(shift, 0), I32_MIN), I32_MAX)
    if x == I32_MIN and m0 == I32_MIN:
        hi = I32_MAX
    else:
        ab = x * m0
        t = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
        hi = abs(t) // (1 << 31) * (1 if t >= 0 else -1)
    e = max(-shift, 0)
    mask = (1 << e) - 1
    y = (hi >> e) + (1 if (hi & mask) > (mask >> 1) + (1 if hi < 0 else 0) else 0)
    return min(max(y + zp, qmin), qmax)


def requant_ref_array(acc: np.ndarray, mult: np.ndarray, zp: int, qmin: int, qmax: int,
                      axis: int) -> np.ndarray:
    """Element by element with the pure-Python reference; mult per channel along `axis`."""
    out = np.empty(acc.shape, np.int64)
    for idx in np.ndindex(*acc.shape):
        m = float(mult[idx[axis]] if mult.size > 1 else mult.reshape(-1)[0])
        m0, sh = ref_quantize_multiplier(m)
        out[idx] = ref_requant(int(acc[idx]), m0, sh, zp, qmin, qmax)
    return out


# ---- QuantizeLinear / DequantizeLinear --------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("axis_case", ["tensor", "axis1", "axis0"])
def test_quantize_linear_vs_ort(dtype, axis_case):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(np.float32)
    lo = 0 if dtype == np.uint8 else -10
    if axis_case == "tensor":
        scale, zp, attrs = np.float32(0.05), np.array(lo + 7, dtype), {}
        # exact ties k + 0.5 (round half to even) and saturation
        x.reshape(-1)[:6] = np.array([0.025, 0.075, -0.025, -0.125, 1e3, -1e3], np.float32)
    else:
        ax = 1 if axis_case == "axis1" else 0
        n = x.shape[ax]
        scale = (rng.random(n) * 0.1 + 0.01).astype(np.float32)
        zp = rng.integers(lo, lo + 20, n).astype(dtype)
        attrs = {"axis": ax}
    inputs = {"x": x, "s": np.asarray(scale), "z": zp}
    want = run_ort("QuantizeLinear", inputs, attrs)
    got = run_edgert("QuantizeLinear", list(inputs.values()), attrs)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    # edgert's qmin/qmax narrow the saturation range (abits < 8)
    got4 = run_edgert("QuantizeLinear", list(inputs.values()), {**attrs, "qmin": 0, "qmax": 15})
    np.testing.assert_array_equal(got4, np.clip(want, 0, 15))


@pytest.mark.parametrize("case", ["tensor", "axis", "int32", "nozp"])
def test_dequantize_linear_vs_ort(case):
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (4, 6)).astype(np.int8)
    attrs: dict = {}
    if case == "tensor":
        inputs = {"x": x, "s": np.asarray(np.float32(0.03)), "z": np.asarray(np.int8(-5))}
    elif case == "axis":
        inputs = {"x": x, "s": (rng.random(6) * 0.1).astype(np.float32),
                  "z": rng.integers(-9, 9, 6).astype(np.int8)}
        attrs = {"axis": 1}
    elif case == "int32":
        inputs = {"x": rng.integers(-10 ** 6, 10 ** 6, (4, 6)).astype(np.int32),
                  "s": np.asarray(np.float32(1e-4))}
    else:
        inputs = {"x": x.astype(np.uint8), "s": np.asarray(np.float32(0.5))}
    want = run_ort("DequantizeLinear", inputs, attrs)
    got = run_edgert("DequantizeLinear", list(inputs.values()), attrs)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("axis", [0, 1])
def test_dequantize_linear_blocked(axis):
    rng = np.random.default_rng(5)
    x = rng.integers(-8, 8, (8, 12)).astype(np.int8)
    bs = 4
    sshape = list(x.shape)
    sshape[axis] //= bs
    s = (rng.random(sshape) * 0.1 + 0.01).astype(np.float32)
    z = rng.integers(-3, 3, sshape).astype(np.int8)
    attrs = {"axis": axis, "block_size": bs}
    got = run_edgert("DequantizeLinear", [x, s, z], attrs)
    want_np = (x.astype(np.float32) - np.repeat(z, bs, axis)) * np.repeat(s, bs, axis)
    np.testing.assert_array_equal(got, want_np)
    try:
        want = run_ort("DequantizeLinear", {"x": x, "s": s, "z": z}, attrs, opset=21)
    except Exception as e:        # ORT without opset-21 blocked DequantizeLinear
        pytest.skip(f"onnxruntime cannot run blocked DequantizeLinear: {e}")
    np.testing.assert_array_equal(got, want)


# ---- QLinearConv -------------------------------------------------------------------------------------
def ref_conv_acc(x, xzp, w, wzp, b, group, strides, pads, dil):
    """Σ (x − x_zp)(w − w_zp) + B in int64 with explicit loops (2-D, NCHW)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xi = np.pad(x.astype(np.int64) - xzp, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    wi = w.astype(np.int64) - np.asarray(wzp, np.int64).reshape(-1, 1, 1, 1)
    oh = (h + pads[0] + pads[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    og = o // group
    acc = np.zeros((n, o, oh, ow), np.int64)
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                rows = i * strides[0] + np.arange(kh) * dil[0]
                cols = j * strides[1] + np.arange(kw) * dil[1]
                win = xi[:, g * cg:(g + 1) * cg][:, :, rows][:, :, :, cols]
                acc[:, oc, i, j] = np.einsum("nckl,ckl->n", win, wi[oc])
    if b is not None:
        acc += b.astype(np.int64).reshape(1, -1, 1, 1)
    return acc


QCONV_CASES = [
    # x shape, w shape, attrs (2-D)
    ((1, 3, 7, 7), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 4, 8, 6), (6, 2, 3, 3), {"group": 2, "pads": [1, 0, 1, 2], "strides": [2, 1]}),
    ((1, 6, 9, 9), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 4, 9, 8), (8, 1, 3, 3), {"group": 4, "pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ((1, 5, 8, 8), (3, 5, 1, 1), {}),
    ((1, 8, 10, 10), (4, 8, 3, 3), {"dilations": [2, 1], "pads": [0, 1, 2, 1]}),
]


def _qconv_inputs(rng, xs, ws, attrs, xdt, per_channel, wzp_nonzero=False):
    o = ws[0]
    if xdt == np.uint8:
        x = rng.integers(0, 256, xs).astype(np.uint8)
        xzp = np.asarray(np.uint8(rng.integers(90, 160)))
        w = rng.integers(0, 256, ws).astype(np.uint8)
        wzp = np.full(o if per_channel else (), 128 if not wzp_nonzero else 120, np.uint8)
        if wzp_nonzero and per_channel:
            wzp = rng.integers(100, 150, o).astype(np.uint8)
    else:
        x = rng.integers(-128, 128, xs).astype(np.int8)
        x.reshape(-1)[:3] = [-128, 127, -128]
        xzp = np.asarray(np.int8(rng.integers(-20, 20)))
        w = rng.integers(-127, 128, ws).astype(np.int8)
        w.reshape(-1)[:2] = [-127, 127]
        wzp = np.zeros(o if per_channel else (), np.int8)
    xsc = np.asarray(np.float32(0.02))
    wsc = (rng.random(o) * 0.01 + 0.002).astype(np.float32) if per_channel \
        else np.asarray(np.float32(0.006))
    b = rng.integers(-5000, 5000, o).astype(np.int32)
    g = attrs.get("group", 1)
    nd = 2
    pads = attrs.get("pads", [0] * 2 * nd)
    acc = ref_conv_acc(x, int(xzp), w, wzp, b, g, attrs.get("strides", [1, 1]), pads,
                       attrs.get("dilations", [1, 1]))
    # y_scale so that outputs span most of the range (and some saturate)
    ysc = np.asarray(np.float32(float(xsc) * float(np.max(wsc)) * np.abs(acc).std() / 50 + 1e-9))
    yzp = np.asarray(np.array(3 if xdt == np.int8 else 130, xdt))
    return [x, xsc, xzp, w, wsc, wzp, ysc, yzp, b], acc


def _mult(xsc, wsc, ysc):
    return (np.float64(xsc) * np.asarray(wsc, np.float64).reshape(-1)) / np.float64(ysc)


@pytest.mark.parametrize("xs,ws,attrs", QCONV_CASES)
@pytest.mark.parametrize("xdt,per_channel", [(np.int8, True), (np.int8, False), (np.uint8, False)])
def test_qlinearconv_bit_exact_and_vs_ort(xs, ws, attrs, xdt, per_channel):
    rng = np.random.default_rng(hash((xs, ws, per_channel)) & 0xFFFF)
    inputs, acc = _qconv_inputs(rng, xs, ws, attrs, xdt, per_channel)
    qmin, qmax = (-128, 127) if xdt == np.int8 else (0, 255)
    got = run_edgert("QLinearConv", inputs, attrs)
    assert got.dtype == xdt
    want = requant_ref_array(acc, _mult(inputs[1], inputs[4], inputs[6]), int(inputs[7]),
                             qmin, qmax, axis=1)
    np.testing.assert_array_equal(got.astype(np.int64), want)
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
    ort_y = run_ort("QLinearConv", dict(zip(names, inputs)), attrs, opset=13)
    assert np.abs(got.astype(np.int32) - ort_y.astype(np.int32)).max() <= 1


@pytest.mark.parametrize("xs,ws,attrs", QCONV_CASES[:3])
def test_qlinearconv_nonzero_w_zp_and_qmin(xs, ws, attrs):
    rng = np.random.default_rng(11)
    inputs, acc = _qconv_inputs(rng, xs, ws, attrs, np.uint8, True, wzp_nonzero=True)
    attrs = {**attrs, "qmin": 130, "qmax": 240}        # a folded ReLU raises qmin to the zero point
    got = run_edgert("QLinearConv", inputs, attrs)
    want = requant_ref_array(acc, _mult(inputs[1], inputs[4], inputs[6]), int(inputs[7]),
                             130, 240, axis=1)
    np.testing.assert_array_equal(got.astype(np.int64), want)


def test_qlinearconv_caches_per_instance():
    rng = np.random.default_rng(12)
    inputs, _ = _qconv_inputs(rng, (1, 3, 6, 6), (4, 3, 3, 3), {}, np.int8, True)
    op = get_op(Node("QLinearConv", "q", [f"i{j}" for j in range(9)], ["y"], {}))
    y1 = op.run(*inputs)[0]
    packed = op._packed
    y2 = op.run(*inputs)[0]
    assert op._packed is packed
    np.testing.assert_array_equal(y1, y2)


# ---- QLinearMatMul -----------------------------------------------------------------------------------
@pytest.mark.parametrize("ashape", [(5, 40), (2, 3, 40), (1, 1200)])
@pytest.mark.parametrize("dt,per_col", [(np.int8, False), (np.int8, True), (np.uint8, False)])
def test_qlinearmatmul_bit_exact_and_vs_ort(ashape, dt, per_col):
    rng = np.random.default_rng(ashape[-1] + len(ashape))
    k, n = ashape[-1], 7
    if dt == np.int8:
        a = rng.integers(-128, 128, ashape).astype(np.int8)
        b = rng.integers(-127, 128, (k, n)).astype(np.int8)
        azp, bzp = np.asarray(np.int8(-9)), np.zeros(n if per_col else (), np.int8)
    else:
        a = rng.integers(0, 256, ashape).astype(np.uint8)
        b = rng.integers(0, 256, (k, n)).astype(np.uint8)
        azp, bzp = np.asarray(np.uint8(121)), np.asarray(np.uint8(133))
    asc = np.asarray(np.float32(0.03))
    bsc = (rng.random(n) * 0.01 + 0.001).astype(np.float32) if per_col else np.asarray(np.float32(0.004))
    acc = np.einsum("...k,kn->...n", a.astype(np.int64) - int(azp),
                    b.astype(np.int64) - bzp.astype(np.int64))
    ysc = np.asarray(np.float32(float(asc) * float(np.max(bsc)) * np.abs(acc).std() / 50))
    yzp = np.asarray(np.array(5 if dt == np.int8 else 128, dt))
    inputs = [a, asc, azp, b, bsc, bzp, ysc, yzp]
    qmin, qmax = (-128, 127) if dt == np.int8 else (0, 255)
    mult = _mult(asc, bsc, ysc)
    got = run_edgert("QLinearMatMul", inputs, {})
    assert got.dtype == dt and got.shape == ashape[:-1] + (n,)
    np.testing.assert_array_equal(got.astype(np.int64),
                                  requant_ref_array(acc, mult, int(yzp), qmin, qmax, axis=-1))
    # the edgert 9th input: int32 bias with scale a_scale·b_scale
    bias = rng.integers(-3000, 3000, n).astype(np.int32)
    got_b = run_edgert("QLinearMatMul", inputs + [bias], {"qmin": qmin + 10, "qmax": qmax - 10})
    np.testing.assert_array_equal(got_b.astype(np.int64), requant_ref_array(
        acc + bias, mult, int(yzp), qmin + 10, qmax - 10, axis=-1))
    names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
    try:
        ort_y = run_ort("QLinearMatMul", dict(zip(names, inputs)), {}, opset=21)
    except Exception as e:
        pytest.skip(f"onnxruntime rejects this QLinearMatMul variant: {e}")
    assert np.abs(got.astype(np.int32) - ort_y.astype(np.int32)).max() <= 1
