"""Input sources the agent feeds a model from, chosen by a spec string:

    synthetic[:HxW]   a small seeded pool of random feeds shaped like the model's inputs, cycled
    images:DIR        the images in DIR (sorted), preprocessed as the package records, cycled
    camera[:INDEX]    frames from an OpenCV camera (default index 0), preprocessed the same way

Each source is one class registered under its `name`; an unknown name raises InputError listing the
known ones.  Pillow and OpenCV are imported only by the sources that need them.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgert.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_HW = (224, 224)   # synthetic spatial size when the package records none (ImageNet-style input)
_NEEDS_PREPROCESS = ("the {src} source needs a package that records image preprocessing (convert it "
                     "with --size / --mean / --std / --channels)")

_SOURCES: dict[str, type["InputSource"]] = {}


class InputSource(ABC):
    """Feeds for `session.run`, one call at a time.  Also a context manager (closes on exit)."""

    name: ClassVar[str]
    usage: ClassVar[str]      # the spec forms, for error messages
    skipped: int = 0          # inputs that could not be read (bad image files, dropped frames)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if getattr(cls, "name", None):
            if _SOURCES.setdefault(cls.name, cls) is not cls:
                raise RuntimeError(f"input source {cls.name} registered twice")

    @classmethod
    @abstractmethod
    def from_spec(cls, arg: str | None, session) -> "InputSource":
        """Build from the part of the spec after 'name:' (None when absent)."""

    @abstractmethod
    def next(self) -> dict[str, np.ndarray]:
        """The next feeds, keyed by input name."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "InputSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def known_sources() -> list[str]:
    return sorted(_SOURCES)


def open_source(spec: str, session) -> InputSource:
    """'synthetic', 'synthetic:320x320', 'images:/data/imgs', 'camera', 'camera:1' -> an InputSource."""
    name, sep, arg = spec.partition(":")
    cls = _SOURCES.get(name.strip())
    if cls is None:
        raise InputError(f"unknown input source {spec!r} "
                         f"(known: {', '.join(_SOURCES[n].usage for n in known_sources())})")
    return cls.from_spec(arg if sep else None, session)


def _image_input(session, src: str) -> str:
    if session.preprocess is None:
        raise InputError(_NEEDS_PREPROCESS.format(src=src))
    if len(session.inputs) != 1:
        raise InputError(f"the {src} source feeds one image input; this model has {len(session.inputs)}: "
                         f"{[vi.name for vi in session.inputs]}")
    return session.inputs[0].name


class SyntheticSource(InputSource):
    name = "synthetic"
    usage = "synthetic[:HxW]"
    POOL = 4

    def __init__(self, session, hw: tuple[int, int] | None = None, seed: int = 0, pool: int = POOL):
        from edgert.bench import synthetic_feeds
        from edgert.preprocess import target_size

        pp = session.preprocess
        if hw is None:
            # the package's fixed size, else the default rounded up as the package pads real images
            hw = target_size(DEFAULT_HW, pp) if pp is not None else DEFAULT_HW
        overrides = {}
        if pp is not None and pp.layout == "nhwc":
            # concrete_shape puts spatial dims last (NCHW); an NHWC image input has them at 1, 2
            fill = (1, hw[0], hw[1], 1 if pp.channels == "gray" else 3)
            for vi in session.inputs:
                if len(vi.shape) == 4:
                    overrides[vi.name] = [d if isinstance(d, int) and d > 0 else fill[i]
                                          for i, d in enumerate(vi.shape)]
        try:
            self._pool = [synthetic_feeds(session.inputs, hw, overrides, seed=seed + i) for i in range(pool)]
        except InputError as e:
            raise InputError(f"synthetic source: {str(e).replace('; give --shape', '')}; the package "
                             f"records no size for it") from None
        self._i = 0
        self.skipped = 0

    @classmethod
    def from_spec(cls, arg, session):
        if not arg:
            return cls(session)
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", arg)
        if not m or not all(int(v) > 0 for v in m.groups()):
            raise InputError(f"synthetic source wants synthetic or synthetic:HxW (e.g. synthetic:320x320), "
                             f"got {arg!r}")
        return cls(session, hw=(int(m[1]), int(m[2])))

    def next(self) -> dict[str, np.ndarray]:
        feeds = self._pool[self._i % len(self._pool)]
        self._i += 1
        return feeds


class ImageDirSource(InputSource):
    name = "images"
    usage = "images:DIR"

    def __init__(self, session, directory: Path):
        self.input_name = _image_input(session, "images")
        self.preprocess = session.preprocess
        if not directory.is_dir():
            raise InputError(f"images source: no directory {directory}")
        self.files = sorted(p for p in directory.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise InputError(f"images source: no {'/'.join(IMAGE_SUFFIXES)} files in {directory}")
        self.directory = directory
        self._i = 0
        self.skipped = 0

    @classmethod
    def from_spec(cls, arg, session):
        if not arg:
            raise InputError("images source wants images:DIR")
        return cls(session, Path(arg).expanduser())

    def next(self) -> dict[str, np.ndarray]:
        from edgert.preprocess import preprocess_file

        last: InputError | None = None
        while self.files:
            self._i %= len(self.files)
            path = self.files[self._i]
            try:
                x = preprocess_file(path, self.preprocess)
            except InputError as e:
                # counted once and dropped from the rotation, so a bad file costs one read, not one per cycle
                self.skipped += 1
                del self.files[self._i]
                last = e
                continue
            self._i += 1
            return {self.input_name: x}
        raise InputError(f"images source: none of the {self.skipped} images in {self.directory} could be "
                         f"read (last: {last})")


class CameraSource(InputSource):
    name = "camera"
    usage = "camera[:INDEX]"
    MAX_FAILED_READS = 3   # consecutive dropped frames before the camera counts as gone

    def __init__(self, session, index: int = 0):
        from edgert.camera import open_camera

        self.input_name = _image_input(session, "camera")
        self.preprocess = session.preprocess
        self.index = index
        self._cap = open_camera(index)     # the same one-line errors as `edgert run --camera`
        self.skipped = 0

    @classmethod
    def from_spec(cls, arg, session):
        if not arg:
            return cls(session)
        try:
            index = int(arg)
        except ValueError:
            raise InputError(f"camera source wants camera or camera:INDEX (an integer), got {arg!r}") from None
        return cls(session, index)

    def next(self) -> dict[str, np.ndarray]:
        from edgert.preprocess import preprocess_array

        for _ in range(self.MAX_FAILED_READS):
            ok, frame_bgr = self._cap.read()
            if ok and frame_bgr is not None and frame_bgr.ndim == 3 and frame_bgr.shape[2] == 3:
                rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])    # OpenCV delivers BGR
                return {self.input_name: preprocess_array(rgb, self.preprocess)}
            self.skipped += 1
        raise InputError(f"camera {self.index} stopped delivering frames "
                         f"({self.MAX_FAILED_READS} failed reads in a row)")

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
