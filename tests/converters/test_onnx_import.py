"""ONNX import: the three real PP-OCR models (numpy oracle vs onnxruntime on the original file) and
hand-made models for the corner cases (Constant-node weights, dynamic dims, attributes, errors)."""
from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from converters.onnx_import import ImportOptions, import_onnx  # noqa: E402
from edgert.backends.base import BackendOptions, get_backend  # noqa: E402
from edgert.errors import ConversionError, UnsupportedOp  # noqa: E402

IR_VERSION = 8      # what onnxruntime 1.17+ accepts with the opsets used here


def _rapidocr_models() -> Path | None:
    try:
        import rapidocr_onnxruntime
    except ImportError:
        return None
    d = Path(rapidocr_onnxruntime.__file__).parent / "models"
    return d if d.is_dir() else None


MODELS_DIR = _rapidocr_models()
# input sizes: det needs H, W multiples of 32; rec is 48 high; cls 48 x 192
REAL = {
    "det": ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 64, 96]),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 160]),
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192]),
}
needs_models = pytest.mark.skipif(MODELS_DIR is None, reason="rapidocr-onnxruntime models not installed")


def _run_numpy(graph, feeds):
    return get_backend("numpy").prepare(graph, BackendOptions()).run(feeds)


def _run_ort(model_or_path, feeds):
    src = model_or_path if isinstance(model_or_path, (str, Path)) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(str(src) if isinstance(src, Path) else src,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def _model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    m.producer_name, m.producer_version = "edgert-tests", "1.0"
    return m


def _const_node(name, arr):
    return helper.make_node("Constant", [], [name], name=f"{name}_const",
                            value=numpy_helper.from_array(np.asarray(arr), name))


# ---------------------------------------------------------------------------- real models

@needs_models
@pytest.mark.parametrize("which", sorted(REAL))
def test_real_model_matches_onnxruntime(which):
    fname, shape = REAL[which]
    path = MODELS_DIR / fname
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    ref = _run_ort(path, {"x": x})

    raw = import_onnx(path, ImportOptions(input_shapes={"x": shape}, passes=[]))
    graph = import_onnx(path, ImportOptions(input_shapes={"x": shape}))
    got = _run_numpy(graph, {"x": x})
    (out_name, want), = ref.items()
    assert graph.outputs[0].name == out_name
    assert graph.outputs[0].shape == list(want.shape)      # static after pinning + inference
    np.testing.assert_allclose(got[out_name], want, atol=1e-4, rtol=1e-4)

    # the passes did their job on every model
    before = collections.Counter(n.op for n in raw.nodes)
    after = collections.Counter(n.op for n in graph.nodes)
    assert len(graph.nodes) < len(raw.nodes)
    assert after["BatchNormalization"] == 0 and after["Clip"] == 0
    assert after["HardSwish"] == before["Clip"]            # every Clip is a hard-swish here
    assert after["HardSigmoid"] == before["HardSigmoid"]   # SE gates (x * hsig(y)) are not
    assert after["Identity"] == 0 and after["Constant"] == 0
    assert not any(n.op == "Shape" for n in graph.nodes)   # static shapes folded away
    # nothing dangles: every node input is produced, an initializer or a graph input
    known = set(graph.initializers) | {v.name for v in graph.inputs}
    for n in graph.nodes:
        assert all(not i or i in known for i in n.inputs), n.name
        known.update(n.outputs)


@needs_models
def test_real_model_metadata_and_names():
    fname, shape = REAL["cls"]
    path = MODELS_DIR / fname
    data = path.read_bytes()
    g = import_onnx(path, ImportOptions(input_shapes={"x": shape}, passes=[]))
    md = g.metadata
    assert md["source_file"] == fname
    assert md["source_sha256"] == hashlib.sha256(data).hexdigest()
    assert md["source_size_bytes"] == len(data)
    assert md["producer_name"] == "PaddlePaddle" and md["opset"] == 11
    assert md["shape_inference"] == "ok"
    json.dumps(md)
    for n in g.nodes:
        json.dumps(n.attrs)
    # weights came from Constant nodes (the file has no initializers)
    assert len(onnx.load(path).graph.initializer) == 0 and len(g.initializers) > 100
    # ONNX tensor names are kept (the calibrator captures them by name)
    proto_names = {o for n in onnx.load(path).graph.node for o in n.output}
    assert {o for n in g.nodes for o in n.outputs} <= proto_names
    assert md["value_shapes"]["batch_norm_0.tmp_2"] == [1, 8, 24, 96]


@needs_models
def test_real_model_dynamic_dims_kept():
    fname, _ = REAL["det"]
    g = import_onnx(MODELS_DIR / fname)
    assert g.inputs[0].shape == ["p2o.DynamicDimension.0", 3, "p2o.DynamicDimension.1",
                                 "p2o.DynamicDimension.2"]
    exe = get_backend("numpy").prepare(g, BackendOptions())
    for shape in ([1, 3, 32, 64], [2, 3, 64, 32]):
        x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
        want = _run_ort(MODELS_DIR / fname, {"x": x})["sigmoid_0.tmp_0"]
        np.testing.assert_allclose(exe.run({"x": x})["sigmoid_0.tmp_0"], want, atol=1e-4)
    # cls declares dim_value -1 for the batch and "?" for H, W: all unknown, not one shared name
    g = import_onnx(MODELS_DIR / REAL["cls"][0])
    assert g.inputs[0].shape == [None, 3, None, None]


# ---------------------------------------------------------------------------- hand-made models

def test_constant_node_weights_become_initializers():
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [_const_node("w", w),
             helper.make_node("Constant", [], ["k"], value_floats=[1.0, 2.0, 3.0, 4.0]),
             helper.make_node("Constant", [], ["s"], value_int=7),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], opset=11)
    g = import_onnx(m, ImportOptions(passes=[]))
    assert [n.op for n in g.nodes] == ["Conv"]
    np.testing.assert_array_equal(g.initializers["w"], w)
    assert g.initializers["k"].dtype == np.float32 and g.initializers["s"].dtype == np.int64
    assert g.metadata["source_file"] is None and g.metadata["opset"] == 11
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run_numpy(g, {"x": x})["y"], _run_ort(m, {"x": x})["y"], atol=1e-5)


