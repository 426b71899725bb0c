"""NoisyQuant and PTQ4SAM's bimodal integration (converters/outliers): both rewrites keep the float
function, and lower the quantized output error on held-out inputs where their activation pattern
(heavy tail / bimodal key channels) is present."""
import copy

import numpy as np
import pytest

from converters.calibration import ListReader, make_capture_runner
from converters.convert import quantize_model
from converters.mixed.sensitivity import make_runner, relative_error
from converters.options import ConvertOptions
from converters.outliers import get_outlier_pass, known_outlier_passes
from converters.outliers import noisyquant as NQ
from converters.outliers import ptq4sam as BIG

pytest.importorskip("onnxruntime")
BACKENDS = ("numpy", "ort")


def _model(tmp_path, name, nodes, inputs, outputs, inits):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from converters.onnx_import import import_onnx
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    vo = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
    t = [numpy_helper.from_array(a if a.dtype.kind in "iu" else a.astype(np.float32), n)
         for n, a in ((n, np.asarray(a)) for n, a in inits.items())]
    p = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, name, vi, vo, t),
                                opset_imports=[helper.make_opsetid("", 13)]), p)
    return import_onnx(p)


def _run(graph, backend, batches):
    _, run = make_runner(graph, backend)
    return [run(b) for b in batches]


# ------------------------------------------------------------------------------------- NoisyQuant

C, N, T = 32, 16, 64
AMAX = 60.0                     # the massive channels' magnitude: it sets the activation range


def _step(bits):
    from converters.observers.base import qparams_from_range
    from converters.quantize import abits_range
    return float(qparams_from_range(-AMAX, AMAX, *abits_range(bits))[0])


def _nq_graph(tmp_path, kind="matmul"):
    """x -> Add(beta) (a per-channel offset) -> MatMul / Gemm / 1x1 Conv -> out.  The offsets put
    every non-massive channel half a step (at A8) off the grid: the bulk of the activation sits
    between two grid points, the case NoisyQuant's noise improves."""
    from onnx import helper
    r = np.random.default_rng(0)
    step = _step(8)
    beta = (r.integers(-6, 6, C) + 0.5) * step
    beta[:2] = 0.0
    w = r.standard_normal((C, N)) * 0.3
    if kind == "matmul":
        nodes = [helper.make_node("Add", ["x", "beta"], ["a"], name="offset"),
                 helper.make_node("MatMul", ["a", "w"], ["out"], name="fc")]
        return _model(tmp_path, kind, nodes, [("x", [1, T, C])], [("out", [1, T, N])], {"beta": beta, "w": w})
    if kind == "gemm":
        nodes = [helper.make_node("Add", ["x", "beta"], ["a"], name="offset"),
                 helper.make_node("Gemm", ["a", "w", "b"], ["out"], name="fc", transB=1, alpha=0.5)]
        return _model(tmp_path, kind, nodes, [("x", [T, C])], [("out", [T, N])],
                      {"beta": beta, "w": w.T, "b": r.standard_normal(N)})
    nodes = [helper.make_node("Add", ["x", "beta"], ["a"], name="offset"),
             helper.make_node("Conv", ["a", "w", "b"], ["out"], name="fc", kernel_shape=[1, 1])]
    return _model(tmp_path, kind, nodes, [("x", [1, C, 8, 8])], [("out", [1, N, 8, 8])],
                  {"beta": beta.reshape(C, 1, 1), "w": w.T.reshape(N, C, 1, 1), "b": r.standard_normal(N)})


def _nq_batches(seed, n, kind="matmul"):
    """Channels 0-1 massive (+-40..60, one row at +-AMAX in each batch), the rest narrow (std 0.05)."""
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = r.standard_normal((T, C)) * 0.05
        x[:, :2] = np.sign(r.standard_normal((T, 2))) * r.uniform(40, AMAX, (T, 2))
        x[0, 0], x[1, 0] = AMAX, -AMAX
        if kind == "matmul":
            x = x[None]
        elif kind == "conv":
            x = x.T.reshape(1, C, 8, 8)
        out.append({"x": x.astype(np.float32)})
    return out


