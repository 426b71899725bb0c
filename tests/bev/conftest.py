from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def bev_seq(tmp_path_factory):
    """(directory, world): a 0.5 s PNG recording (6 samples) of a small-image synthetic drive."""
    pytest.importorskip("cv2")
    from edgert.bev.recording import RecordOptions, record
    from edgert.bev.rig import nuscenes_like_rig
    from edgert.bev.world import World, WorldOptions

    d = tmp_path_factory.mktemp("bev") / "seq"
    world = World(nuscenes_like_rig(64, 48), WorldOptions(seed=2))
    record(world, d, RecordOptions(seconds=0.5, image_format="png"))
    return d, world
