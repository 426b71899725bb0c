"""Frame sources for `edgert run` and the multi-camera scheduler, chosen by a spec string:

    camera[:N] | N | /dev/videoN | /dev/v4l/...   a camera (OpenCV; V4L2 on Linux)         live
    rtsp://... | rtsps://... | http(s)://...     a network stream (OpenCV's FFmpeg)        live
    FILE.mp4 .avi .mkv .mov .webm .m4v           a video file, frames in order
    DIR | GLOB (e.g. 'frames/*.png')             the image files, sorted by path, in order
    synthetic[:HxW]                              moving shapes and text, deterministic per frame index
    SEQ_DIR[#CAMERA] | rig:synthetic[:SEED]      a multi-camera rig: a recording (edgert.bev.recording)
                                                 or the synthetic driving world; one camera's frames,
                                                 or whole RigSamples through RigSource.samples()

Iterating a source yields `Frame`s: (H, W, 3) uint8 RGB, C-contiguous, stamped with
`time.monotonic_ns()` when read.  Live sources (cameras, streams, and files or synthetic with
`realtime=True`, which are then played at their frame rate) run a capture thread that keeps only the
newest frame: a slow consumer always gets a fresh frame, never a backlog, and `stats.dropped` counts
what it never saw.  Other sources are read in order in the consumer's thread and drop nothing.
Either way, once closed, `delivered + dropped == captured`.

A live source that stops delivering (the read fails, the stream drops) is reopened with exponential
backoff (`SourceOptions.backoff_s`); the outage is recorded in `stats.gaps` / `stats.reconnects` and
reported through `on_event(kind, detail)` (kinds in `EVENT_KINDS`).  `on_event` is called from the
capture thread for live sources; an exception it raises ends the source and is re-raised to the
consumer.  A video file ending is a normal end (or a restart with `loop=True`).

Each kind of source is one class registered under its `kind`; `open_source` asks each in turn whether
the spec is one of its forms.  OpenCV is imported only when a source needs it; image files are decoded
by `edgert.preprocess.load_image` (Pillow), the one image decoder of edgert (docs/design.md
"Preprocessing"), so `edgert run` on a folder sees the pixels calibration and the eval harness saw.
"""
from __future__ import annotations

import glob
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Protocol, Sequence

import numpy as np

from edgert.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
DEFAULT_SYNTHETIC_HW = (480, 640)   # VGA, the usual USB-camera default

EVENT_DISCONNECTED = "disconnected"          # {source, t_ns, captured}: a live source stopped delivering
EVENT_RECONNECT_FAILED = "reconnect_failed"  # {source, attempt, retry_in_s}: a reopen attempt failed
EVENT_RECONNECTED = "reconnected"            # {source, gap_ns, attempts, reconnects}: frames flow again
EVENT_SKIPPED = "skipped"                    # {source, path, error, failed}: an image file was unreadable
EVENT_KINDS = (EVENT_DISCONNECTED, EVENT_RECONNECT_FAILED, EVENT_RECONNECTED, EVENT_SKIPPED)

# cv2.CAP_PROP_FPS (OpenCV videoio.hpp, enum VideoCaptureProperties); a literal so that injected fake
# captures need no cv2.
_CAP_PROP_FPS = 5
_MAX_PLAUSIBLE_FPS = 1000.0   # FFmpeg streams often report 0, or their 90 kHz RTP clock, as the rate
_STREAM_OPEN_TIMEOUT_MS = 10_000   # OpenCV's FFmpeg backend waits 30 s by default (cap_ffmpeg_impl.hpp)
_STREAM_READ_TIMEOUT_MS = 5_000    # ... which would also be how long a dead stream goes unnoticed
_JOIN_TIMEOUT_S = 2.0   # close() waits this long for a capture thread stuck in a blocking read
_WAIT_S = 0.1           # consumers re-check close() at least this often while waiting for a frame

EventCallback = Callable[[str, dict], None]


