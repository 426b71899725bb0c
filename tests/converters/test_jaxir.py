"""converters/jaxir: every JAX lowering against the numpy oracle, on a graph that uses them all and on the
real PP-OCR models when they are installed."""
import numpy as np
import pytest

from edgert.errors import UnsupportedOp
from edgert.ir import Graph, Node, ValueInfo

jax = pytest.importorskip("jax", reason="converters/jaxir needs the `train` extra (JAX)")


def _oracle(graph: Graph, feeds: dict) -> dict:
    from converters.mixed.sensitivity import make_runner
    _, run = make_runner(graph, "numpy")
    return run(feeds)


def _jax(graph: Graph, feeds: dict) -> dict:
    from converters.jaxir import run_nodes
    env = run_nodes(graph.nodes, {k: jax.numpy.asarray(v) for k, v in feeds.items()}, graph.initializers)
    return {o.name: np.asarray(env[o.name]) for o in graph.outputs}


def _graph() -> Graph:
    """x [2, 4, 9, 9] through convolutions (grouped, depthwise, strided, dilated, transposed), pools with ceil_mode and
    padding, hard activations, a LayerNorm written out, attention-style reshapes, MatMul, Softmax of
    opset 11, Slice / Split / Concat / Resize (nearest)."""
    r = np.random.default_rng(0)
    f = lambda *s: r.standard_normal(s).astype(np.float32)   # noqa: E731
    i64 = lambda v: np.asarray(v, np.int64)                    # noqa: E731
    inits = {"w1": f(8, 4, 3, 3), "b1": f(8), "w2": f(8, 2, 3, 3), "wt": f(8, 4, 2, 2), "bt": f(4),
             "g": f(4), "beta": f(4), "two": np.asarray(2.0, np.float32), "eps": np.asarray(1e-5, np.float32),
             "wm": f(4, 6), "wd": f(16, 1, 3, 3), "bd": f(16), "shape": i64([2, -1, 4]), "st": i64([1]), "en": i64([5]), "ax": i64([1]),
             "scales": np.asarray([1, 1, 2, 2], np.float32), "roi": np.zeros(0, np.float32), "c6": f(6)}
    n = Node
    nodes = [
        n("Conv", "c1", ["x", "w1", "b1"], ["a"], {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
        n("HardSwish", "hs", ["a"], ["a2"], {}),
        n("Conv", "c2", ["a2", "w2"], ["b"], {"group": 4, "pads": [1, 0, 1, 0], "dilations": [1, 1]}),
        n("Conv", "dw", ["a2", "wd", "bd"], ["dwo"], {"group": 8, "pads": [2, 1, 2, 1], "strides": [2, 1],
                                                     "dilations": [2, 1]}),     # depthwise, multiplier 2
        n("HardSigmoid", "hsg", ["b"], ["b2"], {"alpha": 0.2, "beta": 0.5}),
        n("MaxPool", "mp", ["b2"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
        n("AveragePool", "ap", ["b2"], ["q"], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                               "ceil_mode": 1, "count_include_pad": 0}),
        n("ConvTranspose", "ct", ["p", "wt", "bt"], ["t"], {"strides": [2, 2], "pads": [0, 0, 0, 0]}),
        n("GlobalAveragePool", "gap", ["q"], ["gq"], {}),
        n("Sigmoid", "sg", ["gq"], ["gs"], {}),
        n("Mul", "se", ["q", "gs"], ["q2"], {}),
        n("Resize", "rs", ["q2", "roi", "scales"], ["u"], {"mode": "nearest", "coordinate_transformation_mode":
                                                          "asymmetric", "nearest_mode": "floor"}),
        n("Slice", "sl", ["u", "st", "en", "ax"], ["u2"], {}),
        n("Transpose", "tr", ["t"], ["tt"], {"perm": [0, 2, 3, 1]}),
        n("Reshape", "rsh", ["tt", "shape"], ["seq"], {}),
        # LayerNorm written out, as the PP-OCR rec export has it
        n("ReduceMean", "m1", ["seq"], ["mu"], {"axes": [-1]}),
        n("Sub", "d", ["seq", "mu"], ["dev"], {}),
        n("Pow", "pw", ["dev", "two"], ["sq"], {}),
        n("ReduceMean", "m2", ["sq"], ["var"], {"axes": [-1]}),
        n("Add", "ae", ["var", "eps"], ["ve"], {}),
        n("Sqrt", "sr", ["ve"], ["sd"], {}),
        n("Div", "nm", ["dev", "sd"], ["z"], {}),
        n("Mul", "lg", ["z", "g"], ["zg"], {}),
        n("Add", "lb", ["zg", "beta"], ["ln"], {}),
        n("MatMul", "mm", ["ln", "wm"], ["h"], {}),
        n("Add", "hb", ["h", "c6"], ["h2"], {}),
        n("Softmax", "sm", ["h2"], ["s"], {"axis": 1, "opset": 11}),
        n("Split", "sp", ["u2"], ["s1", "s2"], {"axis": 1, "split": [1, 3]}),
        n("Concat", "cc", ["s2", "s1"], ["u3"], {"axis": 1}),
        n("Relu", "rl", ["u3"], ["out2"], {}),
    ]
    return Graph(name="ops", nodes=nodes, inputs=[ValueInfo("x", "float32", [2, 4, 9, 9])],
                 outputs=[ValueInfo("s", "float32", None), ValueInfo("out2", "float32", None),
                          ValueInfo("dwo", "float32", None)],
                 initializers=inits)


def test_every_lowering_matches_the_oracle():
    g = _graph()
    x = np.random.default_rng(1).standard_normal((2, 4, 9, 9)).astype(np.float32)
    want, got = _oracle(g, {"x": x}), _jax(g, {"x": x})
    for k in want:
        assert got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_gradients_flow_and_unknown_ops_are_named():
    from converters.jaxir import run_nodes
    g = _graph()
    x = np.random.default_rng(2).standard_normal((2, 4, 9, 9)).astype(np.float32)

    def loss(w1):
        env = run_nodes(g.nodes, {"x": x}, {**g.initializers, "w1": w1})
        return jax.numpy.sum(env["s"] ** 2) + jax.numpy.sum(env["out2"])
    grad = jax.grad(loss)(jax.numpy.asarray(g.initializers["w1"]))
    assert np.all(np.isfinite(np.asarray(grad))) and float(np.abs(np.asarray(grad)).sum()) > 0
    bad = Graph(name="bad", nodes=[Node("NonMaxSuppression", "nms", ["x"], ["y"], {})],
                inputs=[ValueInfo("x", "float32", [1])], outputs=[ValueInfo("y", "float32", None)], initializers={})
    with pytest.raises(UnsupportedOp, match="NonMaxSuppression"):
        run_nodes(bad.nodes, {"x": jax.numpy.ones(1)}, {})


@pytest.mark.parametrize("kind,shape", [("rec", [1, 3, 48, 160]), ("det", [1, 3, 96, 96])])
def test_real_pp_ocr_models_match_onnxruntime(kind, shape):
    pytest.importorskip("onnxruntime")
    from importlib.util import find_spec
    spec = find_spec("rapidocr_onnxruntime")
    if spec is None:
        pytest.skip("the PP-OCR models come with rapidocr-onnxruntime")
    from pathlib import Path

    from converters.mixed.sensitivity import make_runner
    from converters.onnx_import import ImportOptions, import_onnx
    name = {"rec": "ch_PP-OCRv4_rec_infer.onnx", "det": "ch_PP-OCRv4_det_infer.onnx"}[kind]
    path = Path(spec.submodule_search_locations[0]) / "models" / name
    g = import_onnx(path, ImportOptions(input_shapes={"x": shape}))
    x = np.random.default_rng(3).uniform(-1, 1, shape).astype(np.float32)
    _, run = make_runner(g, "ort")
    want = run({"x": x})
    got = _jax(g, {"x": x})
    for k in want:
        scale = float(np.abs(want[k]).max()) or 1.0
        assert float(np.abs(got[k] - want[k]).max()) <= 1e-4 * max(1.0, scale), k
