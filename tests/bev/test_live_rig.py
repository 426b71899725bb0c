"""edgert/bev/live_rig.py: a live rig sampled at a fixed rate from fake cameras (capture_factory, as in
tests/test_frame_sources.py) and from short videos written here with OpenCV."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgert.bev.live_rig import (EVENT_CAMERA_ENDED, EVENT_CAMERA_FAILED, EVENT_NO_ODOMETRY, EVENT_STALE_CAMERA,
                                 LiveRig, open_live_rig)
from edgert.bev.rig import Rig, nuscenes_like_rig
from edgert.bev.schema import Pose
from edgert.errors import InputError
from edgert.sources import SourceOptions, open_source

cv2 = pytest.importorskip("cv2", reason="cameras and videos need opencv-python-headless")

pytestmark = pytest.mark.timeout(60)

RIG = nuscenes_like_rig(160, 96)


def _rig(n: int) -> Rig:
    return Rig(RIG.cameras[:n], RIG.grid)


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith(("edgert-source:", "edgert-live-rig:")) and t.is_alive()]


@pytest.fixture(autouse=True)
def no_leftover_threads():
    yield
    assert _threads() == [], "a capture or camera thread outlived close()"


def _red(c: int) -> int:
    """Camera c's frames are uniform with this red value (so rig order is checkable after resizing)."""
    return 20 + 35 * c


class FakeCams:
    """capture_factory for streams rtsp://cam/C: camera C delivers uniform BGR frames of `sizes[C]`
    (W, H) every `period_s`; after `stop_after[C]` frames it fails and never opens again.
    `first_delay_s[C]` delays its first frame."""

    def __init__(self, sizes, period_s=0.005, stop_after=None, first_delay_s=None):
        self.sizes, self.period_s = sizes, period_s
        self.stop_after = stop_after or {}
        self.first_delay_s = first_delay_s or {}
        self.served = [0] * len(sizes)
        self.opens = [0] * len(sizes)
        self.released = [0] * len(sizes)

    def __call__(self, target):
        if not str(target).startswith("rtsp://cam/"):
            return cv2.VideoCapture(target)    # the factory opens every capture, video files too
        c = int(str(target).rsplit("/", 1)[1])
        self.opens[c] += 1
        return _FakeCap(self, c, alive=self.opens[c] == 1)


class _FakeCap:
    def __init__(self, cams: FakeCams, c: int, alive: bool):
        self.cams, self.c, self.alive = cams, c, alive

    def isOpened(self) -> bool:
        return self.alive

    def get(self, prop_id: int) -> float:
        return 0.0

    def read(self):
        cams, c = self.cams, self.c
        time.sleep(cams.first_delay_s.get(c, 0.0) if cams.served[c] == 0 else cams.period_s)
        if cams.served[c] >= cams.stop_after.get(c, 10**9):
            return False, None
        w, h = cams.sizes[c]
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 2] = _red(c)   # BGR
        cams.served[c] += 1
        return True, img

    def release(self) -> None:
        self.cams.released[self.c] += 1


def _specs(n: int) -> list[str]:
    return [f"rtsp://cam/{c}" for c in range(n)]


def _collect(live: LiveRig, seconds: float) -> list:
    out, end = [], time.monotonic() + seconds
    for s in live.samples():
        out.append(s)
        if time.monotonic() >= end:
            break
    return out


def test_one_frame_per_camera_at_rig_size():
    sizes = [(160, 96), (320, 192), (64, 48), (160, 96), (640, 480), (100, 60)]   # most need a resize
    cams = FakeCams(sizes)
    with open_live_rig(RIG, _specs(6), SourceOptions(capture_factory=cams), rate_hz=40) as live:
        samples = _collect(live, 0.3)
    assert len(samples) >= 5
    assert [s.index for s in samples] == list(range(len(samples)))
    for s in samples:
        assert s.pose == Pose(0.0, 0.0, 0.0) and s.events == [EVENT_NO_ODOMETRY]
        assert len(s.frames) == len(s.frame_t_us) == 6
        for c, f in enumerate(s.frames):
            assert f.shape == (96, 160, 3) and f.dtype == np.uint8
            assert (f[..., 0] == _red(c)).all() and (f[..., 1:] == 0).all()   # RGB, rig order
    # times: µs since the rig started, ticks increasing, each camera's frames never going back,
    # and each frame recent at its tick
    t = [s.t_us for s in samples]
    assert t[0] >= 0 and all(a < b for a, b in zip(t, t[1:]))
    for c in range(6):
        ft = [s.frame_t_us[c] for s in samples]
        assert ft[0] >= 0 and all(a <= b for a, b in zip(ft, ft[1:]))
    for s in samples:
        for ft in s.frame_t_us:
            assert s.t_us - 250_000 <= ft <= s.t_us + 25_000   # within max_age before, < one period after
    assert cams.released == [1] * 6