class Capture(Protocol):
    """What a source needs of a capture: the subset of cv2.VideoCapture it calls."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...   # BGR (or gray / BGRA) uint8
    def get(self, prop_id: int) -> float: ...
    def release(self) -> None: ...


CaptureFactory = Callable[[int | str], Capture]   # camera index, device path, URL or file path -> Capture


@dataclass(eq=False)
class Frame:
    image: np.ndarray          # (H, W, 3) uint8 RGB, C-contiguous
    t_ns: int                  # time.monotonic_ns() when the frame was read / grabbed
    index: int                 # the source's frame number: 0-based, counts every frame captured
    source: str                # the source's name (its spec string; stream passwords masked)
    path: str | None = None    # the file it came from (image folders / globs)


@dataclass
class SourceStats:
    captured: int = 0      # frames read from the source
    delivered: int = 0     # frames handed to the consumer
    dropped: int = 0       # captured but never delivered (a newer frame replaced it, or close())
    failed: int = 0        # unreadable image files skipped
    reconnects: int = 0    # outages recovered from
    gaps: list[tuple[int, int]] = field(default_factory=list)   # (t_ns start, t_ns end) per outage


@dataclass(frozen=True)
class SourceOptions:
    realtime: bool = False      # files / synthetic: play at the native (else `fps`) rate, latest wins
    loop: bool = False          # files / folders: start over at the end
    max_frames: int = 0         # stop after delivering this many frames; 0 = all
    reconnect: bool = True      # live sources: reopen after a failure (False: the failure raises)
    backoff_s: tuple[float, float] = (0.5, 8.0)   # first and largest wait between reopen attempts
    size: tuple[int, int] | None = None   # synthetic scene size (H, W); None = DEFAULT_SYNTHETIC_HW
    fps: float = 30.0           # synthetic rate, and the pace of realtime files that record none
    on_event: EventCallback | None = None   # see EVENT_KINDS; also settable as `source.on_event`
    capture_factory: CaptureFactory | None = None   # instead of cv2.VideoCapture (tests, custom grabbers)
    root: Path = Path("/")      # where /dev/video* is looked up (tests use a fake tree)

    def __post_init__(self):
        lo, hi = self.backoff_s
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise InputError(f"backoff_s must be (first, largest) with 0 < first <= largest, got {self.backoff_s}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"fps must be positive, got {self.fps}")
        if self.max_frames < 0:
            raise InputError(f"max_frames must be >= 0 (0 = all), got {self.max_frames}")
        if self.size is not None and (len(self.size) != 2 or min(int(v) for v in self.size) < 1):
            raise InputError(f"size must be (height, width), both >= 1, got {self.size}")


_KINDS: dict[str, type["FrameSource"]] = {}


class FrameSource:
    """An iterable of `Frame`s and a context manager; `close()` ends iteration and stops capture."""

    kind: ClassVar[str] = ""     # registry name; subclasses with one register themselves
    usage: ClassVar[str] = ""    # the spec forms, for error messages
    name: str
    live: bool
    fps: float | None            # native frame rate when known
    stats: SourceStats
    on_event: EventCallback | None

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("kind"):
            if _KINDS.setdefault(cls.kind, cls) is not cls:
                raise RuntimeError(f"frame source {cls.kind} registered twice")

    @classmethod
    def claims(cls, spec: str) -> bool:
        """Whether `spec` is one of this kind's forms."""
        return False

    @classmethod
    def from_spec(cls, spec: str, options: SourceOptions) -> "FrameSource":
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a spec")

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError(f"{type(self).__name__} does not implement __iter__")

    def close(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement close")

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def known_kinds() -> list[str]:
    return sorted(_KINDS)


def _forms() -> str:
    return "; ".join(cls.usage for cls in _KINDS.values())


def open_source(spec: str | int, options: SourceOptions | None = None) -> FrameSource:
    """The source for one spec string (see the module doc); anything else raises InputError listing the forms."""
    options = options or SourceOptions()
    spec = str(spec).strip()
    if not spec:
        raise InputError(f"empty frame source spec (expected one of: {_forms()})")
    for cls in _KINDS.values():
        if cls.claims(spec):
            return cls.from_spec(spec, options)
    what = "not a video or image file" if os.path.exists(spec) else "no such file or directory"
    raise InputError(f"cannot use {spec!r} as a frame source: {what} (expected one of: {_forms()})")


def open_sources(specs: Sequence[str | int], options: SourceOptions | None = None) -> FrameSource:
    """One source for one spec, else a MultiSource over all of them (`max_frames` then counts in total)."""
    options = options or SourceOptions()
    if len(specs) == 1:
        return open_source(specs[0], options)
    if not specs:
        raise InputError(f"no frame sources given (expected one of: {_forms()})")
    opened: list[FrameSource] = []
    try:
        for spec in specs:
            opened.append(open_source(spec, replace(options, max_frames=0)))
        return MultiSource(opened, options)
    except BaseException:
        for src in opened:
            src.close()
        raise


# ---------------------------------------------------------------------------------------------------
# one source: in-order reads, or a latest-wins capture thread


class _SingleSource(FrameSource):
    """The machinery every kind shares.  A kind implements `_read` (and `_rewind` to support loop)."""

    paced: ClassVar[bool] = False   # a live capture thread waits 1/fps between reads (files, synthetic)

    def __init__(self, name: str, options: SourceOptions, live: bool):
        self.name, self.options, self.live = name, options, live
        self.fps = None
        self.stats = SourceStats()
        self.on_event = options.on_event
        self._cond = threading.Condition()   # guards stats, the slot and the flags; MultiSource shares one
        self._stop = threading.Event()       # tells the capture thread (and backoff waits) to finish
        self._io_lock = threading.Lock()     # an in-order read vs close() from another thread
        self._slot: Frame | None = None      # live: the newest frame not yet delivered
        self._ended = False                  # live: the capture thread has finished
        self._error: Exception | None = None # live: what ended the capture thread, for the consumer
        self._thread: threading.Thread | None = None
        self._closed = False
        self._next_index = 0
        self._pass_frames = 0                # frames read since the start (or the last loop restart)

    # -- what a kind provides ---------------------------------------------------------------------

    def _read(self) -> tuple[np.ndarray, int, str | None] | None:
        """The next (image, t_ns, path), or None at the end (or once `_stop` is set).  The image is
        RGB, or what `_finish` turns into RGB."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _read")

    def _finish(self, image: np.ndarray) -> np.ndarray:
        """The delivered RGB image of a read one; done only for frames that are delivered."""
        return image

    def _rewind(self) -> bool:
        """Start over for `loop`; False when there is nothing to start over."""
        return False

    def _empty_error(self) -> InputError:
        return InputError(f"{self.name}: no frames could be read")

    def _release(self) -> None:
        """Free what the kind holds open (idempotent; called once reads have stopped)."""

    @property
    def _pace_fps(self) -> float:
        return self.fps or self.options.fps

    # -- shared -----------------------------------------------------------------------------------

    def _emit(self, kind: str, **detail) -> None:
        cb = self.on_event
        if cb is not None:
            cb(kind, {"source": self.name, **detail})

    def _capture(self) -> Frame | None:
        """The next frame, numbered; restarts at the end under `loop`.  Does not count it."""
        while True:
            item = self._read()
            if item is not None:
                break
            if self._stop.is_set():
                return None
            if self._pass_frames == 0 and self._next_index == 0:
                raise self._empty_error()
            if not self.options.loop or self._pass_frames == 0 or not self._rewind():
                return None
            self._pass_frames = 0
        image, t_ns, path = item
        self._pass_frames += 1
        frame = Frame(image, t_ns, self._next_index, self.name, path)
        self._next_index += 1
        return frame

    def _limit_reached(self) -> bool:
        return 0 < self.options.max_frames <= self.stats.delivered

    def __iter__(self) -> Iterator[Frame]:
        return self._iter_live() if self.live else self._iter_ordered()

    def _next_ordered(self) -> Frame | None:
        """In-order mode: read, count and return the next frame (None at the end or once closed)."""
        with self._io_lock:
            if self._closed or self._limit_reached():
                return None
            frame = self._capture()
        if frame is None:
            return None
        with self._cond:
            self.stats.captured += 1
            self.stats.delivered += 1
        frame.image = self._finish(frame.image)
        return frame

    def _iter_ordered(self) -> Iterator[Frame]:
        while (frame := self._next_ordered()) is not None:
            yield frame

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._capture_loop, name=f"edgert-source:{self.name}",
                                            daemon=True)   # daemon: a read stuck in a driver cannot block exit
            self._thread.start()

    def _capture_loop(self) -> None:
        period_s = 1.0 / self._pace_fps if self.paced else 0.0
        t0, k = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                if period_s:
                    wait_s = t0 + k * period_s - time.monotonic()
                    if wait_s < -period_s:     # reading fell behind the rate: re-anchor, don't burst
                        t0, k, wait_s = time.monotonic(), 0, 0.0
                    if wait_s > 0 and self._stop.wait(wait_s):
                        break
                    k += 1
                frame = self._capture()
                if frame is None:
                    break
                with self._cond:
                    self.stats.captured += 1
                    if self._slot is not None:
                        self.stats.dropped += 1
                    self._slot = frame
                    self._cond.notify_all()
        except Exception as e:   # handed to the consumer, which re-raises it after the last frame
            self._error = e
        finally:
            self._release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _take(self) -> Frame | None:
        """Live: the waiting frame, counted as delivered.  The caller holds `_cond`."""
        frame, self._slot = self._slot, None
        if frame is not None:
            self.stats.delivered += 1
        return frame

    def _raise_error(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err

    def _iter_live(self) -> Iterator[Frame]:
        self._start()
        while not self._limit_reached():
            with self._cond:
                while self._slot is None and not self._ended and not self._closed:
                    self._cond.wait(_WAIT_S)
                frame = None if self._closed else self._take()
            if frame is None:
                self._raise_error()
                return
            frame.image = self._finish(frame.image)   # outside the lock: capture goes on meanwhile
            yield frame
        self._stop_capture()   # max_frames: nothing more will be delivered

    def _stop_capture(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(_JOIN_TIMEOUT_S)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._stop_capture()
        t = self._thread
        if t is None or not t.is_alive():
            with self._io_lock:   # waits for an in-order read in progress in another thread
                self._release()
        # else the thread is stuck in a read; it releases its capture when the read returns
        with self._cond:
            if self._slot is not None:
                self._slot = None
                self.stats.dropped += 1
            self._close_outage(time.monotonic_ns())

    def _close_outage(self, t_ns: int) -> None:
        """An outage still open at close() is recorded, ending at close (not counted as a reconnect)."""


# ---------------------------------------------------------------------------------------------------
# OpenCV captures: cameras, streams, video files

_cv2_module = None


def _cv2():
    global _cv2_module
    if _cv2_module is None:
        # OpenCV logs its own multi-line probe errors to stderr; edgert reports one line instead.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
        # ... and its FFmpeg backend lets libav print "[tcp @ 0x...] Connection refused" lines unless told
        # otherwise (read once, when the backend loads); -8 is AV_LOG_QUIET (libavutil/log.h)
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        try:
            import cv2
        except ImportError:
            raise InputError("cameras, streams, videos and the synthetic scene need OpenCV: "
                             "pip install 'edgert[camera]'") from None
        _cv2_module = cv2
    return _cv2_module


def _is_frame(frame: object) -> bool:
    """What OpenCV captures deliver: uint8 BGR, gray or BGRA (a failed grab gives None or an empty array)."""
    return (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.size > 0
            and (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))))


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """A `_is_frame` frame -> a new C-contiguous RGB array."""
    cv2 = _cv2()
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def _plausible_fps(value: float) -> float | None:
    try:
        fps = float(value)
    except (TypeError, ValueError):
        return None
    return fps if math.isfinite(fps) and 0 < fps <= _MAX_PLAUSIBLE_FPS else None


class _CaptureSource(_SingleSource):
    """A cv2.VideoCapture (or `options.capture_factory`) read frame by frame."""

    reconnects: ClassVar[bool] = True   # cameras and streams reopen after a failure; video files end

    def __init__(self, name: str, options: SourceOptions, target: int | str, live: bool):
        super().__init__(name, options, live)
        self._target = target
        self._cap_lock = threading.Lock()
        self._cap: Capture | None = self._new_capture()
        if self._cap is None:
            raise self._open_error()
        self.fps = _plausible_fps(self._cap.get(_CAP_PROP_FPS))
        self._backoff_s = options.backoff_s[0]
        self._outage_start: int | None = None
        self._attempts = 0

    def _open_error(self) -> InputError:
        return InputError(f"cannot open {self.name}")

    def _no_frames_error(self) -> InputError:
        return InputError(f"{self.name} opened but delivered no frame")

    def _cv2_capture(self, target: int | str) -> Capture:
        return _cv2().VideoCapture(target)

    def _finish(self, image: np.ndarray) -> np.ndarray:
        return _to_rgb(image)

    def _new_capture(self) -> Capture | None:
        factory = self.options.capture_factory or self._cv2_capture
        cap = factory(self._target)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _release(self) -> None:
        with self._cap_lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def _read(self) -> tuple[np.ndarray, int, str | None] | None:
        while not self._stop.is_set():
            cap = self._cap
            if cap is None:
                if not self.reconnects or not self._reopen():
                    return None
                continue
            ok, raw = cap.read()
            t_ns = time.monotonic_ns()
            if ok and _is_frame(raw):
                if self._outage_start is not None:
                    self._recovered(t_ns)
                # converted to RGB on delivery (`_finish`): a frame that latest-wins drops costs no conversion
                return raw, t_ns, None
            if not self.reconnects:
                return None    # end of file (OpenCV does not tell a truncated file from its end)
            if self._next_index == 0 and self._outage_start is None:
                # fail fast at start, as a failed open does; reconnecting is for sources that worked
                self._release()
                raise self._no_frames_error()
            self._lost(t_ns)
        return None

    def _lost(self, t_ns: int) -> None:
        self._release()
        if not self.options.reconnect:
            raise InputError(f"{self.name} stopped delivering frames after {self.stats.captured} "
                             f"(reconnect is off)")
        if self._outage_start is None:   # a reopened capture that fails again continues the same outage
            with self._cond:
                self._outage_start = t_ns
            self._attempts = 0
            self._emit(EVENT_DISCONNECTED, t_ns=t_ns, captured=self.stats.captured)

    def _reopen(self) -> bool:
        """Wait the backoff, try once; the wait doubles per failure up to backoff_s[1]."""
        while True:
            if self._stop.wait(self._backoff_s):
                return False
            self._attempts += 1
            self._backoff_s = min(self._backoff_s * 2, self.options.backoff_s[1])
            cap = self._new_capture()
            if cap is not None:
                with self._cap_lock:
                    self._cap = cap
                return True
            self._emit(EVENT_RECONNECT_FAILED, attempt=self._attempts, retry_in_s=self._backoff_s)

    def _recovered(self, t_ns: int) -> None:
        with self._cond:
            start, self._outage_start = self._outage_start, None
            self.stats.gaps.append((start, t_ns))
            self.stats.reconnects += 1
            reconnects = self.stats.reconnects
        self._backoff_s = self.options.backoff_s[0]
        self._emit(EVENT_RECONNECTED, gap_ns=t_ns - start, attempts=self._attempts, reconnects=reconnects)

    def _close_outage(self, t_ns: int) -> None:
        if self._outage_start is not None:
            self.stats.gaps.append((self._outage_start, t_ns))
            self._outage_start = None


def list_video_devices(root: Path = Path("/")) -> list[str]:
    """The V4L2 capture nodes, '/dev/videoN' in numeric order (as paths on the device, not under root).
    A USB camera usually makes two: an even capture node and a metadata node after it."""
    found = [p.name for p in (Path(root) / "dev").glob("video*") if re.fullmatch(r"video\d+", p.name)]
    return [f"/dev/{n}" for n in sorted(found, key=lambda n: int(n[5:]))]


def _devices_line(root: Path) -> str:
    return f"video devices here: {', '.join(list_video_devices(root)) or 'none found'}"


def _video_index(device: str, root: Path) -> int | None:
    """N when `device` is, or links to, /dev/videoN (udev's /dev/v4l/by-id and by-path links do)."""
    real = Path(os.path.realpath(root / device.lstrip("/")))
    try:
        rel = real.relative_to(root.resolve())
    except ValueError:
        return None
    m = re.fullmatch(r"dev/video(\d+)", rel.as_posix())
    return int(m[1]) if m else None


class CameraSource(_CaptureSource):
    kind = "camera"
    usage = "camera[:N], N or /dev/videoN (a camera)"

    @classmethod
    def claims(cls, spec: str) -> bool:
        return spec == "camera" or spec.startswith("camera:") or spec.isdigit() or spec.startswith("/dev/")

    @classmethod
    def from_spec(cls, spec: str, options: SourceOptions) -> "CameraSource":
        arg = spec.partition(":")[2] if spec.startswith("camera") else spec
        arg = arg.strip() or "0"
        if arg.isdigit():
            index: int | None = int(arg)
            device = f"/dev/video{index}"
        elif arg.startswith("/dev/"):
            device = arg
            index = _video_index(device, Path(options.root))
        else:
            raise InputError(f"camera source wants camera:N, N or /dev/videoN, got {spec!r}")
        return cls(spec, options, index, device)

    def __init__(self, name: str, options: SourceOptions, index: int | None, device: str):
        self.device = device
        root = Path(options.root)
        # V4L2 is Linux's; elsewhere (AVFoundation, MSMF) cameras have no /dev node to check first
        if sys.platform.startswith("linux") and not (root / device.lstrip("/")).exists():
            raise InputError(f"no camera at {device} ({_devices_line(root)})")
        super().__init__(name, options, index if index is not None else device, live=True)

    def _open_error(self) -> InputError:
        if sys.platform.startswith("linux"):
            return InputError(f"cannot open camera {self.device} (in use by another program, or not "
                              f"readable by this user?) ({_devices_line(Path(self.options.root))})")
        return InputError(f"no camera at index {self._target} (is one connected?)")

    def _no_frames_error(self) -> InputError:
        hint = f" ({_devices_line(Path(self.options.root))})" if sys.platform.startswith("linux") else ""
        return InputError(f"camera {self.device} opened but delivered no frame (a metadata node rather "
                          f"than a capture node?){hint}")


def _mask_password(url: str) -> str:
    """rtsp://user:secret@host/... -> rtsp://user:***@host/... (names end up in logs and telemetry)."""
    return re.sub(r"^([a-z0-9+.-]+://[^/@:]*:)[^/@]*@", r"\1***@", url, flags=re.IGNORECASE)


class StreamSource(_CaptureSource):
    kind = "stream"
    usage = "rtsp://..., rtsps://..., http(s)://... (a network stream)"

    @classmethod
    def claims(cls, spec: str) -> bool:
        return spec.partition("://")[0].lower() in STREAM_SCHEMES and "://" in spec

    @classmethod
    def from_spec(cls, spec: str, options: SourceOptions) -> "StreamSource":
        return cls(_mask_password(spec), options, spec, live=True)

    def _open_error(self) -> InputError:
        return InputError(f"cannot open stream {self.name} (unreachable, wrong path or credentials, "
                          f"or a codec this OpenCV build lacks)")

    def _cv2_capture(self, target: int | str) -> Capture:
        cv2 = _cv2()
        if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):   # OpenCV >= 4.5.3
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG,
                                    [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _STREAM_OPEN_TIMEOUT_MS,
                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, _STREAM_READ_TIMEOUT_MS])
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG)


