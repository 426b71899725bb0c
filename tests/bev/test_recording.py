"""Recordings: what `record` writes reads back equal, hostile or broken recordings are refused with
one clear error, corrupt frames and pose jumps are reported and survived."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("cv2")

from edgert.bev.recording import Recording, discontinuity, record, with_discontinuities  # noqa: E402
from edgert.bev.schema import Pose  # noqa: E402
from edgert.errors import InputError  # noqa: E402


@pytest.fixture
def seq(bev_seq):
    return bev_seq


def test_round_trip(seq):
    d, world = seq
    rec = Recording(d)
    assert len(rec) == 6 and rec.rate_hz == 12 and rec.rig == world.rig
    for s in rec.samples():
        w = world.sample(s.index)
        assert all(np.array_equal(a, b) for a, b in zip(s.frames, w.frames))      # PNG: lossless
        assert np.array_equal(s.gt_grid, w.gt_grid)
        assert np.allclose(s.gt_boxes, w.gt_boxes, atol=1e-3)
        assert s.frame_t_us == w.frame_t_us and abs(s.pose.x - w.pose.x) < 1e-3
        assert not s.events


def test_refuses_to_overwrite(seq):
    with pytest.raises(InputError, match="already holds"):
        record(seq[1], seq[0])


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_corrupt_frame_is_reported_and_survived(seq, tmp_path):
    d = _copy(seq[0], tmp_path / "s")
    (d / "sweeps" / "CAM_BACK" / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    s = Recording(d)[2]
    assert s.frames[3] is None and all(f is not None for i, f in enumerate(s.frames) if i != 3)
    assert any(e.startswith("corrupt_frame CAM_BACK") for e in s.events)


@pytest.mark.parametrize("edit, match", [
    (lambda m, lines: m.update(version=99), "version 99"),
    (lambda m, lines: m.update(format="other"), "not an edgert.bev_seq"),
    (lambda m, lines: m["rig"]["cameras"].pop(), "3 frames|5-camera|6 frames"),
    (lambda m, lines: lines.__setitem__(1, lines[1].replace('"sweeps/', '"../../../etc/')), "outside"),
    (lambda m, lines: lines.__setitem__(0, '{"i": 0}'), "line 1: bad sample"),
    (lambda m, lines: lines.__setitem__(2, "{not json"), "line 3: not JSON"),
    (lambda m, lines: lines.__setitem__(0, lines[0].replace('"pose": [', '"pose": [1e999, ')), "pose"),
])
def test_hostile_recordings_are_refused(seq, tmp_path, edit, match):
    d = _copy(seq[0], tmp_path / "s")
    meta = json.loads((d / "meta.json").read_text())
    lines = (d / "samples.jsonl").read_text().splitlines()
    edit(meta, lines)
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "samples.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=match):
        Recording(d)


def test_unfinished_recording_is_named(tmp_path):
    (tmp_path / "samples.jsonl").write_text("")
    with pytest.raises(InputError, match="no meta.json"):
        Recording(tmp_path)


def test_pose_jumps_and_gaps_are_flagged():
    from edgert.bev.schema import RigSample

    def s(i, t_ms, x, yaw=0.0):
        return RigSample(i, int(t_ms * 1000), [], [], Pose(x, 0.0, yaw))
    out = list(with_discontinuities([s(0, 0, 0), s(1, 83, 0.7), s(2, 167, 20.0), s(3, 250, 20.7),
                                     s(4, 600, 23.0), s(5, 683, 23.7, yaw=1.5)], 12.0))
    flags = [discontinuity(x) for x in out]
    assert flags == [False, False, True, False, True, True]
    assert out[2].events[0].startswith("pose_jump") and out[4].events[0].startswith("gap")