def test_rate_is_honoured_and_a_slow_consumer_gets_no_burst():
    cams = FakeCams([(160, 96)] * 2)
    rig = _rig(2)
    with open_live_rig(rig, _specs(2), SourceOptions(capture_factory=cams), rate_hz=50) as live:
        t0 = time.monotonic()
        fast = _collect(live, 0.5)
        elapsed = time.monotonic() - t0
        period_us = 20_000
        assert len(fast) <= elapsed * 50 + 2          # a fixed rate never runs ahead
        assert len(fast) >= elapsed * 50 * 0.5        # ... and, loosely, keeps up
        steps = [b.t_us - a.t_us for a, b in zip(fast, fast[1:])]
        assert all(abs(d / period_us - round(d / period_us)) < 0.01 and d > 0 for d in steps)   # on the grid

        slow = []
        for s in live.samples():
            slow.append(s)
            if len(slow) == 6:
                break
            time.sleep(0.07)   # 3.5 periods per sample
        assert live.skipped_ticks >= 10
        steps = [b.t_us - a.t_us for a, b in zip(slow, slow[1:])]
        assert all(d >= 3 * period_us for d in steps)   # missed ticks were skipped, not delivered in a burst
        assert [s.index for s in slow] == list(range(len(fast), len(fast) + 6))   # a second samples() goes on


def test_stalled_camera_becomes_stale_while_the_others_continue():
    cams = FakeCams([(160, 96)] * 3, stop_after={1: 10})
    rig = _rig(3)
    opts = SourceOptions(capture_factory=cams, backoff_s=(0.01, 0.02))   # reopening fails for good
    with open_live_rig(rig, _specs(3), opts, rate_hz=50, max_age_ms=60) as live:
        samples = _collect(live, 0.5)
    name = rig.names[1]
    stale = [s for s in samples if s.frames[1] is None]
    assert samples[0].frames[1] is not None and stale and stale[-1] is samples[-1]
    first = samples.index(stale[0])
    assert all(s.frames[1] is None for s in samples[first:])    # it never came back
    for s in samples:
        assert s.frames[0] is not None and s.frames[2] is not None
        assert EVENT_NO_ODOMETRY in s.events
        assert (f"{EVENT_STALE_CAMERA} {name}" in s.events) == (s.frames[1] is None)
    # its last frame's time is still reported, and is more than max_age old
    last = samples[-1]
    assert last.t_us - last.frame_t_us[1] > 60_000
    assert cams.opens[1] > 1    # the source kept trying to reconnect


def test_camera_that_has_not_delivered_yet_is_stale_then_joins():
    cams = FakeCams([(160, 96)] * 2, first_delay_s={0: 0.25})
    rig = _rig(2)
    with open_live_rig(rig, _specs(2), SourceOptions(capture_factory=cams), rate_hz=50, max_age_ms=40) as live:
        samples = _collect(live, 0.5)
    assert samples[0].frames[0] is None and f"{EVENT_STALE_CAMERA} {rig.names[0]}" in samples[0].events
    assert samples[0].frame_t_us[0] == samples[0].t_us     # no frame: the tick's time
    assert samples[-1].frames[0] is not None and samples[-1].events == [EVENT_NO_ODOMETRY]
    assert all(s.frames[1] is not None for s in samples)


