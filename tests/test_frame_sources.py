"""edgert/sources.py: frame sources for `edgert run` (videos written here with OpenCV, fake captures).

(Named test_frame_sources.py: tests/agent/test_sources.py already has the basename, and tests/ has no
__init__.py files, so two test_sources.py would collide.)"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgert.errors import InputError
from edgert.sources import (EVENT_DISCONNECTED, EVENT_RECONNECTED, EVENT_SKIPPED, Frame, MultiSource,
                            SourceOptions, list_video_devices, open_source, open_sources,
                            parse_sources_file, render_synthetic)

cv2 = pytest.importorskip("cv2", reason="the frame sources need opencv-python-headless")

pytestmark = pytest.mark.timeout(60)

H, W = 48, 64


def _colour(i: int) -> tuple[int, int, int]:
    """RGB of frame i: far apart, so lossy codecs keep them apart."""
    return (int(i * 37 % 200) + 30, 200 - int(i * 53 % 150), 40 if i % 2 else 210)


def write_video(path: Path, n: int, fps: float = 25.0, fourcc: str = "MJPG") -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert w.isOpened(), f"this OpenCV cannot write {fourcc} {path.suffix}"
    for i in range(n):
        rgb = np.empty((H, W, 3), np.uint8)
        rgb[:] = _colour(i)
        w.write(np.ascontiguousarray(rgb[:, :, ::-1]))   # VideoWriter takes BGR
    w.release()
    return path


def _source_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgert-source:") and t.is_alive()]


@pytest.fixture(autouse=True)
def no_leftover_threads():
    yield
    assert _source_threads() == [], "a capture thread outlived close()"


def _check_frame(f: Frame) -> None:
    assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
    assert f.image.flags.c_contiguous


# -- video files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fourcc,suffix", [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_video_in_order_delivers_every_frame(tmp_path, fourcc, suffix):
    path = write_video(tmp_path / f"clip{suffix}", 12, fourcc=fourcc)
    with open_source(str(path)) as src:
        assert not src.live and src.fps == pytest.approx(25.0)
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    assert all(a.t_ns < b.t_ns for a, b in zip(frames, frames[1:]))
    for i, f in enumerate(frames):
        _check_frame(f)
        assert f.image.shape == (H, W, 3) and f.source == str(path) and f.path is None
        # RGB, not BGR: the mean colour is the one written, within codec loss
        assert np.abs(f.image.reshape(-1, 3).mean(0) - _colour(i)).max() < 12
    assert (src.stats.captured, src.stats.delivered, src.stats.dropped) == (12, 12, 0)


def test_video_max_frames_and_loop(tmp_path):
    path = write_video(tmp_path / "clip.avi", 5)
    with open_source(path, SourceOptions(max_frames=3)) as src:
        assert [f.index for f in src] == [0, 1, 2]
    with open_source(path, SourceOptions(loop=True, max_frames=12)) as src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    # the second pass starts over: frame 5 is frame 0 again
    assert np.abs(frames[5].image.astype(int) - frames[0].image).max() <= 2


def test_realtime_video_with_slow_consumer_drops(tmp_path):
    path = write_video(tmp_path / "fast.avi", 30, fps=200.0)   # 0.15 s of video
    with open_source(path, SourceOptions(realtime=True)) as src:
        assert src.live
        got = []
        for f in src:
            got.append(f.index)
            _check_frame(f)     # converted to RGB on delivery
            assert np.abs(f.image.reshape(-1, 3).mean(0) - _colour(f.index)).max() < 12
            time.sleep(0.03)    # ~6 frames arrive per frame consumed
    st = src.stats
    assert st.captured == 30 and st.dropped > 0 and 0 < st.delivered < 30
    assert st.delivered + st.dropped == st.captured
    assert got == sorted(got) and len(set(got)) == len(got) and got[-1] == 29   # latest wins: the last one is seen


def test_realtime_close_midway_keeps_the_invariant(tmp_path):
    path = write_video(tmp_path / "clip.avi", 40, fps=100.0)
    src = open_source(path, SourceOptions(realtime=True))
    it = iter(src)
    next(it)
    time.sleep(0.05)
    src.close()
    src.close()   # idempotent
    assert list(it) == []
    st = src.stats
    assert st.delivered == 1 and st.delivered + st.dropped == st.captured


def test_missing_or_undecodable_video(tmp_path):
    with pytest.raises(InputError, match="no such video file"):
        open_source(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputError, match="bad.mp4"):
        with open_source(bad) as src:
            list(src)


# -- image folders and globs ------------------------------------------------------------------------

@pytest.fixture()
def image_dir(tmp_path) -> Path:
    from PIL import Image

    d = tmp_path / "frames"
    d.mkdir()
    for i in (0, 1, 3):
        Image.fromarray(np.full((H, W, 3), _colour(i), np.uint8)).save(d / f"f{i:02d}.png")
    (d / "f02.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")   # corrupt, sorts between the good ones
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.mark.parametrize("form", ["folder", "glob"])
def test_images_skip_the_corrupt_file(image_dir, form):
    spec = str(image_dir) if form == "folder" else str(image_dir / "*.png")
    events = []
    with open_source(spec, SourceOptions(on_event=lambda k, d: events.append((k, d)))) as src:
        frames = list(src)
    assert [Path(f.path).name for f in frames] == ["f00.png", "f01.png", "f03.png"]
    assert [f.index for f in frames] == [0, 1, 2]
    for f, i in zip(frames, (0, 1, 3)):
        _check_frame(f)
        assert (f.image == np.array(_colour(i), np.uint8)).all()
    st = src.stats
    assert (st.captured, st.delivered, st.dropped, st.failed) == (3, 3, 0, 1)
    assert [k for k, _ in events] == [EVENT_SKIPPED] and events[0][1]["path"].endswith("f02.png")


def test_images_loop_reads_a_bad_file_once(image_dir):
    events = []
    opts = SourceOptions(loop=True, max_frames=7, on_event=lambda k, d: events.append(k))
    with open_source(image_dir, opts) as src:
        assert len(list(src)) == 7
    assert src.stats.failed == 1 and events == [EVENT_SKIPPED]


def test_images_errors(tmp_path):
    with pytest.raises(InputError, match="no files match"):
        open_source(str(tmp_path / "*.png"))
    (tmp_path / "a.png").write_bytes(b"junk")
    with pytest.raises(InputError, match="none of the 1 image files could be read"):
        with open_source(str(tmp_path / "*.png")) as src:
            list(src)


# -- synthetic ----------------------------------------------------------------------------------------

def test_synthetic_is_deterministic_and_moving():
    opts = SourceOptions(size=(120, 160), max_frames=4)
    with open_source("synthetic", opts) as a, open_source("synthetic", opts) as b:
        fa, fb = list(a), list(b)
    assert [f.index for f in fa] == [0, 1, 2, 3]
    for x, y in zip(fa, fb):
        _check_frame(x)
        assert x.image.shape == (120, 160, 3) and np.array_equal(x.image, y.image)
    assert all(not np.array_equal(p.image, q.image) for p, q in zip(fa, fa[1:]))
    assert np.array_equal(render_synthetic(3, (120, 160)), fa[3].image)
    with open_source("synthetic:30x40", SourceOptions(max_frames=1)) as s:
        assert next(iter(s)).image.shape == (30, 40, 3)


def test_synthetic_realtime_is_live_and_paced():
    with open_source("synthetic", SourceOptions(size=(32, 32), realtime=True, fps=50.0, max_frames=5)) as src:
        assert src.live
        t0 = time.monotonic()
        assert len(list(src)) == 5
    assert time.monotonic() - t0 >= 4 / 50 * 0.8
    assert src.stats.delivered + src.stats.dropped == src.stats.captured


# -- cameras ------------------------------------------------------------------------------------------

def _fake_dev(root: Path, *names: str) -> Path:
    (root / "dev").mkdir(parents=True, exist_ok=True)
    for n in names:
        (root / "dev" / n).touch()
    return root


def test_list_video_devices(tmp_path):
    assert list_video_devices(tmp_path) == []
    _fake_dev(tmp_path, "video10", "video2", "video0", "vhci", "video-meta")
    assert list_video_devices(tmp_path) == ["/dev/video0", "/dev/video2", "/dev/video10"]


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="V4L2 device nodes are Linux's")
@pytest.mark.parametrize("spec", ["/dev/video7", "camera:7", "7"])
def test_missing_camera_lists_the_devices(tmp_path, spec):
    with pytest.raises(InputError) as e:
        open_source(spec, SourceOptions(root=tmp_path))
    assert str(e.value) == "no camera at /dev/video7 (video devices here: none found)"
    _fake_dev(tmp_path, "video0", "video2")
    with pytest.raises(InputError) as e:
        open_source(spec, SourceOptions(root=tmp_path))
    assert str(e.value) == "no camera at /dev/video7 (video devices here: /dev/video0, /dev/video2)"


class FakeWorld:
    """A camera / stream that fails after `fail_after` frames; the next `dead_opens` opens fail, then it
    is back.  Frames are BGR with the running frame number in pixel [0, 0, 0]."""

    def __init__(self, fail_after: int | None = None, dead_opens: int = 1, period_s: float = 0.002):
        self.fail_after, self.dead_opens, self.period_s = fail_after, dead_opens, period_s
        self.opens = self.served = 0
        self.targets: list = []
        self.released = 0

    def __call__(self, target):
        self.opens += 1
        self.targets.append(target)
        alive = self.opens == 1 or self.opens > 1 + self.dead_opens
        return FakeCapture(self, alive)


class FakeCapture:
    def __init__(self, world: FakeWorld, alive: bool):
        self.world, self.alive = world, alive

    def isOpened(self) -> bool:
        return self.alive

    def get(self, prop_id: int) -> float:
        return 0.0

    def read(self):
        w = self.world
        time.sleep(w.period_s)
        if not self.alive or (w.fail_after is not None and w.served == w.fail_after and w.opens == 1):
            return False, None
        img = np.zeros((8, 8, 3), np.uint8)
        img[0, 0, 0] = w.served % 256
        w.served += 1
        return True, img

    def release(self) -> None:
        self.world.released += 1


def test_camera_with_fake_capture(tmp_path):
    _fake_dev(tmp_path, "video0")
    world = FakeWorld()
    with open_source("camera:0", SourceOptions(root=tmp_path, capture_factory=world, max_frames=5)) as src:
        assert src.live and src.fps is None
        frames = list(src)
    assert len(frames) == 5 and world.targets == [0] and world.released == 1
    assert [f.index for f in frames] == sorted({f.index for f in frames})
    assert src.stats.delivered + src.stats.dropped == src.stats.captured


def test_stream_reconnects_after_dropping():
    world = FakeWorld(fail_after=5, dead_opens=2)
    events = []
    opts = SourceOptions(capture_factory=world, backoff_s=(0.01, 0.04), max_frames=15,
                         on_event=lambda k, d: events.append((k, d)))
    with open_source("rtsp://user:secret@cam.local/live", opts) as src:
        assert src.name == "rtsp://user:***@cam.local/live"
        frames = list(src)
    st = src.stats
    assert len(frames) == 15 and frames[-1].index >= 14    # frames kept coming after the outage
    assert st.reconnects == 1 and len(st.gaps) == 1
    start, end = st.gaps[0]
    assert start < end and any(f.t_ns > end for f in frames)
    assert world.opens == 4 and all(t == "rtsp://user:secret@cam.local/live" for t in world.targets)
    kinds = [k for k, _ in events]
    assert kinds == [EVENT_DISCONNECTED, "reconnect_failed", "reconnect_failed", EVENT_RECONNECTED]
    assert events[-1][1]["gap_ns"] == end - start and events[-1][1]["attempts"] == 3
    assert all("secret" not in d["source"] for _, d in events)
    assert st.delivered + st.dropped == st.captured


def test_stream_without_reconnect_raises():
    world = FakeWorld(fail_after=3)
    src = open_source("http://cam.local/mjpg", SourceOptions(capture_factory=world, reconnect=False))
    with src, pytest.raises(InputError, match="stopped delivering frames after 3"):
        for _ in src:
            pass


def test_close_from_another_thread_during_an_outage():
    world = FakeWorld(fail_after=2, dead_opens=10**6)   # never comes back
    src = open_source("rtsp://cam/x", SourceOptions(capture_factory=world, backoff_s=(0.01, 0.02)))
    got = []
    t = threading.Thread(target=lambda: got.extend(src))
    t.start()
    time.sleep(0.15)
    src.close()
    t.join(5)
    assert not t.is_alive()
    st = src.stats
    assert st.reconnects == 0 and len(st.gaps) == 1   # the open outage is recorded, ending at close
    assert st.delivered + st.dropped == st.captured == 2


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="V4L2 device nodes are Linux's")
def test_camera_that_never_delivers_fails_fast(tmp_path):
    _fake_dev(tmp_path, "video0", "video1")
    world = FakeWorld(fail_after=0, dead_opens=0)    # opens, every read fails
    src = open_source("/dev/video1", SourceOptions(root=tmp_path, capture_factory=world, backoff_s=(0.01, 0.01)))
    assert world.targets == [1]
    with src, pytest.raises(InputError, match=r"camera /dev/video1 opened but delivered no frame .*"
                                                r"/dev/video0, /dev/video1"):
        list(src)
    assert world.opens == 1 and src.stats.reconnects == 0


def test_stream_that_cannot_open():
    class Dead:
        def isOpened(self):
            return False

        def release(self):
            pass

    with pytest.raises(InputError, match="cannot open stream rtsp://u:\\*\\*\\*@h/x"):
        open_source("rtsp://u:pw@h/x", SourceOptions(capture_factory=lambda target: Dead()))


# -- several sources ----------------------------------------------------------------------------------

def test_multisource_over_two_videos(tmp_path):
    a = write_video(tmp_path / "a.avi", 4)
    b = write_video(tmp_path / "b.avi", 6)
    with open_sources([str(a), str(b)]) as multi:
        assert isinstance(multi, MultiSource)
        frames = list(multi)
    assert [Path(f.source).name for f in frames[:4]] == ["a.avi", "b.avi", "a.avi", "b.avi"]
    by = {n: [f.index for f in frames if f.source == n] for n in (str(a), str(b))}
    assert by == {str(a): [0, 1, 2, 3], str(b): [0, 1, 2, 3, 4, 5]}
    per = multi.per_source
    assert (per[str(a)].delivered, per[str(b)].delivered) == (4, 6)
    st = multi.stats
    assert (st.captured, st.delivered, st.dropped) == (10, 10, 0)


def test_multisource_live_and_file(tmp_path):
    clip = write_video(tmp_path / "a.avi", 3)
    stream = open_source("rtsp://cam/1", SourceOptions(capture_factory=FakeWorld()))
    with MultiSource([open_source(clip), stream], SourceOptions(max_frames=10)) as multi:
        assert multi.live
        frames = list(multi)
    assert len(frames) == 10
    assert {f.source for f in frames} == {str(clip), "rtsp://cam/1"}
    for f in frames:
        _check_frame(f)
    per = multi.per_source
    assert per[str(clip)].delivered == 3
    for s in per.values():
        assert s.delivered + s.dropped == s.captured


def test_multisource_rejects_duplicates(tmp_path):
    clip = write_video(tmp_path / "a.avi", 2)
    with pytest.raises(InputError, match="more than once"):
        open_sources([str(clip), str(clip)])


# -- specs --------------------------------------------------------------------------------------------

def test_unknown_spec_lists_the_forms(tmp_path):
    with pytest.raises(InputError) as e:
        open_source("ftp://example.com/x")
    msg = str(e.value)
    for form in ("camera", "rtsp://", ".mp4", "glob", "synthetic"):
        assert form in msg
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a video or image file"):
        open_source(str(tmp_path / "notes.txt"))
    with pytest.raises(InputError, match="synthetic:HxW"):
        open_source("synthetic:big")


def test_parse_sources_file(tmp_path):
    f = tmp_path / "cams.txt"
    f.write_text("# front and back\ncamera:0\n\n  rtsp://cam/stream#1   # the '#1' stays\n"
                 "frames/*.png\n")
    assert parse_sources_file(f) == ["camera:0", "rtsp://cam/stream#1", "frames/*.png"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="no sources"):
        parse_sources_file(tmp_path / "empty.txt")
    with pytest.raises(InputError, match="cannot read"):
        parse_sources_file(tmp_path / "missing.txt")


def test_options_are_validated():
    with pytest.raises(InputError, match="backoff_s"):
        SourceOptions(backoff_s=(2.0, 1.0))
    with pytest.raises(InputError, match="fps"):
        SourceOptions(fps=0)


def test_import_does_not_load_cv2():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import edgert.sources, sys; print('cv2' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
