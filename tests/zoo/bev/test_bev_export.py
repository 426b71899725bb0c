from __future__ import annotations

import json

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the BEV model's training code needs the `train` extra (JAX)")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgert.bev.rig import Rig, nuscenes_like_rig  # noqa: E402
from zoo.bev import model as M  # noqa: E402
from zoo.bev.export import (META_MODEL, META_RIG, META_STAGES, OPSET, build_onnx, export_onnx,  # noqa: E402
                            extract_stage, read_stages)

RUNTIME_OPS = {"Conv", "Relu", "Mul", "Concat", "Transpose", "Reshape", "Gather", "ReduceSum", "Slice", "Max",
               "Div", "Resize", "Sigmoid"}
HEADS = ("feat", "bev", "seg", "heatmap", "boxreg")


@pytest.fixture(scope="module")
def rig():
    return nuscenes_like_rig()


@pytest.fixture(scope="module")
def nets(rig):
    return {v: M.build(M.variant(v), rig) for v in ("full", "small")}


@pytest.fixture(scope="module")
def params(nets):
    rng = np.random.default_rng(5)
    out = {}
    for v, net in nets.items():
        p = M.init_params(net, 1)
        for layers in p.values():                        # non-zero biases, so they are checked too
            for layer in layers:
                layer["b"] += rng.normal(0, 0.1, layer["b"].shape).astype(np.float32)
        out[v] = p
    return out


@pytest.fixture(scope="module")
def proto(params, rig):
    return build_onnx(params, rig)


@pytest.fixture(scope="module")
def feeds(nets):
    rng = np.random.default_rng(2)
    f = {"images": rng.normal(size=(6, 3, 96, 160)).astype(np.float32),
         "image": rng.normal(size=(1, 3, 96, 160)).astype(np.float32),
         "cam_mask": np.array([1, 1, 0, 1, 1, 1], np.float32)}              # one camera dropped
    for v, net in nets.items():
        f[f"{v}/prev_bev"] = rng.random((1, net.cfg.bev_ch, 50, 50)).astype(np.float32)
    return f


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs = sess.run(None, {n: feeds[n] for n in names})
    return dict(zip([o.name for o in sess.get_outputs()], outs))


def test_onnx_matches_jax_forward(proto, params, nets, feeds):
    got = _run(proto, feeds)
    for v, net in nets.items():
        fwd = jax.jit(lambda p, i, m, pb, net=net: M.forward(p, net, i, m, pb))
        ref = fwd(M.to_jax(params[v]), feeds["images"][None], feeds["cam_mask"][None], feeds[f"{v}/prev_bev"])
        for k in HEADS:
            r = np.asarray(ref[k])
            r = r[0] if k == "feat" else r
            o = got[f"{v}/{k}"]
            assert o.shape == r.shape, (v, k)
            np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(r).max()), err_msg=f"{v}/{k}")


def test_graph_uses_runtime_ops_at_opset_17(proto):
    assert {n.op_type for n in proto.graph.node} <= RUNTIME_OPS
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]


def test_metadata_parses(proto, rig, nets):
    meta = {p.key: p.value for p in proto.metadata_props}
    assert Rig.from_json(json.loads(meta[META_RIG])) == rig
    info = json.loads(meta[META_MODEL])
    assert info["output_grid"] == {"size": 100, "cell_m": 0.5}
    assert info["variants"]["small"]["feat"] == [6, 32, 6, 10]
    assert info["variants"]["full"]["bev_ch"] == nets["full"].cfg.bev_ch
    stages = read_stages(proto)
    assert [s.entry for s in stages] == ["full/backbone", "full/backbone_cam", "full/fuse", "full/heads",
                                         "small/backbone", "small/backbone_cam", "small/fuse", "small/heads"]
    graph_io = {i.name for i in proto.graph.input} | {o.name for o in proto.graph.output}
    for s in stages:
        assert set(s.inputs) | set(s.outputs) <= graph_io
    assert len(json.loads(meta[META_STAGES])) == 8


def test_each_stage_extracts_and_chains_to_the_whole(proto, feeds):
    whole = _run(proto, feeds)
    values = dict(feeds)
    for s in read_stages(proto):                         # in order: each stage feeds the next
        sub = extract_stage(proto, s)
        onnx.checker.check_model(sub)
        assert [i.name for i in sub.graph.input] == list(s.inputs)
        out = _run(sub, values)
        assert set(out) == set(s.outputs)
        for k, val in out.items():
            np.testing.assert_allclose(val, whole[k], rtol=1e-5, atol=1e-5, err_msg=k)
        values.update(out)
        # a stage carries only its own variant's weights
        other = "small/" if s.variant == "full" else "full/"
        assert not any(i.name.startswith(other) for i in sub.graph.initializer)


def test_per_camera_backbone_equals_the_batched_one(proto, feeds):
    f = dict(feeds)
    f["image"] = feeds["images"][4:5]
    got = _run(proto, f)
    for v in ("full", "small"):
        np.testing.assert_allclose(got[f"{v}/feat_cam"], got[f"{v}/feat"][4:5], rtol=1e-5, atol=1e-5)
    # no second copy of the weights
    names = [i.name for i in proto.graph.initializer]
    assert len(names) == len(set(names)) and not any("backbone_cam" in n for n in names)


def test_export_writes_file_and_reads_back(params, rig, tmp_path):
    path = tmp_path / "bev.onnx"
    size = export_onnx(params, rig, path)
    assert size == path.stat().st_size and size > 100_000
    assert [s.entry for s in read_stages(path)][0] == "full/backbone"
    with pytest.raises(ValueError, match="edgert.bev.stages"):
        m = onnx.load(path)
        del m.metadata_props[:]
        read_stages(m)


def test_params_read_back_from_onnx(proto, params):
    from zoo.bev.export import params_from_onnx
    back = params_from_onnx(proto)
    assert set(back) == set(params)
    for v in params:
        for stage, layers in params[v].items():
            assert len(back[v][stage]) == len(layers)
            for a, b in zip(layers, back[v][stage]):
                np.testing.assert_array_equal(a["w"], b["w"])
                np.testing.assert_array_equal(a["b"], b["b"])
