"""Base class and registry of the task post-processors (one task per file in edgert/tasks/).

A task turns a model's raw outputs into a JSON-able result (`postprocess`) and draws that result on
the source frame (`render`).  Its parameters are a dataclass (`Params`) whose fields declare how they
are validated (`param(...)`); `from_json` checks a record from a package manifest against those
declarations — the manifest is hostile input (docs/format.md §7) — and raises `PackageError` naming
the field.  The converter records `task.to_json()` as `graph.metadata["task"]`; `task_of(graph)`
reads it back, and `edgert.load` calls it so a bad record fails at load time.

Only numpy is imported here; OpenCV is imported inside the functions that draw or trace contours.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np

from edgert.errors import PackageError
from edgert.registry import Registry

MAX_LABELS = 100_000          # ImageNet-21k has 21,841 classes; anything far beyond is not a label file
MAX_LABEL_CHARS = 256
MAX_NAME_CHARS = 64


@dataclass(frozen=True)
class FrameMeta:
    """How the model input relates to the source frame: the preprocess resizes (stretches) the
    (H, W) source to `input_hw` (edgert.preprocess.target_size), with no letterbox."""
    image_hw: tuple[int, int]     # source frame (H, W)
    input_hw: tuple[int, int]     # model input (H, W) after preprocessing

    @classmethod
    def from_preprocess(cls, image_hw: tuple[int, int], pp) -> "FrameMeta":
        from edgert.preprocess import target_size
        return cls((int(image_hw[0]), int(image_hw[1])), target_size(tuple(image_hw), pp))


# --------------------------------------------------------------------------- parameter declarations
@dataclass(frozen=True)
class Spec:
    """How one parameter is validated.  kind: int | float | bool | choice | labels | auto_bool
    (the string "auto" or a bool).  lo/hi are inclusive bounds; lo_open excludes lo."""
    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    lo_open: bool = False


def param(default: Any, kind: str, lo: float | None = None, hi: float | None = None,
          choices: tuple[str, ...] = (), lo_open: bool = False) -> Any:
    """A Params field with its validation rule (see Spec)."""
    return field(default=default, metadata={"spec": Spec(kind, lo, hi, choices, lo_open)})


def labels_param() -> Any:
    return param((), "labels")


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _range_text(s: Spec) -> str:
    lo = "" if s.lo is None else f"{'>' if s.lo_open else '>='} {s.lo:g}"
    hi = "" if s.hi is None else f"<= {s.hi:g}"
    return " and ".join(t for t in (lo, hi) if t)


def check_value(spec: Spec, v: Any, where: str) -> Any:
    """`v` coerced to the declared type, or PackageError naming `where`."""
    def bad(want: str) -> PackageError:
        return PackageError(f"{where} must be {want}, got {_short(v)}")

    if spec.kind == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise bad("true or false")
        return bool(v)
    if spec.kind == "auto_bool":
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, str) and v == "auto":
            return "auto"
        raise bad('"auto", true or false')
    if spec.kind == "choice":
        if not isinstance(v, str) or v not in spec.choices:
            raise bad(f"one of {', '.join(spec.choices)}")
        return v
    if spec.kind == "labels":
        if not isinstance(v, (list, tuple)):
            raise bad(f"a list of at most {MAX_LABELS} strings")
        if len(v) > MAX_LABELS:
            raise PackageError(f"{where} has {len(v)} entries (at most {MAX_LABELS})")
        for i, s in enumerate(v):
            if not isinstance(s, str) or len(s) > MAX_LABEL_CHARS:
                raise PackageError(f"{where}[{i}] must be a string of at most {MAX_LABEL_CHARS} "
                                   f"characters, got {_short(s)}")
        return tuple(v)
    if spec.kind in ("int", "float"):
        rng = _range_text(spec)
        want = ("an integer" if spec.kind == "int" else "a finite number") + (f" {rng}" if rng else "")
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise bad(want)
        if spec.kind == "int":
            if isinstance(v, (float, np.floating)):
                raise bad(want)
            x: Any = int(v)
        else:
            try:
                x = float(v)
            except OverflowError:
                raise bad(want) from None
            if not math.isfinite(x):
                raise bad(want)
        if (spec.lo is not None and (x <= spec.lo if spec.lo_open else x < spec.lo)) or \
                (spec.hi is not None and x > spec.hi):
            raise bad(want)
        return x
    raise AssertionError(f"unknown parameter kind {spec.kind!r}")   # a bug in a Params declaration


def _specs(params_cls: type) -> dict[str, Spec]:
    return {f.name: f.metadata["spec"] for f in fields(params_cls)}


# --------------------------------------------------------------------------- the task base class
class Task:
    """One post-processor.  Subclasses set `name` and `Params` and implement `postprocess` and
    `render`; `@register` makes them known by name."""
    name: ClassVar[str] = ""
    Params: ClassVar[type] = None     # a dataclass whose fields are declared with param(...)

    def __init__(self, params: Any = None):
        params = self.Params() if params is None else params
        if not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} wants {self.Params.__name__}, "
                            f"got {type(params).__name__}")
        where = f"task {self.name!r}"
        checked = {k: check_value(s, getattr(params, k), f"{where}: {k}")
                   for k, s in _specs(self.Params).items()}
        self.params = replace(params, **checked)
        self.check(self.params, where)

    @classmethod
    def check(cls, params: Any, where: str) -> None:
        """Cross-field rules beyond each field's own range (none by default)."""

    @classmethod
    def from_json(cls, d: dict, where: str = "task") -> "Task":
        """Parse a record {"name": ..., **params}; every field is checked (PackageError)."""
        if not isinstance(d, dict):
            raise PackageError(f"{where} must be an object, got {_short(d)}")
        name = d.get("name", cls.name)
        if name != cls.name:
            raise PackageError(f"{where}.name is {_short(name)}, expected {cls.name!r}")
        specs = _specs(cls.Params)
        unknown = [k for k in d if k != "name" and k not in specs]
        if unknown:
            keys = ", ".join(_short(k) for k in unknown[:5])
            raise PackageError(f"{where}: unknown parameter(s) {keys} for task {cls.name!r} "
                               f"(known: {', '.join(specs) or 'none'})")
        values = {k: check_value(specs[k], v, f"{where}.{k}") for k, v in d.items() if k != "name"}
        return cls(cls.Params(**values))

    def to_json(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        for f in fields(self.Params):
            v = getattr(self.params, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def label(self, index: int) -> str | None:
        labels = getattr(self.params, "labels", ())
        return labels[index] if 0 <= index < len(labels) else None

    def postprocess(self, outputs: dict[str, np.ndarray], meta: FrameMeta) -> dict:
        raise NotImplementedError(f"{type(self).__name__}.postprocess")

    def render(self, image_rgb: np.ndarray, result: dict) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.render")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


def read_labels(path) -> tuple[str, ...]:
    """A labels file: one label per line (UTF-8), surrounding whitespace stripped, trailing blank
    lines dropped.  Unreadable files raise InputError."""
    from pathlib import Path

    from edgert.errors import InputError
    p = Path(path)
    try:
        if p.stat().st_size > MAX_LABELS * (MAX_LABEL_CHARS + 2):
            raise InputError(f"{p}: too large for a labels file")
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read labels ({e})") from None
    while lines and not lines[-1]:
        lines.pop()
    return tuple(lines)


def first_output(outputs: dict[str, np.ndarray], task: str) -> np.ndarray:
    if not outputs:
        raise PackageError(f"task {task!r}: the model produced no outputs")
    return np.asarray(next(iter(outputs.values())))


# --------------------------------------------------------------------------- registry
_TASKS: Registry[Task] = Registry("task", "edgert.tasks", PackageError)


def register(cls: type[Task]) -> type[Task]:
    assert cls.Params is not None and all("spec" in f.metadata for f in fields(cls.Params)), cls
    assert all(f.default is not MISSING for f in fields(cls.Params)), cls
    return _TASKS.register(cls.name, cls)


def known_tasks() -> list[str]:
    return _TASKS.known()


def get_task(name: str) -> type[Task]:
    """The task class registered as `name` (PackageError listing the known ones)."""
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise PackageError(f"task name must be a string of at most {MAX_NAME_CHARS} characters, "
                           f"got {_short(name)} (known: {', '.join(known_tasks())})")
    return _TASKS.lookup(name)


def task_of(graph) -> Task:
    """The task recorded in graph.metadata["task"]: a record {"name": ..., **params}; absent = "raw".
    A bare string is the legacy form, written before tasks were recorded: a known task name means
    that task with its defaults, any other string (free-form notes such as "test") means "raw".
    Records are validated field by field; a bad one raises PackageError naming the field."""
    rec = graph.metadata.get("task") if isinstance(graph.metadata, dict) else None
    where = f"graph {graph.name!r}: metadata.task"
    if rec is None:
        return get_task("raw")()
    try:
        if isinstance(rec, str):
            return get_task(rec if rec in known_tasks() else "raw")()
        if not isinstance(rec, dict):
            raise PackageError(f"must be an object {{\"name\": ...}} or a task name, got {_short(rec)}")
        if "name" not in rec:
            raise PackageError("has no name")
        return get_task(rec["name"]).from_json(rec, where)
    except PackageError as e:
        msg = str(e)
        raise PackageError(msg if msg.startswith(where) else f"{where}: {msg}") from None
