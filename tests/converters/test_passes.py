"""Graph passes on small hand-made ONNX models: the rewritten IR (numpy oracle) must match
onnxruntime on the original model, and the node counts must change exactly as intended."""
from __future__ import annotations

import collections

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from hypothesis import given, settings, strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from converters import passes  # noqa: E402
from converters.onnx_import import ImportOptions, import_onnx  # noqa: E402
from converters.passes import PASSES, default_passes, run_passes  # noqa: E402
from edgert.backends.base import BackendOptions, get_backend  # noqa: E402
from edgert.errors import ConversionError  # noqa: E402

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _f32(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def _model(nodes, inputs, outputs, inits=None, opset=13):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    g = helper.make_graph(nodes, "t", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def _ops(graph):
    return collections.Counter(n.op for n in graph.nodes)


def _check(model, names, feeds, atol=1e-5):
    """Import without passes, apply `names`, compare with ORT; returns (before, after) op counts."""
    raw = import_onnx(model, ImportOptions(passes=[]))
    before = _ops(raw)
    graph = run_passes(raw, names)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    got = get_backend("numpy").prepare(graph, BackendOptions()).run(feeds)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, atol=atol, rtol=1e-5, err_msg=k)
    return before, _ops(graph), graph


# ----------------------------------------------------------------------------- registry

def test_registry_and_default_order():
    assert set(default_passes()) <= set(PASSES)
    for name, fn in PASSES.items():
        assert fn is getattr(passes, name).run
    with pytest.raises(ConversionError, match="known: .*fold_constants"):
        run_passes(None, ["fold_constants", "no_such_pass"])


def test_options_switch_passes_off():
    x = _vi("x", [1, 2, 4, 4])
    m = _model([helper.make_node("Conv", ["x", "w"], ["c"]),
                helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])],
               [x], [_vi("y", [1, 2, 4, 4])],
               {"w": _f32(2, 2, 1, 1), "s": _f32(2), "b": _f32(2), "m": _f32(2),
                "v": _f32(2, lo=0.5, hi=1.0)})
    assert _ops(import_onnx(m))["BatchNormalization"] == 0
    g = import_onnx(m, ImportOptions(fold_batchnorm=False))
    assert _ops(g)["BatchNormalization"] == 1
    assert "fold_batchnorm" not in g.metadata["passes"]


# ----------------------------------------------------------------------------- fold_constants

def test_fold_constants_chain_and_static_shape():
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]),                 # const + const
             helper.make_node("Reshape", ["ab", "s4"], ["ab4"]),          # -> [1, 4, 1, 1]
             helper.make_node("Mul", ["x", "ab4"], ["m"]),
             helper.make_node("Shape", ["x"], ["sh"]),                    # x is static
             helper.make_node("Slice", ["sh", "st", "en"], ["hw"]),
             helper.make_node("Concat", ["one", "hw", "neg"], ["tgt"], axis=0),
             helper.make_node("Reshape", ["m", "tgt"], ["y"])]
    m = _model(nodes, [_vi("x", [1, 4, 3, 5])], [_vi("y", None)],
               {"a": _f32(4), "b": _f32(4), "s4": np.array([1, 4, 1, 1], np.int64),
                "st": np.array([2], np.int64), "en": np.array([4], np.int64),
                "one": np.array([1], np.int64), "neg": np.array([-1], np.int64)})
    feeds = {"x": _f32(1, 4, 3, 5)}
    before, after, g = _check(m, ["fold_constants", "dead_code"], feeds)
    assert sum(before.values()) == 7
    assert after == {"Mul": 1, "Reshape": 1}
    np.testing.assert_array_equal(g.initializers["tgt"], [1, 3, 5, -1])
    assert set(g.initializers) == {"ab4", "tgt"}                      # dead_code dropped the rest
    assert g.outputs[0].shape == [1, 3, 5, 4]                         # re-inferred after folding


def test_fold_constants_skips_dynamic_shape_and_huge_results(monkeypatch):
    from converters.passes import fold_constants
    nodes = [helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Expand", ["c", "big"], ["e"]),
             helper.make_node("ReduceSum", ["e"], ["r"], keepdims=0),
             helper.make_node("Add", ["x", "r"], ["y"])]
    m = _model(nodes, [_vi("x", ["n", 4])], [_vi("y", ["n", 4]), _vi("sh", [2], TensorProto.INT64)],
               {"c": np.ones((1,), np.float32), "big": np.array([1000, 4], np.int64)})
    monkeypatch.setattr(fold_constants, "MAX_FOLD_BYTES", 1000)       # 16 kB Expand > 1 kB
    before, after, _ = _check(m, ["fold_constants"], {"x": _f32(3, 4)})
    assert after["Shape"] == 1 and after["Expand"] == 1 and after["ReduceSum"] == 1