class VideoFileSource(_CaptureSource):
    kind = "video"
    usage = f"a video file ({' '.join(VIDEO_SUFFIXES)})"
    reconnects = False
    paced = True

    @classmethod
    def claims(cls, spec: str) -> bool:
        return spec.startswith("video:") or Path(spec).suffix.lower() in VIDEO_SUFFIXES

    @classmethod
    def from_spec(cls, spec: str, options: SourceOptions) -> "VideoFileSource":
        path = Path(spec.removeprefix("video:")).expanduser()
        if not path.is_file():
            raise InputError(f"no such video file: {path}")
        return cls(spec, options, path)

    def __init__(self, name: str, options: SourceOptions, path: Path):
        self.path = path
        super().__init__(name, options, str(path), live=options.realtime)

    def _open_error(self) -> InputError:
        return InputError(f"{self.path}: cannot open as a video (not one, or a codec this OpenCV build lacks)")

    def _empty_error(self) -> InputError:
        return InputError(f"{self.path}: no frames could be decoded")

    def _rewind(self) -> bool:
        # reopening is reliable for every container; seeking to frame 0 is not (CAP_PROP_POS_FRAMES)
        self._release()
        cap = self._new_capture()
        with self._cap_lock:
            self._cap = cap
        return cap is not None


# ---------------------------------------------------------------------------------------------------
# the synthetic scene


