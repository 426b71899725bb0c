"""The BEV model's stages as separate ORT sessions (edgert.bev.stages) equal the whole ONNX graph,
take any subset of cameras, and bad model files are refused with one clear error."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from edgert.bev import decode as D  # noqa: E402
from edgert.bev.rig import nuscenes_like_rig  # noqa: E402
from edgert.bev.stages import load_stages  # noqa: E402
from edgert.bev.world import World, WorldOptions  # noqa: E402
from edgert.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def bev_onnx(tmp_path_factory):
    from zoo.bev import model as M
    from zoo.bev.export import export_onnx

    rig = nuscenes_like_rig()
    params = {v: M.to_numpy(M.init_params(M.build(M.variant(v), rig), seed=1)) for v in ("full", "small")}
    p = tmp_path_factory.mktemp("bev") / "bev.onnx"
    export_onnx(params, rig, p)
    return p, rig


@pytest.mark.slow
def test_stages_equal_the_whole_graph_and_take_camera_subsets(bev_onnx):
    import onnxruntime as ort

    path, rig = bev_onnx
    st = load_stages(path, rig)
    assert st.variants == ("full", "small")
    s0, s1 = World(rig, WorldOptions(seed=3)).sample(10), World(rig, WorldOptions(seed=3)).sample(11)
    whole = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in whole.get_inputs()]
    for v in st.variants:
        cams = list(range(6))
        f = st.backbone(s0.frames, cams, v)
        b0 = st.fuse(f, cams, None, None, v)
        x, mask = D.preprocess(s0.frames, *st.image_hw)
        feeds = {n: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
                 for n, i in zip(names, whole.get_inputs())}
        feeds.update(images=x, cam_mask=mask)
        ref = dict(zip([o.name for o in whole.get_outputs()], whole.run(None, feeds)))
        assert np.allclose(b0.bev, ref[f"{v}/bev"], atol=1e-4)
        grid, boxes, scores = st.heads(b0, v)
        assert np.array_equal(grid, D.seg_to_grid(ref[f"{v}/seg"]))
        # temporal step: the previous BEV warped by the ego motion, only two cameras refreshed
        motion = s1.pose.relative_to(s0.pose)
        part = st.backbone([s1.frames[0], s1.frames[5]], [0, 5], v)
        assert part.mask.tolist() == [1, 0, 0, 0, 0, 1] and not part.feat[1:5].any()
        b1 = st.fuse(part, [0, 5], b0, motion, v)
        feeds.update(images=D.preprocess(s1.frames, *st.image_hw)[0], cam_mask=part.mask)
        feeds[f"{v}/prev_bev"] = D.warp_bev(b0.bev, st.model_grids[v], motion)
        ref1 = dict(zip([o.name for o in whole.get_outputs()], whole.run(None, feeds)))
        assert np.allclose(b1.bev, ref1[f"{v}/bev"], atol=1e-4)


def test_bad_model_files_are_refused(tmp_path, bev_onnx):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07 not protobuf at all" * 10)
    with pytest.raises(InputError, match="not a readable ONNX|no edgert.bev.stages"):
        load_stages(tmp_path / "junk.onnx")
    with pytest.raises(InputError, match="not a BEV model"):
        load_stages(tmp_path / "bev.pkg")
    with pytest.raises(InputError, match="another rig"):
        load_stages(bev_onnx[0], nuscenes_like_rig(64, 48))


def test_bev_run_with_a_model(bev_onnx, bev_seq, tmp_path):
    """`edgert bev run MODEL.onnx` on a recording: every policy produces outputs from the real stages.
    (bev_seq is recorded at 64x48; this model was built for 160x96, so record a matching one.)"""
    import json

    from click.testing import CliRunner

    from edgert.cli import main

    seq = tmp_path / "seq"
    r = CliRunner().invoke(main, ["bev", "record", "--out", str(seq), "--seconds", "0.5", "--seed", "8"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["bev", "run", str(bev_onnx[0]), "--source", str(seq), "--policy",
                                  "latest,deadline", "--speed-factor", "4", "--json"])
    assert r.exit_code == 0, r.output
    pol = json.loads(r.output.strip().splitlines()[-1])["policies"]
    assert pol["latest"]["frames_processed"] >= 1 and pol["deadline"]["frames_processed"] >= 1
    r = CliRunner().invoke(main, ["bev", "run", str(bev_onnx[0]), "--source", str(bev_seq[0])])
    assert r.exit_code == 2 and "another rig" in r.output


def test_bev_run_live_rig_of_video_files(bev_onnx, tmp_path):
    """`edgert bev run MODEL --camera …` (one per rig camera, here video files playing in real time):
    outputs are printed as they are made, without odometry temporal fusion stays off, and --seconds
    ends the run."""
    import json

    import cv2
    from click.testing import CliRunner

    from edgert.cli import main

    cams = []
    for i in range(6):
        p = tmp_path / f"cam{i}.avi"
        w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (160, 96))
        for k in range(24):
            w.write(np.full((96, 160, 3), (20 * i + 5 * k) % 255, np.uint8))
        w.release()
        cams += ["--camera", str(p)]
    r = CliRunner().invoke(main, ["bev", "run", str(bev_onnx[0]), *cams, "--policy", "deadline",
                                  "--seconds", "1", "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.output.strip().splitlines()]
    outputs, summary = lines[:-1], lines[-1]["policies"]["deadline"]
    assert 3 <= len(outputs) <= 12 and summary["frames_processed"] == len(outputs)
    assert all(o["latency_ms"] > 0 and not o["reused_prev"] for o in outputs)
    assert [o["source_index"] for o in outputs] == sorted(o["source_index"] for o in outputs)
    r = CliRunner().invoke(main, ["bev", "run", str(bev_onnx[0]), *cams[:4]])
    assert r.exit_code == 2 and "the rig has 6 cameras" in r.output
    r = CliRunner().invoke(main, ["bev", "run", str(bev_onnx[0]), *cams[:10], "--camera", str(tmp_path / "gone.avi")])
    assert r.exit_code == 2 and "gone.avi" in r.output and "Traceback" not in r.output, r.output