# ----------------------------------------------------------------------------- fold_batchnorm

def _bn_inits(c, prefix="bn"):
    return {f"{prefix}_s": _f32(c, lo=0.5, hi=2.0), f"{prefix}_b": _f32(c),
            f"{prefix}_m": _f32(c), f"{prefix}_v": _f32(c, lo=0.1, hi=2.0)}


def _bn(x, y, prefix="bn", **kw):
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}_{k}" for k in "sbmv"], [y],
                            epsilon=1e-3, **kw)


@settings(max_examples=12, deadline=None)
@given(transpose=st.booleans(), group=st.sampled_from([1, 2, 3]), cin_g=st.integers(1, 3),
       cout_g=st.integers(1, 3), bias=st.booleans())
def test_fold_batchnorm_conv_and_convtranspose(transpose, group, cin_g, cout_g, bias):
    cin, cout = cin_g * group, cout_g * group
    if transpose:   # ConvTranspose weight [C_in, C_out/g, kh, kw]
        w = _f32(cin, cout_g, 2, 2)
        conv = helper.make_node("ConvTranspose", ["x", "w"] + (["cb"] if bias else []), ["c"],
                                group=group, strides=[2, 2])
        out_hw = [8, 10]
    else:           # Conv weight [C_out, C_in/g, kh, kw]
        w = _f32(cout, cin_g, 3, 3)
        conv = helper.make_node("Conv", ["x", "w"] + (["cb"] if bias else []), ["c"],
                                group=group, pads=[1, 1, 1, 1])
        out_hw = [4, 5]
    inits = {"w": w, **_bn_inits(cout)}
    if bias:
        inits["cb"] = _f32(cout)
    m = _model([conv, _bn("c", "y"), helper.make_node("Relu", ["y"], ["z"])],
               [_vi("x", [2, cin, 4, 5])], [_vi("z", [2, cout] + out_hw)], inits)
    before, after, g = _check(m, ["fold_batchnorm"], {"x": _f32(2, cin, 4, 5)}, atol=2e-5)
    assert before["BatchNormalization"] == 1 and after["BatchNormalization"] == 0
    assert sum(after.values()) == 2
    conv_node = g.nodes[0]
    assert conv_node.outputs == ["y"] and len(conv_node.inputs) == 3


def test_fold_batchnorm_leaves_unfoldable_bns():
    inits = {"w": _f32(3, 3, 1, 1), **_bn_inits(3), **_bn_inits(3, "bn2"), **_bn_inits(3, "bn3")}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             _bn("c", "y1"),                                       # c also read by Relu below
             helper.make_node("Relu", ["c"], ["r"]),
             _bn("r", "y2", prefix="bn2"),                         # not after a conv
             helper.make_node("Conv", ["x", "w"], ["c3"]),
             helper.make_node("BatchNormalization", ["c3", "bn3_s", "bn3_b", "mu", "bn3_v"],
                              ["y3"])]                             # mean is not a constant
    m = _model(nodes, [_vi("x", [1, 3, 4, 4]), _vi("mu", [3])],
               [_vi("y1", [1, 3, 4, 4]), _vi("y2", [1, 3, 4, 4]), _vi("y3", [1, 3, 4, 4])], inits)
    before, after, _ = _check(m, ["fold_batchnorm"], {"x": _f32(1, 3, 4, 4), "mu": _f32(3)})
    assert after == before


def test_fold_batchnorm_shared_weight_is_copied():
    inits = {"w": _f32(3, 3, 1, 1), **_bn_inits(3)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"]), _bn("c1", "y1"),
             helper.make_node("Conv", ["x", "w"], ["y2"])]
    m = _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y1", [1, 3, 4, 4]), _vi("y2", [1, 3, 4, 4])],
               inits)
    _, after, g = _check(m, ["fold_batchnorm"], {"x": _f32(1, 3, 4, 4)})
    assert after == {"Conv": 2}
    np.testing.assert_array_equal(g.initializers["w"], inits["w"])    # the other conv's weight


# ----------------------------------------------------------------------------- fuse_conv_affine

