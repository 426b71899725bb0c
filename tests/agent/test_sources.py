"""Agent input sources: synthetic feeds shaped like the model's inputs, an image folder with bad files
skipped and counted, the missing-camera error, and every bad spec as a one-line InputError."""
from __future__ import annotations

import numpy as np
import pytest

import edgert
from edgert.agent.sources import InputSource, known_sources, open_source
from edgert.errors import InputError


@pytest.fixture()
def session(make_pkg):
    return edgert.load(make_pkg("img"), backend="numpy")


@pytest.fixture()
def bare_session(make_pkg):
    """A package that records no image preprocessing."""
    return edgert.load(make_pkg("bare", preprocess=False), backend="numpy")


def write_png(path, h: int, w: int, seed: int) -> None:
    from PIL import Image
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_known_sources():
    assert known_sources() == ["camera", "images", "synthetic"]


def test_synthetic_matches_inputs_and_runs(session):
    with open_source("synthetic", session) as src:
        assert isinstance(src, InputSource) and src.name == "synthetic"
        feeds = [src.next() for _ in range(5)]
    for f in feeds:
        assert set(f) == {vi.name for vi in session.inputs}
        x = f["x"]
        assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32      # dims from the recorded size
        assert session.run(f)["y"].shape == (1, 2, 8, 8)
    assert np.array_equal(feeds[0]["x"], feeds[4]["x"]), "a pool of 4, cycled"
    assert not np.array_equal(feeds[0]["x"], feeds[1]["x"])
    again = open_source("synthetic", session).next()
    assert np.array_equal(again["x"], feeds[0]["x"]), "seeded"
    assert src.skipped == 0


def test_synthetic_size_and_default(session, bare_session):
    x = open_source("synthetic:16x12", session).next()["x"]
    assert x.shape == (1, 3, 16, 12)
    assert session.run(x)["y"].shape == (1, 2, 16, 12)
    assert open_source("synthetic", bare_session).next()["x"].shape == (1, 3, 224, 224)
    for bad in ("synthetic:16", "synthetic:0x4", "synthetic:axb"):
        with pytest.raises(InputError, match="synthetic:HxW"):
            open_source(bad, session)


def test_images_skip_corrupt_and_cycle(session, tmp_path):
    write_png(tmp_path / "a.png", 8, 8, 0)
    write_png(tmp_path / "b.PNG", 20, 30, 1)     # resized to the recorded 8x8; suffix case ignored
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    write_png(tmp_path / "d.bmp", 5, 5, 2)
    (tmp_path / "notes.txt").write_text("not an image, not counted")
    src = open_source(f"images:{tmp_path}", session)
    assert src.name == "images" and [p.name for p in src.files] == ["a.png", "b.PNG", "c.jpg", "d.bmp"]
    outs = [src.next() for _ in range(7)]
    assert src.skipped == 1, "the bad file is counted once, then out of the rotation"
    for f in outs:
        assert f["x"].shape == (1, 3, 8, 8) and f["x"].dtype == np.float32
        assert session.run(f)["y"].shape == (1, 2, 8, 8)
    assert np.array_equal(outs[0]["x"], outs[3]["x"]) and np.array_equal(outs[2]["x"], outs[5]["x"])
    src.close()


def test_images_all_bad(session, tmp_path):
    for n in ("a.png", "b.jpg"):
        (tmp_path / n).write_bytes(b"garbage")
    src = open_source(f"images:{tmp_path}", session)
    with pytest.raises(InputError, match="none of the 2 images"):
        src.next()
    assert src.skipped == 2


def test_images_bad_dirs_and_packages(session, bare_session, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no \.png/\.jpg/\.jpeg/\.bmp files in"):
        open_source(f"images:{tmp_path / 'empty'}", session)
    with pytest.raises(InputError, match="no directory"):
        open_source(f"images:{tmp_path / 'missing'}", session)
    with pytest.raises(InputError, match="images:DIR"):
        open_source("images", session)
    write_png(tmp_path / "a.png", 8, 8, 0)
    with pytest.raises(InputError, match="--size"):
        open_source(f"images:{tmp_path}", bare_session)


def test_camera_missing(session, bare_session):
    # no camera here: the one-line error `edgert run --camera` gives (or the OpenCV install hint)
    with pytest.raises(InputError, match="camera") as e:
        open_source("camera:99", session)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="camera:INDEX"):
        open_source("camera:front", session)
    with pytest.raises(InputError, match="--size"):
        open_source("camera", bare_session)


@pytest.mark.parametrize("spec", ["video:/dev/video0", "", "Synthetic"])
def test_unknown_spec_lists_known(session, spec):
    with pytest.raises(InputError, match="unknown input source") as e:
        open_source(spec, session)
    for usage in ("synthetic[:HxW]", "images:DIR", "camera[:INDEX]"):
        assert usage in str(e.value)