def _force_noise(graph, bits=8):
    """Apply the noisy bias to every site with a fixed sample (no search)."""
    r = np.random.default_rng(7)
    sites = NQ.find_sites(graph)
    for s in sites:
        NQ.apply(graph, s, r.uniform(-_step(bits) / 2, _step(bits) / 2, C).astype(np.float32))
    return len(sites)


@pytest.mark.parametrize("kind", ["matmul", "gemm", "conv"])
def test_noisyquant_keeps_the_float_function(tmp_path, kind):
    graph = _nq_graph(tmp_path, kind)
    before = copy.deepcopy(graph)
    assert _force_noise(graph) == 1
    assert [n.op for n in graph.nodes] == ["Add", "Add", {"matmul": "MatMul"}.get(kind, kind.capitalize()), "Add"]
    held = _nq_batches(9, 3, kind)
    for backend in BACKENDS:
        ref, got = _run(before, backend, held), _run(graph, backend, held)
        assert relative_error(got, ref) < 1e-10, backend
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g["out"], r["out"], rtol=1e-5, atol=1e-5 * np.abs(r["out"]).max())


@pytest.mark.parametrize("kind", ["matmul", "gemm", "conv"])
def test_noisyquant_refit_removes_the_noise_exactly_after_weight_quantization(tmp_path, kind):
    """Weight-only (the activation stays float): with the removal row refitted to -N W_q the
    quantized graph equals the one without the pass to float rounding; with -N W it does not."""
    opts = ConvertOptions(wbits=4, abits=None, progress=False, mixed_precision="off")
    plain = quantize_model(_nq_graph(tmp_path, kind), opts).graph
    graph = _nq_graph(tmp_path, kind)
    _force_noise(graph)
    noisy = quantize_model(graph, opts).graph
    refit = copy.deepcopy(noisy)
    assert NQ.refit_noise_bias(refit) == 1 and NQ.refit_noise_bias(plain) == 0
    held = _nq_batches(5, 3, kind)
    for backend in BACKENDS:
        ref = _run(plain, backend, held)
        err_refit = relative_error(_run(refit, backend, held), ref)
        err_stale = relative_error(_run(noisy, backend, held), ref)
        print(f"{kind} {backend}: refit {err_refit:.3g}, stale -N W {err_stale:.3g}")
        assert err_refit < 1e-12 and err_stale > 1000 * max(err_refit, 1e-14), (err_refit, err_stale)


def _w8a8_error(tmp_path, outlier, bits=8):
    graph = _nq_graph(tmp_path)
    ref_graph = copy.deepcopy(graph)
    q = quantize_model(graph, ConvertOptions(wbits=8, abits=bits, calib_random=8, progress=False, outlier=outlier),
                       ListReader(_nq_batches(0, 8)))
    held = _nq_batches(123, 6)
    return relative_error(_run(q.graph, "ort", held), _run(ref_graph, "ort", held)), q


def test_noisyquant_lowers_the_w8a8_error_on_held_out_inputs(tmp_path):
    """quantize_model refits the removal constant itself (converters/convert.py)."""
    base, _ = _w8a8_error(tmp_path, None)
    noisy, q = _w8a8_error(tmp_path, "noisyquant")
    print(f"W8A8 held-out relative error: plain {base:.4g}, noisyquant {noisy:.4g}")
    assert q.graph.metadata["quantization_passes"]["noisyquant"] == {"sites": 1, "applied": 1, "refit": 1}
    assert noisy < 0.6 * base, (noisy, base)
    assert "noisyquant" in known_outlier_passes()


def test_noisyquant_skips_light_tailed_inputs(tmp_path):
    graph = _nq_graph(tmp_path)
    _, capture = make_capture_runner(graph, "ort")
    r = np.random.default_rng(3)
    batches = [{"x": r.standard_normal((1, T, C)).astype(np.float32)} for _ in range(4)]
    report = get_outlier_pass("noisyquant")(graph, batches, 8, capture)
    assert report["fc"]["kurtosis"] < NQ.MIN_KURTOSIS and not report["fc"]["applied"]
    assert [n.op for n in graph.nodes] == ["Add", "MatMul"]


