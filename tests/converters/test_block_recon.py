"""Block reconstruction (converters/recon/block.py) and Hutchinson sensitivities (converters/mixed/hessian.py):
the blocks tile the graph at residual ends, the JAX simulation is the quantized graph the runtime runs, the
learned blocks beat plain rounding on inputs they never saw, and the Hessian trace estimate is the exact
trace on a model where it is known."""
import numpy as np
import pytest

from converters.calibration import RandomReader, first_batches
from converters.convert import quantize_model
from converters.mixed.sensitivity import make_runner, relative_error
from converters.options import ConvertOptions

pytest.importorskip("onnxruntime")
jax = pytest.importorskip("jax", reason="block reconstruction needs the `train` extra (JAX)")


def _residual_graph(tmp_path):
    """Two residual blocks of two 3x3 convs each (outlier weights in one), a stem and a head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from converters.onnx_import import import_onnx
    r = np.random.default_rng(5)

    def t(n, a):
        return numpy_helper.from_array(a.astype(np.float32), n)
    c = 16
    inits = [t("ws", r.standard_normal((c, 3, 3, 3)) * 0.4), t("bs", r.standard_normal(c) * 0.1),
             t("wh", r.standard_normal((4, c, 1, 1)) * 0.3)]
    nodes = [helper.make_node("Conv", ["x", "ws", "bs"], ["s"], name="stem", pads=[1] * 4),
             helper.make_node("Relu", ["s"], ["h0"])]
    for b in range(2):
        w1 = r.standard_normal((c, c, 3, 3)) * 0.12
        w1[:, 0, 1, 1] = 2.5 * np.sign(r.standard_normal(c))        # a few large weights: a coarse low-bit grid
        inits += [t(f"w{b}a", w1), t(f"w{b}b", r.standard_normal((c, c, 3, 3)) * 0.1),
                  t(f"b{b}", r.standard_normal(c) * 0.1)]
        nodes += [helper.make_node("Conv", [f"h{b}", f"w{b}a", f"b{b}"], [f"u{b}"], name=f"blk{b}a", pads=[1] * 4),
                  helper.make_node("Relu", [f"u{b}"], [f"v{b}"]),
                  helper.make_node("Conv", [f"v{b}", f"w{b}b"], [f"z{b}"], name=f"blk{b}b", pads=[1] * 4),
                  helper.make_node("Add", [f"z{b}", f"h{b}"], [f"s{b}"]),
                  helper.make_node("Relu", [f"s{b}"], [f"h{b + 1}"])]
    nodes.append(helper.make_node("Conv", ["h2", "wh"], ["y"], name="head"))
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 10, 10])], inits)
    p = tmp_path / "res.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), p)
    return import_onnx(p)


def _held_out(graph, qgraph, seed):
    batches = first_batches(RandomReader(graph.inputs, 6, seed=seed), 6)
    _, rf = make_runner(graph, "ort")
    _, rq = make_runner(qgraph, "ort")
    return relative_error([rq(b) for b in batches], [rf(b) for b in batches])


def test_blocks_tile_the_graph_and_end_at_residual_joins(tmp_path):
    from converters.quantize import plan_quantization
    from converters.recon.block import blocks, live_sizes
    g = _residual_graph(tmp_path)
    plan = plan_quantization(g, ConvertOptions(wbits=4, abits=8).quantize_options())
    cuts = blocks(g, plan, max_layers=2)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(g.nodes)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
    live = live_sizes(g)
    assert [live[end] for _, end in cuts[:-1]] == [1] * (len(cuts) - 1)       # one tensor crosses each cut
    assert len(cuts) >= 2


def test_the_simulation_is_the_quantized_graph(tmp_path):
    """The JAX model of the quantized network (plain rounding, calibrated steps) against the package's
    graph on the numpy oracle: the difference is float accumulation order, far below the quantization."""
    import converters.recon.block as B
    from converters.methods import get_method
    g = _residual_graph(tmp_path)
    calib = RandomReader(g.inputs, 4, seed=0)
    opts = ConvertOptions(wbits=4, abits=8, calib_random=4, progress=False, mixed_precision="off", method="rtn")
    res = quantize_model(g, opts, calib)
    layers = B._prepare_layers(g, res.plan, opts.quantize_options(), get_method("rtn"))
    sim = B._Sim(g, layers, res.calibration.ranges, 8)
    x = first_batches(RandomReader(g.inputs, 1, seed=9), 1)[0]
    got = np.asarray(sim.run(g.nodes, {"x": x["x"]}, {"v": {}, "a": {}}, "rtn", None)["y"])
    _, rq = make_runner(res.graph, "numpy")
    _, rf = make_runner(g, "numpy")
    want, flt = rq(x)["y"], rf(x)["y"]
    quant_err = float(np.sum((want - flt) ** 2))
    assert float(np.sum((got - want) ** 2)) < 0.02 * quant_err


@pytest.mark.parametrize("name, abits", [("qdrop-block", 8), ("brecq", None)])
def test_block_reconstruction_beats_plain_rounding_on_held_out_inputs(tmp_path, name, abits):
    g = _residual_graph(tmp_path)
    calib = RandomReader(g.inputs, 8, seed=0)
    base = dict(wbits=3, abits=abits, calib_random=8, progress=False, mixed_precision="off", method="rtn",
                recon_batches=8)
    plain = quantize_model(g, ConvertOptions(**base), calib)
    fitted = quantize_model(g, ConvertOptions(recon=name, recon_iters=150, **base), calib)
    meta = fitted.graph.metadata["quantization_passes"][name]
    assert meta["blocks"] >= 2 and meta["blocks_kept"] >= 1 and meta["kept"] and meta["median_error_gain"] > 1.05
    if abits is not None:
        assert meta["ranges_learned"] > 0
    for seed in (101, 202):
        f, p = _held_out(g, fitted.graph, seed), _held_out(g, plain.graph, seed)
        print(name, seed, f, p)
        assert f < 0.85 * p


def test_hutchinson_trace_is_the_exact_trace_of_a_linear_layer():
    """y = x W: H = J^T J / ||y||^2 has trace N ||X||^2 / ||X W||^2 (N outputs per row)."""
    from converters.mixed.hessian import hessian_traces
    from converters.quantize import plan_quantization
    from edgert.ir import Graph, Node, ValueInfo
    r = np.random.default_rng(0)
    w = r.standard_normal((6, 5)).astype(np.float32)
    g = Graph(name="lin", nodes=[Node("MatMul", "mm", ["x", "w"], ["y"], {})],
              inputs=[ValueInfo("x", "float32", [7, 6])], outputs=[ValueInfo("y", "float32", [7, 5])],
              initializers={"w": w})
    plan = plan_quantization(g, ConvertOptions(wbits=4, abits=None).quantize_options())
    batches = [{"x": r.standard_normal((7, 6)).astype(np.float32)} for _ in range(2)]
    est = hessian_traces(g, plan.layers, batches, samples=400)["w"]
    exact = 5 * sum(float(np.sum(b["x"] ** 2)) for b in batches) / sum(float(np.sum((b["x"] @ w) ** 2)) for b in batches)
    assert est == pytest.approx(exact, rel=0.08)


def test_hutchinson_allocation_runs_within_the_budget(tmp_path):
    g = _residual_graph(tmp_path)
    calib = RandomReader(g.inputs, 4, seed=0)
    res = quantize_model(g, ConvertOptions(abits=None, avg_bits=4.0, calib_random=4, progress=False, method="rtn",
                                           mixed_sensitivity="hutchinson", mixed_batches=2), calib)
    rep = res.mixed
    assert rep.avg_bits <= 4.0 + 1e-6 and rep.measured_error > 0
    assert len(set(rep.bits.values())) >= 2            # the outlier-weight convs get other widths


def test_cli_block_pass_crops_and_hutchinson(tmp_path):
    import json

    from click.testing import CliRunner

    from edgert.cli import main
    _residual_graph(tmp_path)
    src, pkg = str(tmp_path / "res.onnx"), tmp_path / "res.pkg"
    r = CliRunner().invoke(main, ["convert", src, "-o", str(pkg), "--wbits", "4", "--pass", "qdrop-block",
                                  "--recon-iters", "5", "--recon-crop", "8", "--calib-random", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    meta = json.loads(CliRunner().invoke(main, ["inspect", str(pkg), "--json"]).output)["models"][0]["metadata"]
    assert meta["quantization_passes"]["qdrop-block"]["iters"] == 5
    r = CliRunner().invoke(main, ["convert", src, "-o", str(pkg), "--avg-bits", "5",
                                  "--sensitivity", "hutchinson", "--calib-random", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["convert", src, "-o", str(pkg), "--pass", "brecq", "--recon-crop", "64",
                                  "--calib-random", "2", "--quiet"])
    assert r.exit_code != 0 and "crops" in r.output and "Traceback" not in r.output, r.output