def test_fuse_conv_affine_paddle_patterns():
    inits = {"w": _f32(4, 2, 3, 3), "b": _f32(4), "shape": np.array([1, 4, 1, 1], np.int64),
             "s": np.array([0.7], np.float32), "t": np.array([0.3], np.float32),
             "d": _f32(4, 1, 1, lo=0.5, hi=2.0), "wt": _f32(4, 1, 2, 2), "q": _f32(1, 1, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["b", "shape"], ["b4"]),       # cls: bias via Reshape
             helper.make_node("Add", ["c", "b4"], ["cb"]),
             helper.make_node("Mul", ["s", "cb"], ["m"]),               # det: affine block
             helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Div", ["a", "d"], ["dd"]),
             helper.make_node("Relu", ["dd"], ["r"]),
             helper.make_node("ConvTranspose", ["r", "wt"], ["ct"], strides=[2, 2]),
             helper.make_node("Sub", ["ct", "q"], ["y"])]               # det head: scalar bias
    m = _model(nodes, [_vi("x", [1, 2, 5, 6])], [_vi("y", [1, 1, 10, 12])], inits)
    before, after, g = _check(m, ["fold_constants", "fuse_conv_affine", "dead_code"],
                              {"x": _f32(1, 2, 5, 6)})
    assert after == {"Conv": 1, "Relu": 1, "ConvTranspose": 1}
    assert g.nodes[0].outputs == ["dd"]                                # last folded name kept


def test_fuse_conv_affine_rejects_non_channel_constants():
    inits = {"w": _f32(3, 3, 1, 1), "row": _f32(4), "k": _f32(3, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Mul", ["c", "row"], ["m"]),              # along W: not foldable
             helper.make_node("Conv", ["x", "w"], ["c2"]),
             helper.make_node("Sub", ["k", "c2"], ["s"]),               # k - y: not folded
             helper.make_node("Conv", ["x", "w"], ["c3"]),
             helper.make_node("Add", ["c3", "x"], ["a"])]               # not a constant
    m = _model(nodes, [_vi("x", [1, 3, 4, 4])],
               [_vi("m", [1, 3, 4, 4]), _vi("s", [1, 3, 4, 4]), _vi("a", [1, 3, 4, 4])], inits)
    before, after, _ = _check(m, ["fuse_conv_affine"], {"x": _f32(1, 3, 4, 4)})
    assert after == before


# ----------------------------------------------------------------------------- fuse_hardswish

def _hswish_model(kind, three=3.0, six=6.0, alpha=1 / 6, extra_reader=False, opset=13):
    x = "x"
    inits = {"three": np.array(three, np.float32), "zero": np.array(0.0, np.float32),
             "six": np.array(six, np.float32), "sixth": np.array(1 / 6, np.float32)}
    nodes = [helper.make_node("Conv", ["in", "w"], [x])]
    inits["w"] = _f32(2, 2, 1, 1)
    if kind == "A":      # x * clip(x + 3, 0, 6) / 6    (PP-OCR, all three models)
        nodes += [helper.make_node("Add", [x, "three"], ["a"]),
                  helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
                  helper.make_node("Mul", [x, "c"], ["m"]),
                  helper.make_node("Div", ["m", "six"], ["y"])]
    elif kind == "A*":   # operands swapped, Mul by 1/6 instead of Div by 6
        nodes += [helper.make_node("Add", ["three", x], ["a"]),
                  helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
                  helper.make_node("Mul", ["c", x], ["m"]),
                  helper.make_node("Mul", ["sixth", "m"], ["y"])]
    elif kind == "B":    # x * (clip(x + 3, 0, 6) / 6)
        nodes += [helper.make_node("Add", [x, "three"], ["a"]),
                  helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
                  helper.make_node("Div", ["c", "six"], ["d"]),
                  helper.make_node("Mul", [x, "d"], ["y"])]
    elif kind == "C":    # x * HardSigmoid(x)
        nodes += [helper.make_node("HardSigmoid", [x], ["h"], alpha=alpha, beta=0.5),
                  helper.make_node("Mul", [x, "h"], ["y"])]
    elif kind == "attr":  # opset-6 style Clip with min / max attributes
        nodes += [helper.make_node("Add", [x, "three"], ["a"]),
                  helper.make_node("Clip", ["a"], ["c"], min=0.0, max=six),
                  helper.make_node("Mul", [x, "c"], ["m"]),
                  helper.make_node("Div", ["m", "six"], ["y"])]
    outs = [_vi("y", [1, 2, 3, 4])]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["c" if kind != "C" else "h"], ["leak"]))
        outs.append(_vi("leak", [1, 2, 3, 4]))
    return _model(nodes, [_vi("in", [1, 2, 3, 4])], outs, inits, opset=opset)