def test_ended_and_failed_cameras_are_reported_and_the_rig_ends_with_the_last(tmp_path):
    # streams without reconnect that drop are permanent failures: camera 0 after 5 frames (~25 ms),
    # camera 2 after 120 (~0.6 s); camera 1 is a 0.3 s video file (64x48, resized), played at its own rate
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    assert w.isOpened()
    for _ in range(8):
        w.write(np.full((48, 64, 3), 90, np.uint8))
    w.release()
    cams = FakeCams([(160, 96), None, (160, 96)], stop_after={0: 5, 2: 120})
    rig = _rig(3)
    t0 = time.monotonic()
    with open_live_rig(rig, ["rtsp://cam/0", str(path), "rtsp://cam/2"],
                       SourceOptions(capture_factory=cams, reconnect=False), rate_hz=50) as live:
        samples = list(live.samples())    # ends by itself
    elapsed = time.monotonic() - t0
    assert 0.4 < elapsed < 5
    a, b, c = rig.names
    for s in samples:
        assert EVENT_NO_ODOMETRY in s.events
        failed = [e for e in s.events if e.startswith(f"{EVENT_CAMERA_FAILED} {a}: ")]
        assert bool(failed) == (s.frames[0] is None)
        assert all("stopped delivering frames after 5" in e for e in failed)
        if s.frames[1] is not None:
            assert s.frames[1].shape == (96, 160, 3) and abs(int(s.frames[1].mean()) - 90) < 10
        else:
            assert f"{EVENT_CAMERA_ENDED} {b}" in s.events
    video = [s.frames[1] is not None for s in samples]
    assert video[0] and not video[-1] and video == sorted(video, reverse=True)   # played, ended for good
    assert samples[-1].frames[0] is None and samples[-1].frames[2] is not None   # the last camera ended last
    assert 0.2 < (samples[video.index(False)].t_us - samples[0].t_us) / 1e6 < 0.6   # in real time


def test_mismatched_and_bad_sources():
    cams = FakeCams([(160, 96)] * 2)
    srcs = [open_source(s, SourceOptions(capture_factory=cams)) for s in _specs(2)]
    try:
        with pytest.raises(InputError, match=r"the rig has 6 cameras .* but 2 frame sources"):
            LiveRig(RIG, srcs)
        with pytest.raises(InputError, match="rate_hz"):
            LiveRig(_rig(2), srcs, rate_hz=0)
        with pytest.raises(InputError, match="same frame source"):
            LiveRig(_rig(2), [srcs[0], srcs[0]])
    finally:
        for s in srcs:
            s.close()
    cams = FakeCams([(160, 96)] * 2)
    live = open_source("rtsp://cam/1", SourceOptions(capture_factory=cams))
    with open_source("synthetic:32x32") as ordered, live:
        with pytest.raises(InputError, match="is not live.*realtime=True"):
            LiveRig(_rig(2), [ordered, live])
    with pytest.raises(InputError, match=r"has 6 cameras .* but 1 source specs"):
        open_live_rig(RIG, ["rtsp://cam/0"])
    with pytest.raises(InputError, match="more than one camera: rtsp://cam/0"):
        open_live_rig(_rig(2), ["rtsp://cam/0", "rtsp://cam/0"], SourceOptions(capture_factory=cams))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 device nodes are Linux's")
def test_missing_camera_or_file_is_a_one_line_input_error(tmp_path):
    cams = FakeCams([(160, 96)])
    opts = SourceOptions(capture_factory=cams, root=tmp_path)   # no /dev/video* under tmp_path
    with pytest.raises(InputError) as e:
        open_live_rig(_rig(2), ["rtsp://cam/0", "camera:7"], opts)
    assert str(e.value) == "no camera at /dev/video7 (video devices here: none found)"
    assert cams.released == [1]    # the camera opened before it was closed again
    with pytest.raises(InputError, match="no such video file") as e:
        open_live_rig(_rig(1), [str(tmp_path / "nope.mp4")])
    assert "\n" not in str(e.value)


def test_close_is_idempotent_and_stops_everything():
    cams = FakeCams([(160, 96)] * 3)
    live = open_live_rig(_rig(3), _specs(3), SourceOptions(capture_factory=cams), rate_hz=100)
    it = live.samples()
    next(it)
    assert len(_threads()) == 6          # a camera thread and a capture thread per camera
    live.close()
    live.close()
    assert _threads() == []
    assert list(it) == [] and list(live.samples()) == []
    assert cams.released == [1, 1, 1]


def test_close_from_another_thread_ends_a_waiting_iterator():
    cams = FakeCams([(160, 96)])
    live = open_live_rig(_rig(1), _specs(1), SourceOptions(capture_factory=cams), rate_hz=2)   # 0.5 s ticks
    got = []
    t = threading.Thread(target=lambda: got.extend(live.samples()))
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    live.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 0.4 and len(got) == 1


def test_import_is_light():
    code = "import edgert.bev.live_rig, sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert not (set(out.split()) & {"cv2", "PIL", "onnx", "onnxruntime", "jax", "torch", "scheduler"})
