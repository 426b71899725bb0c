"""OS+ (converters/outliers): the rewrite leaves the float model's function unchanged and lowers the
W8A8 error where an activation has outlier channels."""
import copy

import numpy as np
import pytest

from converters.calibration import ListReader, make_capture_runner
from converters.convert import quantize_model
from converters.mixed.sensitivity import make_runner, relative_error
from converters.options import ConvertOptions
from converters.outliers import get_outlier_pass, known_outlier_passes
from converters.outliers import os_plus as O
from edgert.errors import ConversionError

pytest.importorskip("onnxruntime")
C, T = 16, 24


def _graph(tmp_path):
    """x [1, T, C] -> x * gamma + beta (a LayerNorm's tail) -> two MatMuls -> their sum."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from converters.onnx_import import import_onnx
    r = np.random.default_rng(0)

    def t(n, a):
        return numpy_helper.from_array(a.astype(np.float32), n)
    nodes = [helper.make_node("Mul", ["x", "gamma"], ["m"], name="ln_scale"),
             helper.make_node("Add", ["m", "beta"], ["y"], name="ln_shift"),
             helper.make_node("MatMul", ["y", "w1"], ["a"], name="fc1"),
             helper.make_node("MatMul", ["y", "w2"], ["b"], name="fc2"),
             helper.make_node("Add", ["a", "b"], ["out"], name="sum")]
    gamma = np.ones(C)
    gamma[3] = 40.0                                   # an outlier channel, as LayerNorms grow them
    beta = r.standard_normal(C) * 0.1
    beta[7] = 25.0                                    # and an offset one (what the shift removes)
    g = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, C])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, T, 8])],
                          [t("gamma", gamma), t("beta", beta), t("w1", r.standard_normal((C, 8)) * 0.3),
                           t("w2", r.standard_normal((C, 8)) * 0.3)])
    p = tmp_path / "ln.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), p)
    return import_onnx(p)


def _batches(seed, n):
    r = np.random.default_rng(seed)
    return [{"x": r.standard_normal((1, T, C)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("name", ["os+", "os-gamma"])
def test_outlier_passes_find_the_site_and_keep_the_float_function(tmp_path, name):
    graph = _graph(tmp_path)
    sites = O.find_sites(graph)
    assert len(sites) == 1 and {u.name for u in sites[0].consumers} == {"fc1", "fc2"}
    before = copy.deepcopy(graph)
    _, capture = make_capture_runner(graph, "ort")
    report = get_outlier_pass(name)(graph, _batches(0, 4), 8, capture)
    assert report["y"]["applied"] and report["y"]["max_scale"] > 4
    _, run_a = make_runner(before, "ort")
    _, run_b = make_runner(graph, "ort")
    for feeds in _batches(9, 3):
        np.testing.assert_allclose(run_b(feeds)["out"], run_a(feeds)["out"], rtol=1e-4, atol=1e-4)


def test_outlier_passes_lower_the_w8a8_error_on_held_out_inputs(tmp_path):
    held = _batches(123, 6)
    errs = {}
    for name in (None, "os+"):
        graph = _graph(tmp_path)
        ref_graph = copy.deepcopy(graph)
        q = quantize_model(graph, ConvertOptions(wbits=8, abits=8, calib_random=8, progress=False, outlier=name),
                           ListReader(_batches(0, 8)))
        _, rf = make_runner(ref_graph, "ort")
        _, rq = make_runner(q.graph, "ort")
        errs[name] = relative_error([rq(b) for b in held], [rf(b) for b in held])
    assert errs["os+"] < 0.5 * errs[None], errs
    assert {"os+", "os-gamma"} <= set(known_outlier_passes())
    with pytest.raises(ConversionError, match="outlier pass"):
        ConvertOptions(outlier="smoothquant").quantize_options()


def test_cli_pass_takes_outlier_and_reconstruction_passes(tmp_path):
    from click.testing import CliRunner
    from cli_helpers import convert_metadata

    from edgert.cli import main
    _graph(tmp_path)
    pkg = tmp_path / "ln.pkg"
    passes = convert_metadata(tmp_path / "ln.onnx", pkg, "--pass", "os+", "--pass", "adaround",
                              "--calib-random", "4")["quantization_passes"]
    assert passes["os+"] == {"sites": 1, "applied": 1} and passes["adaround"]["layers"] == 2
    for bad, msg in ((["--pass", "gptq"], "unknown --pass 'gptq'"), (["--pass", "qdrop", "--pass", "adaround"],
                                                                      "alternatives")):
        r = CliRunner().invoke(main, ["convert", str(tmp_path / "ln.onnx"), "-o", str(pkg), *bad,
                                      "--calib-random", "2", "--quiet"])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output


def test_gamma_migration_moves_the_outlier_from_the_activation_into_the_weights(tmp_path):
    """OS's gamma migration flattens the quantized activation, but the weight rows it scales carry the
    outlier instead: on this model the W8A8 error rises (why OS+ searches its scales)."""
    graph = _graph(tmp_path)
    _, capture = make_capture_runner(graph, "ort")
    feeds = _batches(5, 2)

    def spread():
        y = np.concatenate([capture(b, {"y"})["y"].reshape(-1, C) for b in feeds])
        half = (y.max(0) - y.min(0)) / 2
        return half.max() / np.median(half)
    before = spread()
    get_outlier_pass("os-gamma")(graph, feeds, 8, capture)
    _, capture = make_capture_runner(graph, "ort")
    assert spread() < before / 10
    w = graph.initializers["w1__osp"]
    assert np.abs(w[3]).max() > 20 * np.median(np.abs(w))
