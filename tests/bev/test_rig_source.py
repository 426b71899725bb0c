"""The rig as a frame source (edgert.sources): a recording or the synthetic world, one camera's frames
through the common Frame API, whole RigSamples through samples(), corrupt frames skipped and counted."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("cv2")

from edgert.errors import InputError  # noqa: E402
from edgert.sources import EVENT_SKIPPED, RigSource, SourceOptions, open_source  # noqa: E402


@pytest.fixture
def seq(bev_seq):
    return bev_seq


def test_recording_dir_is_a_rig_source(seq):
    d, world = seq
    src = open_source(f"{d}#CAM_BACK")
    assert isinstance(src, RigSource) and src.fps == 12
    frames = list(src)
    assert len(frames) == 6 and src.stats.delivered == 6
    assert np.array_equal(frames[4].image, world.sample(4).frames[3])
    whole = list(open_source(str(d)).samples())
    assert [s.index for s in whole] == list(range(6)) and all(len(s.frames) == 6 for s in whole)


def test_corrupt_frame_is_skipped_and_reported(seq, tmp_path):
    d = shutil.copytree(seq[0], tmp_path / "s")
    (d / "sweeps" / "CAM_FRONT" / "000001.png").write_bytes(b"not a png")
    events = []
    src = open_source(str(d), SourceOptions(on_event=lambda k, det: events.append(k)))
    frames = list(src)
    assert len(frames) == 5 and src.stats.failed == 1 and EVENT_SKIPPED in events


def test_synthetic_rig_and_bad_specs(seq):
    src = open_source("rig:synthetic:7")
    s = next(src.samples())
    assert len(s.frames) == 6 and s.gt_grid is not None
    with pytest.raises(InputError, match="unknown camera"):
        open_source(f"{seq[0]}#CAM_ROOF")
    with pytest.raises(InputError, match="rig:synthetic"):
        open_source("rig:synthetic:x")
