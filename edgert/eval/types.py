"""The eval contract: options, the result record and verdicts (JSON-serialisable, versioned)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RESULT_SCHEMA = 1
TASKS = ("segmentation", "classification")
TIMED_REGIONS = ("end-to-end", "inference")
VERDICTS = ("ok", "timeout", "crashed", "invalid")
SUBMISSION_KINDS = ("package", "onnx", "tflite")


@dataclass(frozen=True)
class EvalOptions:
    task: str = "segmentation"
    classes: int = 14
    warmup: int = 5                      # images run first, untimed and unscored (LPCVC 2023 used 15)
    timed_region: str = "end-to-end"     # decode + preprocess + inference + postprocess; or "inference"
    score: str = "lpcvc2023"             # a name in edgert.eval.scoring
    backend: str = "auto"                # for packages: auto | ort | numpy
    threads: int = 0
    limit: int = 0                       # 0 = every image
    robustness: bool = False
    overlays: int = 4                    # prediction overlays in the report
    energy: bool = True                  # measure J/image when the device has a sensor
    # preprocessing for plain ONNX/TFLite submissions (packages carry their own)
    size: tuple[int, int] | None = None  # model input HxW; None = the dataset's own resolution
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)   # on [0,1]-scaled RGB
    layout: str = ""                     # "" = nchw for ONNX, nhwc for TFLite; "nchw" | "nhwc"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Limits:
    """What the child process gets (isolation.py applies them)."""
    timeout_s: float = 900.0             # wall clock for the whole evaluation (LPCVC 2023: 900 s)
    address_space_mb: int = 8192         # RLIMIT_AS
    cpu_time_s: int = 3600               # RLIMIT_CPU
    open_files: int = 256                # RLIMIT_NOFILE
    no_network: bool = True              # unshare -n where the OS allows it
    read_only_dataset: bool = True       # a read-only bind mount where the OS allows it


@dataclass
class Verdict:
    status: str                          # one of VERDICTS
    reason: str = ""                     # one line; for crashed: exit code and last stderr lines
    exit_code: int | None = None
    stderr_tail: list[str] = field(default_factory=list)
    isolation: list[str] = field(default_factory=list)   # what was applied: rlimits, netns, ro-dataset

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
