"""converters/bev_bundle.py: a BEV ONNX -> one package of its six stage graphs + the BEV sections,
calibrated through the float cascade on a recording; edgert.bev.stages.load_stages runs it on the
edgert backends (ort, and the numpy oracle), and bad inputs give one typed error."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from converters.bev_bundle import BevConvertOptions, convert_bev  # noqa: E402
from edgert.bev import package as BP  # noqa: E402
from edgert.bev.rig import nuscenes_like_rig  # noqa: E402
from edgert.bev.stages import load_stages  # noqa: E402
from edgert.errors import CalibrationError, ConversionError, InputError, PackageError  # noqa: E402
from edgert.package import read_package  # noqa: E402

ENTRIES = ["full/backbone", "full/fuse", "full/heads", "small/backbone", "small/fuse", "small/heads"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """(dir, fp32 onnx, recording dir, W4A6 package, its report): a random-init export at the default
    rig size and a 0.5 s recording of it."""
    from edgert.bev.recording import RecordOptions, record
    from edgert.bev.world import World, WorldOptions
    from zoo.bev import model as M
    from zoo.bev.export import export_onnx

    d = tmp_path_factory.mktemp("bevq")
    rig = nuscenes_like_rig()
    params = {v: M.to_numpy(M.init_params(M.build(M.variant(v), rig), seed=1)) for v in ("full", "small")}
    export_onnx(params, rig, d / "bev.onnx")
    record(World(rig, WorldOptions(seed=4)), d / "seq", RecordOptions(seconds=0.5, image_format="png"))
    rep = convert_bev(d / "bev.onnx", d / "w4a6.pkg",
                      BevConvertOptions(calib_dir=d / "seq", progress=False, sqnr_batches=1))
    return d, d / "bev.onnx", d / "seq", d / "w4a6.pkg", rep


def _sample(seq, i=0):
    from edgert.bev.recording import Recording
    rec = Recording(seq)
    return rec, rec.sample(i), rec.sample(i + 1)


def test_package_holds_the_six_stage_graphs_and_the_bev_sections(work):
    d, onnx_path, seq, pkg_path, rep = work
    with read_package(pkg_path) as pkg:
        assert list(pkg.graphs) == ENTRIES
        assert set(BP.SECTIONS) <= set(pkg.extra_names())
        sec = BP.read_bev_sections(pkg, str(pkg_path))
        assert [s["entry"] for s in sec.specs] == ENTRIES
        assert sec.rig == nuscenes_like_rig()
        assert sec.info["variants"]["full"]["bev_ch"] == 64
        assert pkg.graphs["full/backbone"].inputs[0].shape[0] == "n_cams"        # any camera subset
        for g in pkg.graphs.values():
            convs = [li for li in g.layers if li.op == "Conv"]
            assert convs and all(li.wbits in (4, 8) and li.abits == 6 for li in convs)
        tables = [li for g in pkg.graphs.values() for li in g.layers if li.extra.get("kind") == "table"]
        assert len(tables) == 2 and all(li.wbits == 8 and li.sqnr_db > 35 for li in tables)
    assert rep.package_bytes == pkg_path.stat().st_size and rep.ratio > 8
    assert rep.calib_samples == 6 and set(rep.stage_sqnr_db) == set(ENTRIES)
    assert all(v > 5 for sq in rep.stage_sqnr_db.values() for v in sq.values())
    assert "full/fuse" in rep.format_table() and json.dumps(rep.to_json())


@pytest.mark.parametrize("backend", ["ort", "numpy"])
def test_load_stages_runs_every_stage_of_the_package(work, backend):
    d, onnx_path, seq, pkg_path, _ = work
    rec, s0, s1 = _sample(seq)
    st = load_stages(pkg_path, rec.rig, backend=backend)
    assert st.variants == ("full", "small") and st.package is not None
    for v in st.variants:
        f = st.backbone(s0.frames, list(range(6)), v)
        b0 = st.fuse(f, list(range(6)), None, None, v)
        grid, boxes, scores = st.heads(b0, v)
        assert grid.shape == (100, 100) and boxes.shape[1] == 10 and len(scores) == len(boxes)
        part = st.backbone([s1.frames[0], s1.frames[5]], [0, 5], v)      # two cameras refreshed
        assert part.mask.tolist() == [1, 0, 0, 0, 0, 1] and not part.feat[1:5].any()
        b1 = st.fuse(part, [0, 5], b0, s1.pose.relative_to(s0.pose), v)
        assert b1.bev.shape == b0.bev.shape and np.isfinite(b1.bev).all()


def test_ort_backend_matches_the_numpy_oracle(work):
    d, onnx_path, seq, pkg_path, _ = work
    rec, s0, _ = _sample(seq)
    a, b = load_stages(pkg_path, rec.rig, backend="ort"), load_stages(pkg_path, rec.rig, backend="numpy")
    fa, fb = a.backbone(s0.frames, list(range(6)), "small"), b.backbone(s0.frames, list(range(6)), "small")
    ba, bb = a.fuse(fa, list(range(6)), None, None, "small"), b.fuse(fa, list(range(6)), None, None, "small")
    # ORT requantizes in float: a few values one 6-bit step (about max / 31) apart from the oracle
    for x, y in ((fa.feat, fb.feat), (ba.bev, bb.bev)):
        step = np.abs(y).max() / 31
        assert np.abs(x - y).max() <= 1.5 * step and np.mean(np.abs(x - y)) < 0.05 * step


def test_w8a8_stays_close_to_fp32(work):
    d, onnx_path, seq, _, _ = work
    convert_bev(onnx_path, d / "w8a8.pkg", BevConvertOptions(wbits=8, abits=8, calib_dir=seq, progress=False,
                                                             sqnr_batches=0))
    rec, s0, s1 = _sample(seq)
    ref, q = load_stages(onnx_path, rec.rig), load_stages(d / "w8a8.pkg", rec.rig)
    cams = list(range(6))
    for v in ("full", "small"):
        outs = []
        for st in (ref, q):
            b0 = st.fuse(st.backbone(s0.frames, cams, v), cams, None, None, v)
            b1 = st.fuse(st.backbone(s1.frames, cams, v), cams, b0, s1.pose.relative_to(s0.pose), v)
            seg = st.sessions[(v, "heads")].run(None, {f"{v}/bev": b1.bev})[0]
            outs.append((b1.bev, seg))
        (bev_f, seg_f), (bev_q, seg_q) = outs
        sqnr = 10 * np.log10(np.sum(bev_f ** 2) / np.sum((bev_f - bev_q) ** 2))
        assert sqnr > 25, (v, sqnr)
        assert np.mean(np.argmax(seg_f[0], 0) == np.argmax(seg_q[0], 0)) > 0.95


def test_no_calibration_data_is_one_clear_error(work, tmp_path):
    d, onnx_path, seq, _, _ = work
    with pytest.raises(CalibrationError, match="needs a calibration recording"):
        convert_bev(onnx_path, tmp_path / "x.pkg", BevConvertOptions(progress=False))
    (tmp_path / "imgs").mkdir()
    with pytest.raises(CalibrationError, match="not a recording"):
        convert_bev(onnx_path, tmp_path / "x.pkg", BevConvertOptions(calib_dir=tmp_path / "imgs", progress=False))
    with pytest.raises(CalibrationError, match="another rig"):
        from edgert.bev.recording import RecordOptions, record
        from edgert.bev.world import World, WorldOptions
        record(World(nuscenes_like_rig(64, 48), WorldOptions(seed=1)), tmp_path / "small",
               RecordOptions(seconds=0.1, image_format="png"))
        convert_bev(onnx_path, tmp_path / "x.pkg", BevConvertOptions(calib_dir=tmp_path / "small", progress=False))
    assert not (tmp_path / "x.pkg").exists()
    # weight-only needs no data
    rep = convert_bev(onnx_path, tmp_path / "wo.pkg", BevConvertOptions(abits=None, progress=False))
    assert rep.calib_samples == 0 and load_stages(tmp_path / "wo.pkg").variants == ("full", "small")


def test_not_a_bev_onnx_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "plain.onnx")
    with pytest.raises(ConversionError, match="not a BEV model"):
        convert_bev(tmp_path / "plain.onnx", tmp_path / "x.pkg")
    (tmp_path / "junk.onnx").write_bytes(b"edgert.bev.stages but not protobuf" * 3)
    with pytest.raises(ConversionError, match="cannot parse"):
        convert_bev(tmp_path / "junk.onnx", tmp_path / "x.pkg")


def _rewrite(src, dst, extras=None, drop=(), rename=None):
    """The package's graphs written again with changed BEV sections (hashes stay valid: a hostile
    producer, not a corrupt file)."""
    from converters.package_writer import WriteOptions, write_package
    with read_package(src) as pkg:
        graphs = [g for n, g in pkg.graphs.items() if n not in drop]
        for g in graphs:
            g.name = (rename or {}).get(g.name, g.name)
        ex = {n: bytes(pkg.extra(n)) for n in pkg.extra_names()}
        ex.update(extras or {})
        write_package(dst, graphs, WriteOptions(compress="none"), extras={k: v for k, v in ex.items() if v is not None})
    return dst


def test_corrupt_or_hostile_packages_give_one_clear_error(work, tmp_path):
    d, onnx_path, seq, pkg_path, _ = work
    with read_package(pkg_path) as pkg:
        model = json.loads(bytes(pkg.extra(BP.MODEL_SECTION)))
        specs = json.loads(bytes(pkg.extra(BP.STAGES_SECTION)))
    raw = bytearray(pkg_path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "flip.pkg").write_bytes(bytes(raw))
    with pytest.raises(PackageError, match="flip.pkg"):
        load_stages(tmp_path / "flip.pkg")
    (tmp_path / "short.pkg").write_bytes(pkg_path.read_bytes()[:1000])
    with pytest.raises(PackageError):
        load_stages(tmp_path / "short.pkg")
    with pytest.raises(InputError, match="not a BEV model"):
        load_stages(tmp_path / "missing.pkg")

    bad_h = json.loads(json.dumps(model))
    bad_h["image"]["height"] = "96"
    huge = json.loads(json.dumps(model))
    huge["variants"]["full"]["feat"] = [6, 4096, 4096, 4096]
    wrong_io = json.loads(json.dumps(specs))
    wrong_io[1]["inputs"] = ["full/feat", "cam_mask"]
    cases = {
        "no section": ({BP.RIG_SECTION: None}, (), None, "not a BEV package"),
        "not json": ({BP.MODEL_SECTION: b"{nope"}, (), None, "not JSON"),
        "wrong type": ({BP.MODEL_SECTION: json.dumps(bad_h).encode()}, (), None, r"image\.height"),
        "huge feat": ({BP.MODEL_SECTION: json.dumps(huge).encode()}, (), None, "feat"),
        "bad rig": ({BP.RIG_SECTION: b'{"cameras": [{"name": 1}]}'}, (), None, "bev/rig"),
        "io mismatch": ({BP.STAGES_SECTION: json.dumps(wrong_io).encode()}, (), None, "declares"),
        "missing graph": ({}, ("small/heads",), None, "has no graph"),
        "renamed": ({}, (), {"full/fuse": "full/other"}, "has no graph"),
        "stage list": ({BP.STAGES_SECTION: json.dumps(specs[:2]).encode()}, (), None, "lacks the heads"),
    }
    for name, (extras, drop, rename, msg) in cases.items():
        p = _rewrite(pkg_path, tmp_path / f"{name.replace(' ', '_')}.pkg", extras, drop, rename)
        with pytest.raises(PackageError, match=msg):
            load_stages(p)
    with pytest.raises(InputError, match="another rig"):
        load_stages(pkg_path, nuscenes_like_rig(64, 48))


def test_cli_convert_detects_a_bev_onnx_and_bev_run_takes_the_package(work, tmp_path):
    from click.testing import CliRunner

    from edgert.cli import main

    d, onnx_path, seq, _, _ = work
    out = tmp_path / "cli.pkg"
    r = CliRunner().invoke(main, ["convert", str(onnx_path), "-o", str(out), "--wbits", "4", "--abits", "6",
                                  "--calib", str(seq), "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert set(rep["stages"]) == set(ENTRIES) and rep["package_bytes"] == out.stat().st_size
    r = CliRunner().invoke(main, ["convert", str(onnx_path), "-o", str(tmp_path / "y.pkg"), "--wbits", "4"])
    assert r.exit_code == 2 and "calibration recording" in r.output
    r = CliRunner().invoke(main, ["convert", str(onnx_path), "-o", str(tmp_path / "y.pkg"), "--calib-random", "4"])
    assert r.exit_code == 2 and "--calib DIR" in r.output
    r = CliRunner().invoke(main, ["bev", "run", str(out), "--source", str(seq), "--policy", "latest",
                                  "--speed-factor", "4", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["policies"]["latest"]["frames_processed"] >= 1


def test_running_a_package_needs_no_onnx_nor_converter_code(work):
    d, onnx_path, seq, pkg_path, _ = work
    code = (f"from edgert.bev.stages import load_stages\nfrom edgert.bev.recording import Recording\n"
            f"rec = Recording({str(seq)!r}); s = rec.sample(0)\n"
            f"st = load_stages({str(pkg_path)!r}, rec.rig)\n"
            f"st.heads(st.fuse(st.backbone(s.frames, list(range(6)), 'small'), list(range(6)), None, None, 'small'), 'small')\n"
            f"import sys; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))")
    mods = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
               .stdout.split())
    assert "onnxruntime" in mods
    assert not (mods & {"onnx", "converters", "zoo", "jax", "tqdm"})


@pytest.mark.slow
def test_convert_with_view_guided_distillation(work, tmp_path):
    """`edgert convert bev.onnx --distill view-guided --calib seq/`: fine-tuned weights land on the W4
    grid (exported beside the output), and the package converts and runs."""
    from click.testing import CliRunner

    from edgert.cli import main
    from zoo.bev.export import params_from_onnx

    from edgert.bev.recording import RecordOptions, record
    from edgert.bev.world import World, WorldOptions

    d, onnx_path, short, _, _ = work
    seq = tmp_path / "seq"                                  # training clips are 12 samples: record 1.5 s
    record(World(nuscenes_like_rig(), WorldOptions(seed=5)), seq, RecordOptions(seconds=1.5))
    out = tmp_path / "d.pkg"
    r = CliRunner().invoke(main, ["convert", str(onnx_path), "-o", str(out), "--wbits", "4", "--abits", "6",
                                  "--calib", str(seq), "--distill", "view-guided", "--distill-minutes", "0.1",
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    tuned = params_from_onnx(tmp_path / "d.distilled.onnx")
    w = tuned["full"]["backbone"][0]["w"].reshape(tuned["full"]["backbone"][0]["w"].shape[0], -1)
    scale = np.abs(w).max(1, keepdims=True) / 7            # symmetric 4-bit per output channel
    assert np.allclose(w / scale, np.round(w / scale), atol=1e-3)
    st = load_stages(out, nuscenes_like_rig())
    rec, s0, _ = _sample(seq)
    grid, _, _ = st.heads(st.fuse(st.backbone(s0.frames, list(range(6)), "full"), list(range(6)), None, None,
                                  "full"), "full")
    assert grid.shape == (100, 100)
    # the 0.5 s recording is too short for a training clip: one clear line
    r = CliRunner().invoke(main, ["convert", str(onnx_path), "-o", str(tmp_path / "e.pkg"), "--calib", str(short),
                                  "--distill", "view-guided", "--distill-minutes", "0.1"])
    assert r.exit_code == 2 and "training clips are 12" in r.output, r.output


@pytest.mark.parametrize("extra, match", [
    (["--distill", "view-guided"], "trains on the --calib recording"),
])
def test_distill_needs_a_recording(work, tmp_path, extra, match):
    from click.testing import CliRunner

    from edgert.cli import main

    r = CliRunner().invoke(main, ["convert", str(work[1]), "-o", str(tmp_path / "x.pkg"), *extra])
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output, r.output
