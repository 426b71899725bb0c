"""Calibration data readers and the streaming calibration loop.

Readers are re-iterable (the SQNR pass replays the first batches): `ImageFolderReader` preprocesses
images with exactly `edgert.preprocess.preprocess_array` and the recorded `Preprocess`;
`RandomReader` yields seeded random-normal tensors for smoke runs."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from converters.observers import Observer, ObserverConfig, make_observer
from edgert.errors import CalibrationError, EdgertError, InputError
from edgert.ir import Graph, Preprocess, ValueInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

Feeds = dict[str, np.ndarray]


class CalibrationReader(Protocol):
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Feeds]: ...


class ImageFolderReader:
    """The first `count` images of a folder (sorted by name), one batch of one per image."""

    def __init__(self, directory: str | Path, preprocess: Preprocess | None, input_name: str,
                 count: int = 32):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CalibrationError(f"calibration folder not found: {self.directory}")
        files = sorted(p for p in self.directory.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in calibration "
                                   f"folder {self.directory}")
        if preprocess is None:
            raise CalibrationError(f"calibrating from images in {self.directory} needs a "
                                   f"preprocessing spec (size / mean / std)")
        self.files = files[:count] if count > 0 else files
        self.preprocess = preprocess
        self.input_name = input_name

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Feeds]:
        from edgert.preprocess import load_image, preprocess_array
        for p in self.files:
            try:
                x = preprocess_array(load_image(p), self.preprocess)
            except InputError as e:
                raise CalibrationError(f"unusable calibration image {p}: {e}") from None
            yield {self.input_name: x}


def _spatial_axes(layout: str) -> tuple[int, int]:
    return (1, 2) if layout == "nhwc" else (2, 3)


def concrete_shape(vi: ValueInfo, hw: tuple[int, int] | None = None, layout: str = "nchw"
                   ) -> list[int]:
    """`vi`'s shape with every dim a number: for a 4-D (image) input, dynamic height / width come
    from `hw` (the recorded preprocess size) and a dynamic batch is 1.  CalibrationError naming
    the flags that pin dims when one stays dynamic."""
    dims = list(vi.shape)
    if hw is not None and len(dims) == 4:
        for axis, size in zip(_spatial_axes(layout), hw):
            if not isinstance(dims[axis], int):
                dims[axis] = int(size)
        if not isinstance(dims[0], int):
            dims[0] = 1
    if all(isinstance(d, int) and d > 0 for d in dims):
        return dims
    letters = dict(zip(_spatial_axes(layout), "HW")) if len(dims) == 4 else {}
    example = "x".join(str(d) if isinstance(d, int) and d > 0 else
                       "1" if i == 0 else letters.get(i, f"D{i}") for i, d in enumerate(vi.shape))
    hint = " or --size HxW (height and width of an image input)" if len(dims) == 4 else ""
    raise CalibrationError(f"random calibration needs concrete input dims, but input {vi.name!r} "
                           f"has shape {vi.shape}: pass --input-shape {vi.name}:{example} (numbers "
                           f"for the letters){hint}")


class RandomReader:
    """`count` batches of seeded random-normal tensors shaped like the graph inputs; dynamic dims
    of a 4-D input are filled from `hw` (see `concrete_shape`)."""

    def __init__(self, inputs: list[ValueInfo], count: int, seed: int = 0,
                 hw: tuple[int, int] | None = None, layout: str = "nchw"):
        self.shapes = {vi.name: concrete_shape(vi, hw, layout) for vi in inputs}
        self.inputs = inputs
        self.count = count
        self.seed = seed

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Feeds]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.count):
            yield {vi.name: rng.standard_normal(self.shapes[vi.name]).astype(vi.dtype)
                   for vi in self.inputs}


class ListReader:
    """Batches already in memory (tests, notebooks)."""

    def __init__(self, batches: list[Feeds]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Feeds]:
        return iter(self.batches)


def first_batches(reader: CalibrationReader, n: int) -> list[Feeds]:
    out = []
    for feeds in reader:
        if len(out) >= n:
            break
        out.append(feeds)
    return out


CaptureFn = Callable[[Feeds, set[str]], dict[str, np.ndarray]]


def make_capture_runner(graph: Graph, backend: str = "auto") -> tuple[str, CaptureFn]:
    """(backend name, run(feeds, names) -> captured values) for the float graph.

    "auto" prefers the ORT backend's capture (much faster) and falls back to the numpy oracle when
    ORT is missing or cannot take this graph."""
    from edgert.backends.base import BackendOptions, get_backend
    candidates = ["ort", "numpy"] if backend == "auto" else [backend]
    errors = []
    for name in candidates:
        try:
            exe = get_backend(name).prepare(graph, BackendOptions())
        except EdgertError as e:
            errors.append(f"{name}: {e}")
            continue

        def run(feeds: Feeds, names: set[str], _exe=exe) -> dict[str, np.ndarray]:
            return _exe.run(feeds, capture=set(names))
        return name, run
    raise CalibrationError("no backend can run the float graph for calibration: "
                           + "; ".join(errors))


@dataclass
class CalibrationResult:
    ranges: dict[str, tuple[float, float]]
    batches: int
    seconds: float
    backend: str
    observers: dict[str, Observer] = field(default_factory=dict, repr=False)


def calibrate(graph: Graph, reader: CalibrationReader, names: set[str] | list[str],
              observer: str = "minmax", config: ObserverConfig | None = None,
              backend: str = "auto", progress: bool = True, qmin: int = -128, qmax: int = 127
              ) -> CalibrationResult:
    """Stream every batch through the float graph and feed the captured tensors to one observer
    each (nothing but the observers' state is kept between batches)."""
    t0 = time.perf_counter()
    names = set(names)
    backend_name, run = make_capture_runner(graph, backend)
    observers = {n: make_observer(observer, config) for n in names}
    feeds_names = {vi.name for vi in graph.inputs}
    from tqdm import tqdm
    n = 0
    with tqdm(total=len(reader), desc=f"calibrating ({backend_name})", unit="batch",
              file=sys.stderr, disable=not progress, leave=False) as bar:
        for feeds in reader:
            try:
                got = run(feeds, names - feeds_names)
            except CalibrationError:
                raise
            except EdgertError as e:
                if backend != "auto" or backend_name == "numpy":
                    raise CalibrationError(f"calibration run failed on {backend_name}: {e}") from e
                # the fast backend choked on real data: redo everything on the oracle
                backend_name, run = make_capture_runner(graph, "numpy")
                return calibrate(graph, reader, names, observer, config, "numpy", progress,
                                 qmin, qmax)
            got = {**got, **{k: v for k, v in feeds.items() if k in names}}
            missing = names - set(got)
            if missing:
                raise CalibrationError(f"backend {backend_name} did not capture "
                                       f"{sorted(missing)[:5]}")
            for name, obs in observers.items():
                obs.update(got[name])
            n += 1
            bar.update(1)
    if n == 0:
        raise CalibrationError("the calibration reader yielded no batches")
    ranges = {name: obs.range(qmin, qmax) for name, obs in observers.items()}
    return CalibrationResult(ranges, n, time.perf_counter() - t0, backend_name, observers)
