"""`edgert.load(path)` -> a Session that runs one model of a package on a named backend."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgert import format as F
from edgert.backends.base import BackendOptions, get_backend
from edgert.errors import InputError, PackageError
from edgert.ir import Graph, ValueInfo


@dataclass
class LoadOptions:
    backend: str = "auto"             # "auto" = ort when onnxruntime imports, else numpy
    threads: int = 0                  # 0 = backend default
    model: str | None = None          # which model of a multi-model package (default: the first)
    require_signature: bool = False
    public_key: bytes | None = None   # raw Ed25519 public key; None = the key embedded in the file
    verify_hashes: bool = True
    max_value_bytes: int = F.DEFAULT_MAX_VALUE_BYTES   # any one intermediate (edgert.graphcheck)


def _check_feed(vi: ValueInfo, arr: np.ndarray, dims: dict[str, int]) -> np.ndarray:
    want = np.dtype(vi.dtype)
    if arr.dtype != want:
        if np.can_cast(arr.dtype, want, casting="same_kind"):
            arr = arr.astype(want)
        else:
            raise InputError(f"input {vi.name!r} wants dtype {want}, got {arr.dtype}")
    if len(vi.shape) != arr.ndim:
        raise InputError(f"input {vi.name!r} wants rank {len(vi.shape)} {_fmt(vi.shape)}, "
                         f"got shape {tuple(arr.shape)}")
    for i, (d, got) in enumerate(zip(vi.shape, arr.shape)):
        if isinstance(d, int) and d >= 0 and d != got:
            raise InputError(f"input {vi.name!r} dim {i} must be {d} {_fmt(vi.shape)}, "
                             f"got shape {tuple(arr.shape)}")
        if isinstance(d, str) and d:
            if dims.setdefault(d, got) != got:
                raise InputError(f"input {vi.name!r} dim {i} ({d}) is {got} but another input "
                                 f"fixed it to {dims[d]}")
    return np.ascontiguousarray(arr)


def _check_multiple(vi: ValueInfo, arr: np.ndarray, pp) -> None:
    """The package's `Preprocess.pad_multiple` binds the height and width of a 4-D image input
    wherever the model leaves them dynamic (a detection backbone halves them five times)."""
    m = pp.pad_multiple if pp is not None else 1
    if m <= 1 or len(vi.shape) != 4:
        return
    for axis, label in zip((1, 2) if pp.layout == "nhwc" else (2, 3), ("height", "width")):
        if not isinstance(vi.shape[axis], int) and arr.shape[axis] % m:
            raise InputError(f"input {vi.name!r} {label} {arr.shape[axis]} is not a multiple of "
                             f"{m} (the package's pad_multiple), got shape {tuple(arr.shape)}")


def _fmt(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class Session:
    def __init__(self, package, graph: Graph, backend_name: str, executable, plan=None, task=None):
        self.package = package
        self.graph = graph
        self.plan = plan              # edgert.graphcheck.GraphPlan: checks each new input shape
        self.backend = backend_name
        self._exe = executable
        self._task = task             # edgert.tasks.Task recorded in the package (None: read lazily)

    @property
    def task(self):
        """The post-processing task recorded in the package (edgert.tasks; "raw" when none)."""
        if self._task is None:
            from edgert.tasks import task_of
            self._task = task_of(self.graph)
        return self._task

    @property
    def inputs(self) -> list[ValueInfo]:
        return self.graph.inputs

    @property
    def outputs(self) -> list[ValueInfo]:
        return self.graph.outputs

    @property
    def preprocess(self):
        return self.graph.preprocess

    def check_feeds(self, feeds: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(feeds, np.ndarray):
            if len(self.inputs) != 1:
                raise InputError(f"model has {len(self.inputs)} inputs; pass a dict by name: "
                                 f"{[i.name for i in self.inputs]}")
            feeds = {self.inputs[0].name: feeds}
        known = {i.name for i in self.inputs}
        extra = set(feeds) - known
        if extra:
            raise InputError(f"unknown input(s) {sorted(extra)}; the model takes {sorted(known)}")
        missing = known - set(feeds)
        if missing:
            raise InputError(f"missing input(s) {sorted(missing)}")
        dims: dict[str, int] = {}
        checked = {vi.name: _check_feed(vi, np.asarray(feeds[vi.name]), dims) for vi in self.inputs}
        for vi in self.inputs:
            _check_multiple(vi, checked[vi.name], self.preprocess)
        if self.plan is not None:
            self.plan.check_feeds(checked)      # every value of this run within the budget
        return checked

    def run(self, feeds: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        return self._exe.run(self.check_feeds(feeds))

    def close(self) -> None:
        close = getattr(self.package, "close", None)
        if close:
            close()


def load(path: str | Path, options: LoadOptions | None = None, **kwargs) -> Session:
    """Read and validate a package, then prepare one of its models on a backend."""
    from edgert.graphcheck import CheckOptions, check_graph
    from edgert.package import ReadOptions, read_package
    from edgert.tasks import task_of

    opts = options or LoadOptions(**kwargs)
    pkg = read_package(Path(path), ReadOptions(verify_hashes=opts.verify_hashes,
                                               require_signature=opts.require_signature,
                                               public_key=opts.public_key))
    try:
        graph = pkg.graph(opts.model)
        if isinstance(graph.metadata, dict) and "llm" in graph.metadata:
            raise PackageError(f"{path}: is an LLM package: use `edgert generate` / `edgert chat` "
                               "(edgert.load_llm), not run / bench")
        # No backend sees a graph before it is checked (a hostile manifest can have valid hashes).
        plan = check_graph(graph, CheckOptions(max_value_bytes=opts.max_value_bytes))
        task = task_of(graph)           # the recorded task record is manifest input too
        backend = get_backend(opts.backend)
        exe = backend.prepare(graph, BackendOptions(threads=opts.threads))
    except BaseException:
        pkg.close()
        raise
    return Session(pkg, graph, backend.name, exe, plan, task)
