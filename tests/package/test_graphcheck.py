"""edgert.graphcheck: hostile manifests with valid hashes fail closed with a typed error naming the
node and field, before any backend prepares anything; static shapes agree with real runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from converters.package_writer import WriteOptions, write_package
from edgert.cli import main as cli_main
from edgert.errors import GraphError, InputError, UnsupportedOp
from edgert.graphcheck import CheckOptions, check_graph
from edgert.ir import Graph, Node, ValueInfo
from pkg_helpers import conv_graph, manifest_of, with_manifest

BACKENDS = ("numpy", "ort")


@pytest.fixture
def seed(tmp_path):
    g = conv_graph(np.random.default_rng(0), channels=2, layers=1)
    p = tmp_path / "seed.pkg"
    write_package(p, [g], WriteOptions(compress="none"))
    return p


def _mutant(seed, tmp_path, edit) -> object:
    m = manifest_of(seed.read_bytes())
    edit(m["graphs"][0])
    p = tmp_path / "mutant.pkg"
    p.write_bytes(with_manifest(seed.read_bytes(), json.dumps(m, allow_nan=True).encode()))
    return p


def _node(g, name):
    return next(n for n in g["nodes"] if n["name"] == name)


def _load_fails(path, error, *words):
    for backend in BACKENDS:
        with pytest.raises(error) as ei:
            edgert.load(path, backend=backend)
        msg = str(ei.value)
        assert "\n" not in msg
        for w in words:
            assert w in msg, msg


def test_the_seed_runs(seed):
    for backend in BACKENDS:
        out = edgert.load(seed, backend=backend).run(np.ones((1, 2, 8, 8), np.float32))
        assert out["y"].shape == (1, 2, 8, 8)


@pytest.mark.parametrize("pads", [[0, 0, None, 0], [1, 1, 1], [-1, 0, 0, 0], [1, 1, "1", 1]])
def test_bad_pads_are_named(seed, tmp_path, pads):
    p = _mutant(seed, tmp_path, lambda g: _node(g, "conv0")["attrs"].__setitem__("pads", pads))
    _load_fails(p, GraphError, "conv0", "pads")


@pytest.mark.parametrize("key,value", [("group", 0), ("group", 3), ("strides", [0, 1]),
                                       ("dilations", [1, 1 << 63]), ("kernel_shape", [3, 3, 3]),
                                       ("auto_pad", "SAME"), ("mystery", 1)])
def test_bad_conv_attributes(seed, tmp_path, key, value):
    p = _mutant(seed, tmp_path, lambda g: _node(g, "conv0")["attrs"].__setitem__(key, value))
    _load_fails(p, GraphError, "conv0", key)


def test_float_attribute_out_of_float32(tmp_path):
    g = Graph("g", [ValueInfo("x", "float32", [1, 4])], [ValueInfo("y", "float32", [1, 4])],
              [Node("HardSigmoid", "hs", ["x"], ["y"], {"alpha": 1e308})], {})
    with pytest.raises(GraphError, match="hs.*alpha"):
        check_graph(g)


def test_huge_pad_is_refused_before_allocating(seed, tmp_path):
    """A pad of 2^31 would make numpy allocate terabytes: the budget names the node instead."""
    p = _mutant(seed, tmp_path, lambda g: _node(g, "conv0")["attrs"].__setitem__(
        "pads", [1 << 14] * 4))
    _load_fails(p, GraphError, "conv0", "bytes")


def test_unknown_op_and_missing_input(seed, tmp_path):
    p = _mutant(seed, tmp_path, lambda g: _node(g, "relu0").__setitem__("op", "Frobnicate"))
    _load_fails(p, UnsupportedOp, "Frobnicate", "relu0")
    p = _mutant(seed, tmp_path, lambda g: _node(g, "conv0").__setitem__("inputs", ["x", ""]))
    _load_fails(p, GraphError, "conv0", "input")


def test_channel_mismatch_is_static(seed, tmp_path):
    def edit(g):
        g["inputs"][0]["shape"][1] = 3              # the weights take 2 channels
    p = _mutant(seed, tmp_path, edit)
    _load_fails(p, GraphError, "conv0", "channel")


def test_run_time_shapes_are_checked_against_the_budget(seed):
    """Named dims are only known at run time: each new input shape is propagated before a backend
    runs, and one whose intermediate would exceed max_value_bytes is an InputError naming the node."""
    for backend in BACKENDS:
        sess = edgert.load(seed, backend=backend, max_value_bytes=64 << 10)
        sess.run(np.ones((1, 2, 16, 16), np.float32))
        with pytest.raises(InputError, match="conv0.*budget"):
            sess.run(np.ones((1, 2, 64, 512), np.float32))
        with pytest.raises(InputError, match="conv0.*budget"):      # `run --input`, `bench` path
            sess.check_feeds(np.ones((1, 2, 64, 512), np.float32))


def test_cli_gives_one_line_and_exit_2(seed, tmp_path):
    p = _mutant(seed, tmp_path, lambda g: _node(g, "conv0")["attrs"].__setitem__("strides", [0, 1]))
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 2, 8, 8), np.float32))
    r = CliRunner().invoke(cli_main, ["run", str(p), "--input", str(x), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "conv0" in lines[0] and "strides" in lines[0], r.output
    assert "Traceback" not in r.output


def test_budget_option_is_honoured_at_load():
    g = Graph("g", [ValueInfo("x", "float32", [1, 1000, 1000])], [ValueInfo("y", "float32", [1, 1000, 1000])],
              [Node("Relu", "r", ["x"], ["y"])], {})
    check_graph(g)
    with pytest.raises(GraphError, match="budget"):
        check_graph(g, CheckOptions(max_value_bytes=1 << 20))


@pytest.mark.slow
@pytest.mark.parametrize("fixture,hw", [("det_model", (96, 128)), ("rec_model", (48, 160)),
                                        ("cls_model", (48, 192))])
def test_static_shapes_match_a_real_run(request, fixture, hw):
    """On the real PP-OCR graphs, every inferred shape agrees with the value the oracle computes."""
    from converters.onnx_import import import_onnx
    from edgert.backends.numpy_ref import NumpyExecutable

    g = import_onnx(request.getfixturevalue(fixture))
    plan = check_graph(g)
    x = np.random.default_rng(0).standard_normal((1, 3) + hw).astype(np.float32)
    exe = NumpyExecutable(g)
    names = {o for n in g.nodes for o in n.outputs if o}
    vals = exe.run({g.inputs[0].name: x}, capture=names)
    concrete = plan.propagate({g.inputs[0].name: plan_val(x)})
    for name in names:
        if name not in vals:
            continue
        v, a = concrete[name], vals[name]
        assert v.known and tuple(v.shape) == a.shape and v.dtype == a.dtype.name, \
            f"{name}: inferred {v.dtype} {v.shape}, ran {a.dtype} {a.shape}"
        st = plan.vals[name]                       # with the declared (symbolic) input dims
        assert st.shape is None or (len(st.shape) == a.ndim and all(
            d is None or d == s for d, s in zip(st.shape, a.shape))), (name, st.shape, a.shape)


def plan_val(x):
    from edgert.ops._schema import Val
    return Val(x.dtype.name, tuple(x.shape))


def test_dilation_on_a_1x1_kernel_moves_nothing():
    """Found by the campaign (seed 2): dilation 2^63-1 on a 1x1 conv is valid ONNX with the same
    output as dilation 1; the oracle used to overflow building its strided view."""
    from edgert.backends.numpy_ref import NumpyExecutable
    w = np.random.default_rng(0).standard_normal((3, 2, 1, 1)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 5)).astype(np.float32)
    outs = []
    for dil in ([1, 1], [1, (1 << 63) - 1]):
        g = Graph("g", [ValueInfo("x", "float32", [1, 2, 5, 5])], [ValueInfo("y", "float32", [1, 3, 5, 5])],
                  [Node("Conv", "c", ["x", "w"], ["y"], {"dilations": dil})], {"w": w})
        check_graph(g)
        outs.append(NumpyExecutable(g).run({"x": x})["y"])
    np.testing.assert_array_equal(outs[0], outs[1])