def test_scalar_initializers_stay_scalars():
    """A 0-d Gather index drops its axis (ONNX); read as shape (1,) it would keep it, and the ORT
    lowering of the imported graph would disagree with the source model."""
    idx = numpy_helper.from_array(np.asarray(2, np.int64), "i")
    m = _model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [idx])
    g = import_onnx(m, ImportOptions(passes=[]))
    assert g.initializers["i"].shape == ()
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    want = _run_ort(m, {"x": x})["y"]
    assert want.shape == (2, 4)
    np.testing.assert_array_equal(_run_numpy(g, {"x": x})["y"], want)
    ort_backend = get_backend("ort").prepare(g, BackendOptions())
    np.testing.assert_array_equal(ort_backend.run({"x": x})["y"], want)


def test_initializer_listed_as_input_is_not_an_input(tmp_path):
    b = np.arange(4, dtype=np.float32)
    m = _model([helper.make_node("Add", ["x", "b"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
                helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
               [numpy_helper.from_array(b, "b")])
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    g = import_onnx(p, ImportOptions(passes=[]))
    assert [v.name for v in g.inputs] == ["x"] and "b" in g.initializers
    assert g.metadata["source_file"] == "m.onnx"
    assert g.metadata["source_size_bytes"] == p.stat().st_size


def test_attributes_are_json_values_and_constantofshape():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["z"], name="cos",
                              value=numpy_helper.from_array(np.array([2.5], np.float32))),
             helper.make_node("Add", ["x", "z"], ["a"]),
             helper.make_node("Resize", ["a", "", "scales"], ["y"], name="rs", mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, "h", 3])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
               [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    g = import_onnx(m, ImportOptions(passes=[]))
    by = {n.name: n for n in g.nodes}
    assert by["cos"].attrs == {"value": 2.5, "value_dtype": "float32"}
    assert by["rs"].attrs["mode"] == "nearest" and isinstance(by["rs"].attrs["mode"], str)
    assert g.inputs[0].shape == ["n", 2, "h", 3]
    assert g.metadata["value_shapes"]["a"] == ["n", 2, "h", 3]
    json.dumps([n.attrs for n in g.nodes])
    x = np.random.default_rng(0).standard_normal((1, 2, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(_run_numpy(g, {"x": x})["y"], _run_ort(m, {"x": x})["y"], atol=1e-6)


def test_input_shapes_pin_dims_and_fill_value_shapes():
    m = _model([helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b"])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "a"])])
    g = import_onnx(m, ImportOptions(input_shapes={"x": [2, "b"]}, passes=[]))
    assert g.inputs[0].shape == [2, "b"]
    assert g.metadata["value_shapes"]["r"] == [2, "b"]
    assert g.outputs[0].shape == ["b", 2]
    with pytest.raises(ConversionError, match="not a model input"):
        import_onnx(m, ImportOptions(input_shapes={"nope": [1, 2]}))
    with pytest.raises(ConversionError, match="rank"):
        import_onnx(m, ImportOptions(input_shapes={"x": [1, 2, 3]}))


def test_if_node_is_a_clear_error():
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    m = _model([helper.make_node("If", ["c"], ["y"], name="branchy", then_branch=then_g,
                                 else_branch=else_g)],
               [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(UnsupportedOp, match="branchy.*subgraph"):
        import_onnx(m)


def test_foreign_domain_opset_and_garbage_errors(tmp_path):
    m = _model([helper.make_node("FusedGemm", ["x", "x"], ["y"], name="fg", domain="com.microsoft")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOp, match="'fg'.*com.microsoft"):
        import_onnx(m)
    old = _model([helper.make_node("Relu", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], opset=9)
    with pytest.raises(ConversionError, match="opset 9"):
        import_onnx(old)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 definitely not a protobuf \xff\xff")
    with pytest.raises(ConversionError, match="bad.onnx"):
        import_onnx(bad)
    with pytest.raises(ConversionError, match="cannot read"):
        import_onnx(tmp_path / "missing.onnx")


def test_missing_external_data_is_an_error(tmp_path):
    w = np.ones((64, 64), np.float32)
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
               [numpy_helper.from_array(w, "w")])
    p = tmp_path / "ext.onnx"
    onnx.save(m, p, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.bin", size_threshold=0)
    g = import_onnx(p, ImportOptions(passes=[]))              # present: loaded
    np.testing.assert_array_equal(g.initializers["w"], w)
    (tmp_path / "ext.bin").unlink()
    with pytest.raises(ConversionError):
        import_onnx(p)
    proto = onnx.load(p, load_external_data=False)            # in memory, data not loaded
    with pytest.raises(ConversionError, match="externally"):
        import_onnx(proto)


def test_unsorted_nodes_are_sorted_and_unknown_inputs_rejected():
    nodes = [helper.make_node("Relu", ["a"], ["y"], name="second"),
             helper.make_node("Neg", ["x"], ["a"], name="first")]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    g = import_onnx(m, ImportOptions(passes=[]))
    assert [n.name for n in g.nodes] == ["first", "second"]
    m2 = _model([helper.make_node("Relu", ["ghost"], ["y"], name="r")],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(ConversionError, match="'r'.*ghost"):
        import_onnx(m2, ImportOptions(passes=[], shape_inference=False))


# ---------------------------------------------------------------------------- opsets above 21

def _conv_block(opset):
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3))
                                .astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    return _model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c"], ["r"], name="relu"),
                   helper.make_node("HardSwish", ["r"], ["h"], name="hswish"),
                   helper.make_node("Add", ["h", "c"], ["a"], name="add"),
                   helper.make_node("Reshape", ["a", "shape"], ["y"], name="flat")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
                  [w, shape], opset=opset)


def test_newest_opset_imports_where_schemas_are_unchanged():
    """A model at opset 21 stamped with the newest opset the onnx package knows: Conv-22,
    HardSwish-22 and Reshape-25 only added types, so it imports and computes the same."""
    from converters.convert import check_supported

    newest = onnx.defs.onnx_opset_version()
    assert newest > 21
    m21 = _conv_block(21)
    m = _conv_block(21)
    m.opset_import[0].version = newest
    g = import_onnx(m)
    check_supported(g)
    assert g.metadata["opset"] == newest
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run_numpy(g, {"x": x})["y"], _run_numpy(import_onnx(m21),
                                                                             {"x": x})["y"])


def test_op_whose_schema_changed_after_21_is_refused():
    newest = onnx.defs.onnx_opset_version()
    since = onnx.defs.get_schema("Range", newest).since_version       # Range-27 added stash_type
    assert since > 21
    m = _model([helper.make_node("Range", ["a", "b", "c"], ["y"], name="steps")],
               [helper.make_tensor_value_info(n, TensorProto.FLOAT, []) for n in "abc"],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])], opset=newest)
    with pytest.raises(UnsupportedOp) as ei:
        import_onnx(m)
    msg = str(ei.value)
    for needle in ("'steps'", "'Range'", f"Range-{since}", f"opset {newest}", "Range-11",
                   f"opset {since - 1}"):
        assert needle in msg, msg
    m.opset_import[0].version = since - 1                            # still Range-11: imports
    assert [n.op for n in import_onnx(m).nodes] == ["Range"]
    m.opset_import[0].version = newest + 1                           # unknown to onnx itself
    with pytest.raises(ConversionError, match=f"opset {newest + 1}"):
        import_onnx(m)


def test_declared_op_versions_only_add_types():
    """An op that says it implements an ONNX version above 21 (Op.ONNX_VERSION) may do so only
    where the later schemas kept every input, output and attribute the op knows, and any new
    attribute is one the op declares."""
    from edgert.ops import known_ops
    from edgert.ops.base import op_class

    def io(s):
        return ([(p.name, p.option) for p in s.inputs], [(p.name, p.option) for p in s.outputs])

    checked = 0
    for name in known_ops():
        cls = op_class(name)
        if cls.ONNX_VERSION <= 21:
            continue
        base = onnx.defs.get_schema(name, 21)
        top = onnx.defs.get_schema(name, cls.ONNX_VERSION)
        assert top.since_version == cls.ONNX_VERSION, f"{name}: no version {cls.ONNX_VERSION}"
        for v in range(22, cls.ONNX_VERSION + 1):
            s = onnx.defs.get_schema(name, v)
            assert io(s) == io(base), f"{name}-{s.since_version} changed its inputs / outputs"
            assert set(base.attributes) <= set(s.attributes), f"{name}-{s.since_version}"
            new = set(s.attributes) - set(base.attributes)
            assert new <= set(cls.ATTRS), f"{name}-{s.since_version} added {new}"
        checked += 1
    assert checked >= 10