@lru_cache(maxsize=4)
def _synthetic_background(h: int, w: int) -> np.ndarray:
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    top, bottom = np.array([40, 48, 72], np.float32), np.array([120, 110, 90], np.float32)
    bg = (top + (bottom - top) * y + 20.0 * x).clip(0, 255).astype(np.uint8)
    step = max(8, min(h, w) // 12)   # a faint grid gives motion and stereo code something to lock on to
    bg[::step] //= 2
    bg[:, ::step] //= 2
    bg = np.ascontiguousarray(bg)
    bg.setflags(write=False)
    return bg


def _bounce(t: int, span: int) -> int:
    """Triangle wave over [0, span]: position of something bouncing between two walls."""
    if span <= 0:
        return 0
    t %= 2 * span
    return t if t <= span else 2 * span - t


def render_synthetic(index: int, hw: tuple[int, int] = DEFAULT_SYNTHETIC_HW) -> np.ndarray:
    """Frame `index` of the synthetic scene: (H, W, 3) uint8 RGB, a function of (index, hw) only."""
    cv2 = _cv2()
    h, w = int(hw[0]), int(hw[1])
    img = _synthetic_background(h, w).copy()
    s = min(h, w)
    aa = cv2.LINE_AA
    # red disc crossing left to right (3 s at 30 fps), bobbing
    r = max(2, s // 10)
    x = (index * max(1, w // 90)) % (w + 2 * r) - r
    y = h // 2 + int(round(h / 4 * math.sin(index * 2 * math.pi / 60)))
    cv2.circle(img, (x, y), r, (220, 40, 40), -1, aa)
    # green square bouncing between the walls
    side = max(2, s // 6)
    bx, by = _bounce(index * max(1, w // 160), w - side), _bounce(index * max(1, h // 160), h - side)
    cv2.rectangle(img, (bx, by), (bx + side - 1, by + side - 1), (40, 200, 60), -1)
    # blue triangle orbiting the centre and turning
    a = index * 2 * math.pi / 90
    cx, cy = w / 2 + s / 3 * math.cos(a), h / 2 + s / 3 * math.sin(a)
    pts = np.array([[cx + s / 9 * math.cos(3 * a + k * 2 * math.pi / 3),
                     cy + s / 9 * math.sin(3 * a + k * 2 * math.pi / 3)] for k in range(3)])
    cv2.fillPoly(img, [np.round(pts).astype(np.int32)], (50, 80, 230), aa)
    # text: the frame number, and a label drifting right to left
    scale = max(0.3, s / 480)
    thick = max(1, int(round(2 * scale)))
    cv2.putText(img, f"#{index}", (int(8 * scale), int(32 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thick, aa)
    label_w = int(260 * scale)
    tx = w - (index * max(1, w // 120)) % (w + label_w)
    cv2.putText(img, "EDGERT 0123", (tx, int(h * 0.88)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (250, 230, 40), thick, aa)
    return img


class SyntheticSource(_SingleSource):
    kind = "synthetic"
    usage = "synthetic[:HxW] (a moving test scene)"
    paced = True

    @classmethod
    def claims(cls, spec: str) -> bool:
        return spec == "synthetic" or spec.startswith("synthetic:")

    @classmethod
    def from_spec(cls, spec: str, options: SourceOptions) -> "SyntheticSource":
        arg = spec.partition(":")[2]
        hw = options.size or DEFAULT_SYNTHETIC_HW
        if arg:
            m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", arg)
            if not m or min(int(v) for v in m.groups()) < 1:
                raise InputError(f"synthetic source wants synthetic or synthetic:HxW (e.g. synthetic:480x640), "
                                 f"got {spec!r}")
            hw = (int(m[1]), int(m[2]))
        return cls(spec, options, (int(hw[0]), int(hw[1])))

    def __init__(self, name: str, options: SourceOptions, hw: tuple[int, int]):
        super().__init__(name, options, live=options.realtime)
        self.hw = hw
        self.fps = options.fps
        self._rendered = 0

    def _read(self) -> tuple[np.ndarray, int, str | None] | None:
        if self._stop.is_set():
            return None
        image = render_synthetic(self._rendered, self.hw)
        self._rendered += 1
        return image, time.monotonic_ns(), None


# ---------------------------------------------------------------------------------------------------
# multi-camera rigs (BEV): a recorded sequence or the synthetic driving world


class RigSource(_SingleSource):
    """A camera rig as a frame source.  Iterating yields one camera's frames (`#CAMERA`, default the
    first) like any other source, so single-camera models run on a rig recording; `samples()` yields
    whole `RigSample`s (every camera, the pose, ground truth, discontinuity events) for the BEV
    scheduler.  Recordings are read and validated by edgert.bev.recording, the world is
    edgert.bev.world (needs OpenCV)."""

    kind = "rig"
    usage = "a BEV rig recording directory or rig:synthetic[:SEED], optionally #CAMERA"
    paced = True

    @classmethod
    def claims(cls, spec: str) -> bool:
        from edgert.bev.recording import is_recording

        return spec.startswith("rig:") or is_recording(spec.partition("#")[0])

    @classmethod
    def from_spec(cls, spec: str, options: SourceOptions) -> "RigSource":
        return cls(spec, options)

    def __init__(self, name: str, options: SourceOptions):
        from edgert.bev import recording

        super().__init__(name, options, live=options.realtime)
        where, _, camera = name.partition("#")
        self.recording = None
        self.seed = 0
        if where.startswith("rig:synthetic"):
            m = re.fullmatch(r"rig:synthetic(?::(-?\d+))?", where)
            if not m:
                raise InputError(f"rig source wants a recording directory or rig:synthetic[:SEED], got {name!r}")
            from edgert.bev.rig import nuscenes_like_rig
            self.seed = int(m[1] or 0)
            self.rig, self.fps = nuscenes_like_rig(), 12.0
        else:
            self.recording = recording.Recording(where.removeprefix("rig:"))
            self.rig, self.fps = self.recording.rig, self.recording.rate_hz
        self.camera = self.rig.index(camera) if camera else 0
        self._samples: Iterator | None = None

    def samples(self) -> Iterator:
        """Every RigSample in order (the synthetic world: without end; stop when you have enough)."""
        from edgert.bev import recording

        if self.recording is not None:
            return self.recording.samples()
        return recording.with_discontinuities(recording.synthetic_samples(self.seed, rig=self.rig), self.fps)

    def _read(self) -> tuple[np.ndarray, int, str | None] | None:
        if self._stop.is_set():
            return None
        if self._samples is None:
            self._samples = self.samples()
        for s in self._samples:
            for e in s.events:
                if e.startswith("corrupt_frame"):
                    self._emit(EVENT_SKIPPED, path=f"sample {s.index}", error=e, failed=self.stats.failed)
            image = s.frames[self.camera]
            if image is None:
                with self._cond:
                    self.stats.failed += 1
                continue
            return image, time.monotonic_ns(), None
        return None

    def _rewind(self) -> bool:
        self._samples = None
        return True


# ---------------------------------------------------------------------------------------------------
# image files


def _has_glob_chars(spec: str) -> bool:
    return any(c in spec for c in "*?[")


class ImageSource(_SingleSource):
    kind = "images"
    usage = "an image folder or glob (e.g. 'frames/*.png')"
    paced = True

    @classmethod
    def claims(cls, spec: str) -> bool:
        if spec.startswith("images:"):
            return True
        if os.path.exists(spec):
            return os.path.isdir(spec) or Path(spec).suffix.lower() in IMAGE_SUFFIXES
        return _has_glob_chars(spec)

    @classmethod
    def from_spec(cls, spec: str, options: SourceOptions) -> "ImageSource":
        where = spec.removeprefix("images:")
        p = Path(where).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not files:
                raise InputError(f"no {' '.join(IMAGE_SUFFIXES)} files in {p}")
        elif p.is_file():
            files = [p]
        elif _has_glob_chars(where):
            files = sorted(Path(f) for f in glob.glob(os.path.expanduser(where), recursive=True)
                           if os.path.isfile(f))
            if not files:
                raise InputError(f"no files match {where!r}")
        else:
            raise InputError(f"no such image folder or file: {p}")
        return cls(spec, options, files)

    def __init__(self, name: str, options: SourceOptions, files: list[Path]):
        super().__init__(name, options, live=options.realtime)
        self.files = list(files)
        self._total = len(self.files)
        self._i = 0
        self._last_error: InputError | None = None

    def _read(self) -> tuple[np.ndarray, int, str | None] | None:
        from edgert.preprocess import load_image

        while self._i < len(self.files) and not self._stop.is_set():
            path = self.files[self._i]
            try:
                image = load_image(path)
            except InputError as e:
                # dropped from the list, so under loop a bad file costs one read and one event, not one per pass
                del self.files[self._i]
                self._last_error = e
                with self._cond:
                    self.stats.failed += 1
                    failed = self.stats.failed
                self._emit(EVENT_SKIPPED, path=str(path), error=str(e), failed=failed)
                continue
            self._i += 1
            return image, time.monotonic_ns(), str(path)
        return None

    def _rewind(self) -> bool:
        self._i = 0
        return bool(self.files)

    def _empty_error(self) -> InputError:
        return InputError(f"{self.name}: none of the {self._total} image files could be read "
                          f"(last: {self._last_error})")


# ---------------------------------------------------------------------------------------------------
# several sources at once


class MultiSource(FrameSource):
    """Several sources iterated as one (`--camera 0 --camera 1`); each Frame's `.source` says which.

    A live child's newest frame is delivered as soon as it arrives (the oldest waiting first when
    several are); children read in order take turns (round robin) whenever no live frame is waiting,
    so every file frame is delivered.  `max_frames` counts what this source delivers in total, `stats`
    sums the children's, `per_source` has each one's.  Child events go to this source's `on_event`."""

    def __init__(self, sources: Sequence[FrameSource], options: SourceOptions | None = None):
        if not sources:
            raise InputError("MultiSource needs at least one source")
        names = [s.name for s in sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"frame source given more than once: {', '.join(dup)}")
        for s in sources:
            if not isinstance(s, _SingleSource) or s._thread is not None or s._closed:
                raise InputError(f"MultiSource takes unstarted single sources, not {s!r}")
        self.options = options or SourceOptions()
        self.sources: list[_SingleSource] = list(sources)
        self.name = ", ".join(names)
        self.live = any(s.live for s in self.sources)
        self.fps = None
        self.on_event = self.options.on_event
        self._cond = threading.Condition()
        for s in self.sources:
            s._cond = self._cond    # one condition: any child's new frame wakes the consumer
            s.on_event = self._forward
        self._closed = False
        self._delivered = 0

    def _forward(self, kind: str, detail: dict) -> None:
        cb = self.on_event
        if cb is not None:
            cb(kind, detail)

    @property
    def per_source(self) -> dict[str, SourceStats]:
        return {s.name: s.stats for s in self.sources}

    @property
    def stats(self) -> SourceStats:
        total = SourceStats()
        with self._cond:
            for s in self.sources:
                st = s.stats
                total.captured += st.captured
                total.delivered += st.delivered
                total.dropped += st.dropped
                total.failed += st.failed
                total.reconnects += st.reconnects
                total.gaps.extend(st.gaps)
        total.gaps.sort()
        return total

    def __iter__(self) -> Iterator[Frame]:
        live = [s for s in self.sources if s.live]
        ordered = [s for s in self.sources if not s.live]
        for s in live:
            s._start()
        turn = 0
        while not self._closed and not (0 < self.options.max_frames <= self._delivered):
            frame = None
            with self._cond:
                while True:
                    if self._closed:
                        return
                    ready = [s for s in live if s._slot is not None and not s._limit_reached()]
                    if ready:
                        child = min(ready, key=lambda s: s._slot.t_ns)
                        frame = child._take()
                        break
                    for s in live:
                        if s._ended:
                            s._raise_error()
                    live = [s for s in live if not s._ended and not s._limit_reached()]
                    if ordered or not live:
                        break
                    self._cond.wait(_WAIT_S)
            if frame is not None:
                frame.image = child._finish(frame.image)   # outside the lock, as in _iter_live
            elif ordered:
                turn %= len(ordered)
                child = ordered[turn]
                frame = child._next_ordered()
                if frame is None or child._limit_reached():
                    del ordered[turn]     # the next child now has this turn
                else:
                    turn += 1
            if frame is None:
                if not live and not ordered:
                    return
                continue
            self._delivered += 1
            yield frame
        for s in self.sources:   # max_frames: nothing more will be delivered
            s._stop_capture()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for s in self.sources:
            s.close()


# ---------------------------------------------------------------------------------------------------
# sources files


def parse_sources_file(path: str | Path) -> list[str]:
    """Specs from a text file: one per line; '#' starts a comment at a line's start or after a space
    (so a '#' inside a URL or file name stays).  Specs are kept as written (relative paths are relative
    to the working directory, as on the command line)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read the sources file ({e})") from None
    specs = [s for line in text.splitlines() if (s := re.sub(r"(^|\s)#.*$", "", line).strip())]
    if not specs:
        raise InputError(f"{p}: no sources in it (one spec per line, '#' comments)")
    return specs