@pytest.mark.parametrize("kind", ["A", "A*", "B", "C"])
def test_fuse_hardswish_patterns(kind):
    m = _hswish_model(kind)
    feeds = {"in": _f32(1, 2, 3, 4, lo=-8, hi=8)}
    _, after, g = _check(m, ["fuse_hardswish", "dead_code"], feeds)
    assert after == {"Conv": 1, "HardSwish": 1}
    assert g.nodes[-1].inputs == ["x"] and g.nodes[-1].outputs == ["y"]


def test_fuse_hardswish_attr_form_clip():
    # IR graphs may carry Clip min / max as attributes (the opset < 11 form the IR also accepts)
    raw = import_onnx(_hswish_model("A"), ImportOptions(passes=[]))
    clip = next(n for n in raw.nodes if n.op == "Clip")
    clip.inputs, clip.attrs = clip.inputs[:1], {"min": 0.0, "max": 6.0}
    feeds = {"in": _f32(1, 2, 3, 4, lo=-8, hi=8)}
    want = get_backend("numpy").prepare(raw, BackendOptions()).run(feeds)["y"]
    g = run_passes(raw, ["fuse_hardswish", "dead_code"])
    assert _ops(g) == {"Conv": 1, "HardSwish": 1}
    got = get_backend("numpy").prepare(g, BackendOptions()).run(feeds)["y"]
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"three": 2.9}, {"six": 5.0}, {"extra_reader": True},
                                    {"kind": "C", "alpha": 0.2},
                                    {"kind": "C", "extra_reader": True}])
def test_fuse_hardswish_rejects_near_misses(kwargs):
    kind = kwargs.pop("kind", "A")
    m = _hswish_model(kind, **kwargs)
    before, after, _ = _check(m, ["fuse_hardswish"], {"in": _f32(1, 2, 3, 4, lo=-8, hi=8)})
    assert after == before and "HardSwish" not in after


def test_fuse_hardswish_keeps_se_gate():
    # PP-OCR squeeze-excitation: a * HardSigmoid(b) with a != b, alpha 1/6 — not hard-swish
    nodes = [helper.make_node("HardSigmoid", ["b"], ["h"], alpha=0.16666670143604279, beta=0.5),
             helper.make_node("Mul", ["a", "h"], ["y"])]
    m = _model(nodes, [_vi("a", [1, 2, 3]), _vi("b", [1, 2, 1])], [_vi("y", [1, 2, 3])])
    before, after, _ = _check(m, ["fuse_hardswish"], {"a": _f32(1, 2, 3), "b": _f32(1, 2, 1)})
    assert after == before


# ----------------------------------------------------------------------------- eliminate_identity / dead_code

def test_eliminate_identity_variants():
    nodes = [helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Dropout", ["i"], ["d"]),
             helper.make_node("Cast", ["d"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["c", "same"], ["r"]),
             helper.make_node("Reshape", ["r", "other"], ["r2"]),          # a real reshape
             helper.make_node("Relu", ["r2"], ["z"]),
             helper.make_node("Identity", ["z"], ["y"])]                  # feeds a graph output
    m = _model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", [6, 4])],
               {"same": np.array([0, 3, -1], np.int64), "other": np.array([6, 4], np.int64)})
    before, after, g = _check(m, ["eliminate_identity"], {"x": _f32(2, 3, 4)})
    assert after == {"Reshape": 1, "Relu": 1}
    assert g.nodes[0].inputs[0] == "x" and g.nodes[-1].outputs == ["y"]


def test_eliminate_identity_keeps_input_to_output_identity():
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])
    before, after, _ = _check(m, ["eliminate_identity"], {"x": _f32(2)})
    assert after == before == {"Identity": 1}


def test_dead_code_removes_unused_nodes_and_initializers():
    nodes = [helper.make_node("Add", ["x", "b"], ["y"]),
             helper.make_node("Mul", ["x", "unused_w"], ["dangling"]),
             helper.make_node("Relu", ["dangling"], ["dangling2"])]
    m = _model(nodes, [_vi("x", [3])], [_vi("y", [3])],
               {"b": _f32(3), "unused_w": _f32(3), "orphan": _f32(3)})
    _, after, g = _check(m, ["dead_code"], {"x": _f32(3)})
    assert after == {"Add": 1} and set(g.initializers) == {"b"}
    assert "dangling" not in g.metadata["value_shapes"]
