"""Reconstruction passes (converters/recon): the unfolding matches ONNX Runtime's convolution, no
optimisation is plain rounding, and the learned rounding beats it on inputs it never saw."""
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.calibration import RandomReader
from converters.convert import quantize_model
from converters.options import ConvertOptions
from converters.recon import ReconOptions, get_pass, known_passes
from converters.recon.jobs import im2col
from converters.recon.reconstruct import gram, round_layer
from edgert.errors import ConversionError

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_mixed import _graph, _held_out_error  # noqa: E402


@pytest.mark.parametrize("k, stride, pads, dil, groups", [
    (3, 1, [1, 1, 1, 1], 1, 1), (3, 2, [1, 0, 1, 2], 1, 1), (5, 1, [2, 2, 2, 2], 1, 6), (3, 1, [2, 2, 2, 2], 2, 2),
    (1, 1, [0, 0, 0, 0], 1, 1)])
def test_im2col_rows_times_weights_is_the_convolution(k, stride, pads, dil, groups):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 9, 11)).astype(np.float32)
    w = rng.standard_normal((12, 6 // groups, k, k)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[k, k], strides=[stride] * 2, pads=pads,
                            dilations=[dil] * 2, group=groups)
    g = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    y = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(),
                             providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    rows = im2col(x, k, k, [stride] * 2, pads, [dil] * 2, groups)                  # [G, B*Ho*Wo, K]
    wk = w.reshape(groups, 12 // groups, -1).transpose(0, 2, 1)                      # [G, K, Og]
    out = np.einsum("grk,gko->gro", rows, wk)                                        # [G, B*Ho*Wo, Og]
    b, _, ho, wo = y.shape
    got = out.reshape(groups, b, ho, wo, 12 // groups).transpose(1, 0, 4, 2, 3).reshape(y.shape)
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4)


def test_no_optimisation_is_plain_rounding():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((1, 16, 8))
    s = np.abs(w).max(1, keepdims=True) / 7
    # correlated inputs (as real activations are): independent ones make rounding to nearest optimal
    x = rng.standard_normal((1, 256, 4)) @ rng.standard_normal((4, 16)) + 0.1 * rng.standard_normal((1, 256, 16))
    a, b = gram(x, None, 0.0, 1, rng)
    q, rep = round_layer(w, s, 7, a, b, ReconOptions(iters=0))
    rtn = np.clip(np.rint(w / s), -7, 7)
    assert np.mean(q == rtn) > 0.99 and rep["rec"] == pytest.approx(rep["rec_rtn"], rel=0.05)
    q2, rep2 = round_layer(w, s, 7, a, b, ReconOptions(iters=300))
    assert rep2["rec"] < 0.5 * rep2["rec_rtn"] and np.abs(q2 - rtn).max() <= 1        # one step from rounding


def test_passes_are_registered_and_unknown_ones_refused():
    assert {"adaround", "qdrop"} <= set(known_passes())
    assert get_pass("qdrop").drop_prob == 0.5 and get_pass("adaround").drop_prob == 0.0
    with pytest.raises(ConversionError, match="reconstruction pass"):
        ConvertOptions(recon="gptq").quantize_options()


@pytest.mark.parametrize("name, abits", [("adaround", None), ("qdrop", 8)])
def test_learned_rounding_beats_plain_rounding_on_held_out_inputs(tmp_path, name, abits):
    graph = _graph(tmp_path)
    calib = RandomReader(graph.inputs, 8, seed=0)
    base = dict(wbits=4, abits=abits, calib_random=8, progress=False, mixed_precision="off", method="rtn")
    plain = quantize_model(graph, ConvertOptions(**base), calib)
    fitted = quantize_model(graph, ConvertOptions(recon=name, recon_iters=200, **base), calib)
    meta = fitted.graph.metadata["quantization_passes"][name]
    assert meta["layers"] == 4 and meta["median_error_gain"] > 1.5
    assert meta["kept"] and meta["error_learned"] < meta["error_plain"]      # the model-level check
    for seed in (101, 202):
        assert _held_out_error(graph, fitted.graph, seed) < 0.85 * _held_out_error(graph, plain.graph, seed)
