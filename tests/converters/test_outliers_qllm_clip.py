"""QLLM channel disassembly / assembly (converters/outliers/qllm.py) and Outlier Suppression's
token-wise clipping observer (converters/observers/tokenclip.py)."""
import copy

import numpy as np
import pytest

from converters.calibration import ListReader, make_capture_runner
from converters.convert import quantize_model
from converters.mixed.sensitivity import make_runner, relative_error
from converters.observers import known_observers, make_observer, qparams_from_range
from converters.observers.tokenclip import ALPHAS, token_extremes
from converters.options import ConvertOptions
from converters.outliers import get_outlier_pass, known_outlier_passes
from converters.outliers import os_plus as O
from converters.outliers import qllm

C, T, N = 32, 32, 8


def _graph(tmp_path, paired_rows=False):
    """x [1, T, C] -> x * gamma + beta (a LayerNorm's tail, gamma[0] an outlier channel) -> two
    MatMuls -> their sum.  paired_rows: weight rows 2k and 2k+1 (k >= 1) equal in both MatMuls, so
    merging those channel pairs is exact."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from converters.onnx_import import import_onnx
    r = np.random.default_rng(0)

    def t(n, a):
        return numpy_helper.from_array(a.astype(np.float32), n)
    gamma = 1.0 + 0.1 * r.standard_normal(C)
    gamma[0] = 50.0
    beta = 0.1 * r.standard_normal(C)
    ws = [r.standard_normal((C, N)) * 0.3 for _ in range(2)]
    if paired_rows:
        for w in ws:
            w[3::2] = w[2::2]
    nodes = [helper.make_node("Mul", ["x", "gamma"], ["m"], name="ln_scale"),
             helper.make_node("Add", ["m", "beta"], ["y"], name="ln_shift"),
             helper.make_node("MatMul", ["y", "w1"], ["a"], name="fc1"),
             helper.make_node("MatMul", ["y", "w2"], ["b"], name="fc2"),
             helper.make_node("Add", ["a", "b"], ["out"], name="sum")]
    g = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, C])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, T, N])],
                          [t("gamma", gamma), t("beta", beta), t("w1", ws[0]), t("w2", ws[1])])
    p = tmp_path / "ln.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), p)
    return import_onnx(p)


def _batches(seed, n):
    r = np.random.default_rng(seed)
    return [{"x": r.standard_normal((1, T, C)).astype(np.float32)} for _ in range(n)]


def _assert_same_function(a, b, feeds):
    for backend in ("numpy", "ort"):
        _, run_a = make_runner(a, backend)
        _, run_b = make_runner(b, backend)
        for f in feeds:
            ref, got = run_a(f)["out"], run_b(f)["out"]
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


# --------------------------------------------------------------------------- QLLM

def test_qllm_disassembly_keeps_the_float_function(tmp_path):
    graph = _graph(tmp_path)
    before = copy.deepcopy(graph)
    _, capture = make_capture_runner(graph, "ort")
    report = get_outlier_pass("qllm")(graph, _batches(0, 4), 8, capture)["y"]
    assert report["applied"] and report["split_channels"] >= 1 and report["max_split"] >= 2
    assert "float_error" not in report
    gather = [n for n in graph.nodes if n.op == "Gather"]
    assert len(gather) == 1 and gather[0].inputs[0] == "y"
    idx = graph.initializers[gather[0].inputs[1]]
    assert idx.dtype == np.int64 and idx.size == C + report["extra_channels"]
    assert np.sum(idx == 0) == report["max_split"]                     # the outlier channel, split
    w = graph.initializers["w1__qllm"]
    np.testing.assert_array_equal(w, before.initializers["w1"][idx])   # rows duplicated, unscaled
    np.testing.assert_allclose(graph.initializers["gamma__qllm"][0] * report["max_split"],
                               before.initializers["gamma"][0], rtol=1e-6)
    _assert_same_function(before, graph, _batches(9, 3))


def test_qllm_choose_keeps_sub_channels_under_theta():
    r = np.random.default_rng(1)
    y = r.standard_normal((512, C)).astype(np.float32)
    y[:, 4] *= 40
    ws = [r.standard_normal((C, N)).astype(np.float32)]
    plan, before, after = qllm.choose(y, ws, 8)
    assert plan is not None and after < before / 4
    z = plan.activation(y)
    assert np.abs(z).max() <= plan.theta * (1 + 1e-5)
    np.testing.assert_allclose(z @ plan.weight(ws[0]), y @ ws[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("abits", [8, 6])
def test_qllm_lowers_the_quantized_error_on_held_out_inputs(tmp_path, abits):
    held = _batches(123, 6)
    errs = {}
    for name in (None, "qllm", "qllm-assemble"):
        graph = _graph(tmp_path, paired_rows=True)
        ref = copy.deepcopy(graph)
        q = quantize_model(graph, ConvertOptions(wbits=8, abits=abits, calib_random=8, progress=False,
                                                 outlier=name), ListReader(_batches(0, 8)))
        _, rf = make_runner(ref, "ort")
        _, rq = make_runner(q.graph, "ort")
        errs[name] = relative_error([rq(b) for b in held], [rf(b) for b in held])
        if name == "qllm":                               # the oracle runs the rewritten int graph too
            _, ro = make_runner(q.graph, "numpy")
            assert relative_error([ro(b) for b in held], [rf(b) for b in held]) == pytest.approx(errs[name], rel=0.05)
    print(f"A{abits} relative output error on held-out inputs: {errs}")
    assert errs["qllm"] < 0.5 * errs[None], errs
    assert errs["qllm-assemble"] < 0.5 * errs[None], errs


def test_qllm_assembly_keeps_the_width_and_merges_the_cheapest_pairs(tmp_path):
    """With weight rows 2k, 2k+1 equal, merging those channels is exact: assembly picks them, the
    MatMuls read C channels again, and the float function is kept."""
    graph = _graph(tmp_path, paired_rows=True)
    before = copy.deepcopy(graph)
    _, capture = make_capture_runner(graph, "ort")
    report = get_outlier_pass("qllm-assemble")(graph, _batches(0, 4), 8, capture)["y"]
    assert report["applied"] and report["extra_channels"] >= 1
    assert report["float_error"] < 1e-10
    assert graph.initializers["w1__qllm"].shape == (C, N) and graph.initializers["w2__qllm"].shape == (C, N)
    assert [n.op for n in graph.nodes].count("Gather") == 2
    _assert_same_function(before, graph, _batches(9, 3))


def test_qllm_assembly_reports_its_float_error_when_no_pair_is_exact(tmp_path):
    graph = _graph(tmp_path)
    _, capture = make_capture_runner(graph, "ort")
    report = qllm.run(graph, _batches(0, 4), 8, capture, qllm.QllmOptions(assemble=True))["y"]
    print(f"assembly on independent channels: {report}")
    assert report["float_error"] > 1e-8                # merged channels differ: approximate
    assert report["after"] < report["before"]


def test_qllm_is_selectable_by_name(tmp_path):
    assert {"qllm", "qllm-assemble"} <= set(known_outlier_passes())
    assert get_outlier_pass("qllm") is qllm.run
    ConvertOptions(outlier="qllm").quantize_options()
    assert len(O.find_sites(_graph(tmp_path))) == 1


# --------------------------------------------------------------------------- tokenclip

def _qdq_mse(x, lo, hi, qmin=-128, qmax=127):
    s, z = qparams_from_range(lo, hi, qmin, qmax)
    q = np.clip(np.rint(x / s) + int(z), qmin, qmax)
    return float(np.mean((x - (q - int(z)) * s) ** 2))


def _observe(name, chunks, qmin=-128, qmax=127):
    obs = make_observer(name)
    for c in chunks:
        obs.update(c)
    return obs, obs.range(qmin, qmax)


def _outlier_tokens(seed=0):
    """[batch, tokens, channels] N(0, 1), with 0.1 % of the tokens scaled 60x (OS's outlier tokens)."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((32, 128, 64)).astype(np.float32)
    x[r.random((32, 128)) < 1e-3] *= 60
    return x


def test_token_extremes_layouts():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    hi, lo = token_extremes(x)                         # NCHW: channels on axis 1
    assert hi.shape == (40,) and np.array_equal(hi, x.max(1).ravel()) and np.array_equal(lo, x.min(1).ravel())
    hi, lo = token_extremes(x[0])                      # [tokens..., channels]: the last axis
    assert hi.shape == (12,) and np.array_equal(hi, x[0].max(-1).ravel())
    y = x[0, 0].copy()
    y[1, 2] = np.nan
    hi, _ = token_extremes(y)
    assert hi[1] == np.nanmax(y[1])


@pytest.mark.parametrize("bits", [8, 6])
def test_tokenclip_clips_rare_outlier_tokens(bits):
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x = _outlier_tokens()
    _, (alo, ahi) = _observe("minmax", [x], qmin, qmax)
    obs, (blo, bhi) = _observe("tokenclip", [x], qmin, qmax)
    mse_mm, mse_tc = _qdq_mse(x, alo, ahi, qmin, qmax), _qdq_mse(x, blo, bhi, qmin, qmax)
    print(f"{bits}-bit: minmax {alo:.2f}..{ahi:.2f} mse {mse_mm:.3g}; tokenclip alpha {obs.alpha:.5f} "
          f"{blo:.2f}..{bhi:.2f} mse {mse_tc:.3g}")
    assert obs.alpha < 1.0
    assert bhi - blo < 0.9 * (ahi - alo)
    assert mse_tc < mse_mm


def test_tokenclip_keeps_minmax_without_outlier_tokens():
    x = np.random.default_rng(2).uniform(-1, 2, (32, 128, 64)).astype(np.float32)
    obs, rng = _observe("tokenclip", np.split(x, 4))
    _, mm = _observe("minmax", [x])
    assert obs.alpha == 1.0 and rng == mm


def test_tokenclip_never_worse_than_minmax_on_gaussian():
    x = np.random.default_rng(3).standard_normal((32, 128, 64)).astype(np.float32)
    obs, (blo, bhi) = _observe("tokenclip", [x])
    _, (alo, ahi) = _observe("minmax", [x])
    print(f"gaussian: tokenclip alpha {obs.alpha:.5f}, mse {_qdq_mse(x, blo, bhi):.3g} vs minmax "
          f"{_qdq_mse(x, alo, ahi):.3g}")
    assert _qdq_mse(x, blo, bhi) <= _qdq_mse(x, alo, ahi)


def test_tokenclip_streaming_matches_one_batch():
    x = _outlier_tokens()
    one, (lo1, hi1) = _observe("tokenclip", [x])
    many, (lo2, hi2) = _observe("tokenclip", np.split(x, 16))
    print(f"one batch: alpha {one.alpha:.5f} {lo1:.3f}..{hi1:.3f}; 16 batches: alpha {many.alpha:.5f} "
          f"{lo2:.3f}..{hi2:.3f}")
    span = hi1 - lo1
    assert one.alpha < 1.0
    assert abs(lo1 - lo2) < 0.01 * span and abs(hi1 - hi2) < 0.01 * span
    grid = list(ALPHAS)
    assert abs(grid.index(one.alpha) - grid.index(many.alpha)) <= 1      # within one alpha grid step
    assert one.maxima.counts.size <= one.config.bins and many.values.counts.size <= many.config.bins


def test_tokenclip_registered_and_empty_is_zero():
    assert "tokenclip" in known_observers()
    assert make_observer("tokenclip").range() == (0.0, 0.0)


# --------------------------------------------------------------------------- CLI

def test_cli_takes_qllm_pass_and_tokenclip_observer(tmp_path):
    from cli_helpers import convert_metadata
    _graph(tmp_path)
    meta = convert_metadata(tmp_path / "ln.onnx", tmp_path / "ln.pkg", "--pass", "qllm", "--observer", "tokenclip",
                            "--calib-random", "4")
    assert meta["quantization_passes"]["qllm"] == {"sites": 1, "applied": 1}
    assert meta["quantization"]["observer"] == "tokenclip"
