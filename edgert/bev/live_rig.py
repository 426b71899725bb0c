"""A live camera rig: one frame source per rig camera (cameras, streams, or files played at their own
rate), sampled together at a fixed rate into `RigSample`s for the BEV scheduler.

Each source is iterated in its own daemon thread, which keeps only that camera's newest `Frame`
(latest wins, as the sources' own capture threads do: edgert.sources), so the rig never builds a
backlog however slow its consumer is.  `LiveRig.samples()` wakes on a fixed-rate schedule
(`rate_hz`); a consumer that comes back late gets the latest due tick, and the ticks it missed are
skipped (counted in `skipped_ticks`), not delivered in a burst.  At each tick every camera's newest
frame is taken:

- a frame older than `max_age_ms` (the camera stalled, is reconnecting, or has not delivered yet)
  is delivered as None, with an event "stale_camera CAMERA";
- a source that ended (a video file's end, `max_frames`) or failed for good (an `EdgertError`, e.g. a
  stream with `reconnect=False` that dropped) gives None from then on, with "camera_ended CAMERA" or
  "camera_failed CAMERA: why"; once every camera has ended the samples end.  Any other exception in
  a camera's thread is a bug: `samples()` re-raises it;
- a frame of another size than the rig calibrates the camera at is resized to it (OpenCV, INTER_AREA).
  The rig's intrinsics stay valid only if the camera's aspect ratio and field of view match its
  calibration; resizing does not fix a wrong calibration.

Times are microseconds since the rig started (its construction, before any capture), on the clock the
sources stamp frames with (time.monotonic_ns): `t_us` is the tick, `frame_t_us[c]` the capture time of
camera c's frame (of its last frame when that one is stale; the tick when it has none).  A late tick
can see frames captured after it, so `frame_t_us[c] > t_us` happens (by less than the sampling delay),
as trigger offsets make it happen in recordings.

A live rig has no odometry: every sample has `pose=Pose(0, 0, 0)` and the event "no_odometry", on
which the consumer resets temporal fusion instead of warping the previous BEV by a made-up (zero)
ego motion.  The first `samples()` call waits until every camera has delivered a frame (at most
`max_age_ms`) before the first tick, so a rig that starts well starts with full samples.

numpy and the standard library at import; OpenCV only when a frame needs resizing (the sources that
read cameras and videos import it themselves).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from typing import Callable, Iterator, Sequence

import numpy as np

from edgert.bev.rig import Rig
from edgert.bev.schema import Pose, RigSample
from edgert.errors import EdgertError, InputError
from edgert.sources import Frame, FrameSource, SourceOptions, open_source

EVENT_NO_ODOMETRY = "no_odometry"        # every sample: pose is Pose(0, 0, 0), not a measured pose
EVENT_STALE_CAMERA = "stale_camera"      # "stale_camera CAM": no frame, or the newest is older than max_age_ms
EVENT_CAMERA_ENDED = "camera_ended"      # "camera_ended CAM": its source ended (file end, max_frames)
EVENT_CAMERA_FAILED = "camera_failed"    # "camera_failed CAM: why": its source raised an EdgertError
EVENT_KINDS = (EVENT_NO_ODOMETRY, EVENT_STALE_CAMERA, EVENT_CAMERA_ENDED, EVENT_CAMERA_FAILED)

_JOIN_TIMEOUT_S = 2.0   # close() waits this long per camera thread (a source's close() joins its own capture)


def _check_rates(rate_hz: float, max_age_ms: float) -> None:
    if not (math.isfinite(rate_hz) and 0 < rate_hz <= 1000):
        raise InputError(f"rate_hz must be in (0, 1000], got {rate_hz}")
    if not (math.isfinite(max_age_ms) and max_age_ms > 0):
        raise InputError(f"max_age_ms must be positive, got {max_age_ms}")


def _count_error(rig: Rig, n: int, what: str) -> InputError:
    return InputError(f"the rig has {len(rig.cameras)} cameras ({', '.join(rig.names)}) but {n} {what} "
                      f"were given; give one per camera, in rig order")


def _resize(image: np.ndarray, width: int, height: int, camera: str) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise InputError(f"camera {camera} delivers {image.shape[1]}x{image.shape[0]} frames, the rig "
                         f"calibrates it at {width}x{height}; resizing needs OpenCV: "
                         f"pip install 'edgert[camera]'") from None
    # INTER_AREA: averages the source pixels under each target pixel, so downscaling does not alias
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


class LiveRig:
    """`rig`'s cameras fed by `sources` (one per camera, in rig order; live ones: cameras, streams,
    or files / synthetic opened with `SourceOptions(realtime=True)`).  Capture starts here; the rig
    owns the sources from now on and `close()` closes them.  `clock` must be the clock the sources
    stamp frames with (`Frame.t_ns`: time.monotonic_ns)."""

    def __init__(self, rig: Rig, sources: Sequence[FrameSource], rate_hz: float = 12.0,
                 max_age_ms: float = 250.0, clock: Callable[[], int] = time.monotonic_ns):
        sources = list(sources)
        if len(sources) != len(rig.cameras):
            raise _count_error(rig, len(sources), "frame sources")
        _check_rates(rate_hz, max_age_ms)
        for name, src in zip(rig.names, sources):
            if not isinstance(src, FrameSource):
                raise InputError(f"camera {name}: {src!r} is not a frame source")
            if not src.live:
                raise InputError(f"camera {name}: {src.name} is not live; open files and synthetic sources "
                                 f"with SourceOptions(realtime=True) so they play at their own rate")
        if len({id(s) for s in sources}) != len(sources):
            raise InputError("the same frame source was given for two cameras")
        self.rig, self.sources = rig, sources
        self.rate_hz, self.max_age_ms = float(rate_hz), float(max_age_ms)
        self.skipped_ticks = 0          # ticks a late consumer missed
        self._clock = clock
        n = len(sources)
        self._cond = threading.Condition()   # guards the three lists below
        self._latest: list[Frame | None] = [None] * n
        self._ended = [False] * n
        self._errors: list[BaseException | None] = [None] * n
        self._fitted: list[tuple[Frame, np.ndarray] | None] = [None] * n   # resize cache (samples() only)
        self._stop = threading.Event()
        self._closed = False
        self._started = False
        self._index = 0
        self._t0_ns = clock()   # before any capture, so every frame_t_us >= 0
        self._threads = [threading.Thread(target=self._pump, args=(c,), name=f"edgert-live-rig:{name}",
                                          daemon=True)   # daemon: a driver stuck in a read cannot block exit
                         for c, name in enumerate(rig.names)]
        for t in self._threads:
            t.start()

    # -- capture: one thread per camera ---------------------------------------------------------

    def _pump(self, c: int) -> None:
        error: BaseException | None = None
        try:
            for frame in self.sources[c]:
                with self._cond:
                    first = self._latest[c] is None
                    self._latest[c] = frame
                    if first:
                        self._cond.notify_all()
                if self._stop.is_set():
                    break
        except BaseException as e:   # kept for samples(): an event (EdgertError) or re-raised (a bug)
            error = e
        with self._cond:
            self._ended[c] = True
            self._errors[c] = error
            self._cond.notify_all()

    # -- sampling -------------------------------------------------------------------------------

    def samples(self) -> Iterator[RigSample]:
        """RigSamples at `rate_hz` until every camera has ended or `close()` is called."""
        if self._closed:
            return
        if not self._started:
            self._started = True
            self._await_first_frames()
        period_ns = 1e9 / self.rate_hz
        anchor = self._clock()
        k = 0
        while True:
            tick = anchor + round(k * period_ns)
            now = self._clock()
            if now < tick:
                if self._stop.wait((tick - now) / 1e9):
                    return
                now = self._clock()
            else:
                due = int((now - anchor) // period_ns)   # the latest tick not after now
                if due > k:
                    self.skipped_ticks += due - k
                    k = due
                    tick = anchor + round(k * period_ns)
            if self._closed:
                return
            sample = self._sample(tick, now)
            if sample is None:
                return
            k += 1
            yield sample

    def _await_first_frames(self) -> None:
        deadline = time.monotonic() + self.max_age_ms / 1000
        with self._cond:
            while not all(f is not None or e for f, e in zip(self._latest, self._ended)) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def _sample(self, tick_ns: int, now_ns: int) -> RigSample | None:
        """The sample of one tick; None once every camera has ended."""
        with self._cond:
            latest, ended, errors = list(self._latest), list(self._ended), list(self._errors)
        for e in errors:
            if e is not None and not isinstance(e, EdgertError):
                self.close()
                raise e
        if all(ended):
            return None
        max_age_ns = self.max_age_ms * 1e6
        t_us = (tick_ns - self._t0_ns) // 1000
        frames: list[np.ndarray | None] = []
        frame_t_us: list[int] = []
        events = [EVENT_NO_ODOMETRY]
        for c, cam in enumerate(self.rig.cameras):
            frame = latest[c]
            frame_t_us.append(t_us if frame is None else (frame.t_ns - self._t0_ns) // 1000)
            if ended[c]:
                frames.append(None)
                err = errors[c]
                events.append(f"{EVENT_CAMERA_ENDED} {cam.name}" if err is None
                              else f"{EVENT_CAMERA_FAILED} {cam.name}: {err}")
            elif frame is None or now_ns - frame.t_ns > max_age_ns:
                frames.append(None)
                events.append(f"{EVENT_STALE_CAMERA} {cam.name}")
            else:
                frames.append(self._fit(c, frame))
        sample = RigSample(self._index, t_us, frames, frame_t_us, Pose(0.0, 0.0, 0.0), events=events)
        self._index += 1
        return sample

    def _fit(self, c: int, frame: Frame) -> np.ndarray:
        """The frame at the camera's calibrated size (resized once per frame, however often it is used)."""
        cam = self.rig.cameras[c]
        image = frame.image
        if image.shape[:2] == (cam.height, cam.width):
            return image
        cached = self._fitted[c]
        if cached is not None and cached[0] is frame:
            return cached[1]
        fitted = _resize(image, cam.width, cam.height, cam.name)
        self._fitted[c] = (frame, fitted)
        return fitted

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop sampling and capture and close every source (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._stop.set()
        for src in self.sources:
            src.close()   # ends the source's iteration, so its camera thread finishes
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(_JOIN_TIMEOUT_S)

    def __enter__(self) -> "LiveRig":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LiveRig {len(self.sources)} cameras at {self.rate_hz:g} Hz>"


def open_live_rig(rig: Rig, specs: Sequence[str | int], options: SourceOptions | None = None,
                  rate_hz: float = 12.0, max_age_ms: float = 250.0) -> LiveRig:
    """A LiveRig over one source spec per rig camera (edgert.sources forms, in rig order).  Every source
    is opened with `realtime=True`, so video files, image folders and the synthetic scene play at their
    own rate as a camera would.  A spec that cannot be opened (no such camera, file or stream) raises
    the InputError open_source raises, after closing the ones already opened."""
    specs = list(specs)
    if len(specs) != len(rig.cameras):
        raise _count_error(rig, len(specs), "source specs")
    _check_rates(rate_hz, max_age_ms)
    keys = [str(s).strip() for s in specs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise InputError(f"frame source given for more than one camera: {', '.join(dup)}")
    options = replace(options or SourceOptions(), realtime=True)
    opened: list[FrameSource] = []
    try:
        for spec in specs:
            opened.append(open_source(spec, options))
        return LiveRig(rig, opened, rate_hz, max_age_ms)
    except BaseException:
        for src in opened:
            src.close()
        raise