# ----------------------------------------------------------------------------------- PTQ4SAM BIG

D, H, TA = 32, 4, 24             # model width, heads, tokens
NB = 8                           # features of x that are a near-constant 3
DH = D // H


def _attention(tmp_path, fused=False, leak=False):
    """One attention block.  Feature 0 of x is a near-constant 3 (a bias-like feature) that the key
    projection maps to +-2 per channel, so every key channel sits in a peak at +6 or -6: the
    post-Key-Linear tensor is bimodal; the query projection maps it to +-0.5 with the same signs
    (queries and keys aligned).  fused: one QKV weight split by Reshape / Transpose / Split.
    leak: K is also a graph output (a flip would change it)."""
    from onnx import helper
    r = np.random.default_rng(1)
    wq, wk, wv, wo = (r.standard_normal((D, D)) * s for s in (0.1, 0.2, 0.2, 0.2))
    sign = np.where(r.random(D) < 0.5, -1.0, 1.0)
    wq[:NB], wk[:NB], wv[:NB] = sign / (2 * NB), 2 * sign / NB, 0.0
    bq, bk, bv = (r.standard_normal(D) * 0.1 for _ in range(3))
    mk = helper.make_node
    tail = [mk("Mul", ["qh", "scale"], ["qs"]), mk("MatMul", ["qs", "kt"], ["s"], name="scores"),
            mk("Softmax", ["s"], ["p"], axis=-1), mk("MatMul", ["p", "vh"], ["o"]),
            mk("Transpose", ["o"], ["o4"], perm=[0, 2, 1, 3]), mk("Reshape", ["o4", "s3"], ["o3"]),
            mk("MatMul", ["o3", "wo"], ["out"], name="o_proj")]
    inits = {"scale": np.float32(DH ** -0.5), "s3": np.array([1, TA, D], np.int64), "wo": wo}
    if fused:
        head = [mk("MatMul", ["x", "wqkv"], ["a"], name="qkv"), mk("Add", ["a", "bqkv"], ["qkv_b"]),
                mk("Reshape", ["qkv_b", "s5"], ["r5"]), mk("Transpose", ["r5"], ["t5"], perm=[2, 0, 3, 1, 4]),
                mk("Split", ["t5"], ["q5", "k5", "v5"], axis=0),      # torch's unbind(0)
                *(mk("Squeeze", [f"{n}5", "ax0"], [f"{n}h"]) for n in "qkv"),
                mk("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2])]
        inits.update(wqkv=np.concatenate([wq, wk, wv], 1), bqkv=np.concatenate([bq, bk, bv]),
                     s5=np.array([1, TA, 3, H, DH], np.int64), ax0=np.array([0], np.int64))
    else:
        head = []
        for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            head += [mk("MatMul", ["x", f"w{n}"], [f"{n}0"], name=f"{n}_proj"), mk("Add", [f"{n}0", f"b{n}"], [n]),
                     mk("Reshape", [n, "s4"], [f"{n}4"]), mk("Transpose", [f"{n}4"], [{"k": "kt"}.get(n, f"{n}h")],
                                                              perm=perm)]
        inits.update(wq=wq, wk=wk, wv=wv, bq=bq, bk=bk, bv=bv, s4=np.array([1, TA, H, DH], np.int64))
    outputs = [("out", [1, TA, D])] + ([("k", [1, TA, D])] if leak else [])
    return _model(tmp_path, "attn", head + tail, [("x", [1, TA, D])], outputs, inits)


def _attn_batches(seed, n):
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = r.standard_normal((1, TA, D))
        x[..., :NB] = 3.0 + 0.1 * r.standard_normal((1, TA, NB))
        out.append({"x": x.astype(np.float32)})
    return out


def _key_channels(graph, fused):
    """The key projection's output channels as [rows, D] on some inputs."""
    _, capture = make_capture_runner(graph, "numpy")
    name = "a" if fused else "k0"
    rows = np.concatenate([capture(b, {name})[name].reshape(-1, 3 * D if fused else D) for b in _attn_batches(4, 2)])
    return rows[:, D:2 * D] if fused else rows


@pytest.mark.parametrize("fused", [False, True])
def test_bimodal_integration_flips_key_channels_and_keeps_the_float_function(tmp_path, fused):
    graph = _attention(tmp_path, fused)
    sites, _ = BIG.find_sites(graph)
    assert len(sites) == 1 and [s.name for s in sites[0].scores] == ["scores"]
    before = copy.deepcopy(graph)
    _, capture = make_capture_runner(graph, "ort")
    report = get_outlier_pass("ptq4sam-bimodal")(graph, _attn_batches(0, 4), 8, capture)
    (entry,) = report.values()
    k_before = _key_channels(before, fused)
    negative = int(np.sum(k_before.mean(0) < 0))
    assert entry["applied"] and entry["flipped"] in (negative, D - negative) and 0 < negative < D, entry
    assert entry["after"] < 0.6 * entry["before"]
    k_after = _key_channels(graph, fused)
    assert len(set(np.sign(k_after.mean(0)))) == 1           # one peak: every key channel the same sign
    span = max(k_after.max(), 0) - min(k_after.min(), 0)     # the per-tensor range (it holds 0)
    assert span < 0.6 * (k_before.max() - k_before.min())
    if fused:                        # query column c flipped with key column D + c; V untouched
        cols = np.flatnonzero(np.any(graph.initializers[graph.nodes[0].inputs[1]] != before.initializers["wqkv"], 0))
        assert np.array_equal(cols[cols < D] + D, cols[cols >= D]) and cols.max() < 2 * D
    print(f"fused={fused}: {entry}")
    held = _attn_batches(9, 3)
    for backend in BACKENDS:
        ref, got = _run(before, backend, held), _run(graph, backend, held)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g["out"], r["out"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 6])
def test_bimodal_integration_lowers_the_quantized_error_on_held_out_inputs(tmp_path, bits):
    held = _attn_batches(123, 6)
    errs = {}
    for name in (None, "ptq4sam-bimodal"):
        graph = _attention(tmp_path)
        ref_graph = copy.deepcopy(graph)
        q = quantize_model(graph, ConvertOptions(wbits=8, abits=bits, calib_random=8, progress=False, outlier=name),
                           ListReader(_attn_batches(0, 8)))
        errs[name] = relative_error(_run(q.graph, "ort", held), _run(ref_graph, "ort", held))
    print(f"W8A{bits} held-out relative error: plain {errs[None]:.4g}, ptq4sam-bimodal {errs['ptq4sam-bimodal']:.4g}")
    assert errs["ptq4sam-bimodal"] < 0.75 * errs[None], errs
    assert "ptq4sam-bimodal" in known_outlier_passes()


def test_bimodal_integration_leaves_a_flip_that_would_show_alone(tmp_path):
    graph = _attention(tmp_path, leak=True)
    before = copy.deepcopy(graph)
    _, capture = make_capture_runner(graph, "ort")
    report = get_outlier_pass("ptq4sam-bimodal")(graph, _attn_batches(0, 2), 8, capture)
    (entry,) = report.values()
    assert not entry["applied"] and "another reader" in entry["reason"]
    assert graph.initializers.keys() == before.initializers.keys()


def test_bimodal_integration_is_a_no_op_without_attention(tmp_path):
    graph = _nq_graph(tmp_path)
    before = copy.deepcopy(graph)
    _, capture = make_capture_runner(graph, "ort")
    assert BIG.find_sites(graph)[0] == []
    assert get_outlier_pass("ptq4sam-bimodal")(graph, _nq_batches(0, 2), 8, capture) == {}
    assert [(n.op, n.inputs) for n in graph.nodes] == [(n.op, n.inputs) for n in before.nodes]
