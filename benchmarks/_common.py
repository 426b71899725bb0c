"""Shared helpers of the OCR benchmark scripts (not a library module: scripts import it by path).

What lives here: where the real PP-OCR models are, the machine description, ORT sessions with a fixed
thread count, the ORT anchors (opset conversion, `quantize_static`), interleaved latency timing,
rendered-text inputs, accuracy metrics (mask IoU, CTC greedy decoding) and the markdown tables.

Heavy imports (onnx, onnxruntime, the converter) happen inside the functions that need them, so
`--help` stays fast.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------------
# models

MODEL_FILES = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}


def rapidocr_models_dir() -> Path:
    """The models shipped inside the `rapidocr_onnxruntime` wheel (found without importing it:
    importing it pulls in cv2 and its whole pipeline)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the real PP-OCR models come from `pip install rapidocr-onnxruntime`; "
                         "it is not installed in this environment")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_path(kind: str, override: str | None = None) -> Path:
    p = Path(override) if override else rapidocr_models_dir() / MODEL_FILES[kind]
    if not p.is_file():
        raise SystemExit(f"model not found: {p}")
    return p


def sha256_file(path: Path) -> str:
    from edgert.eval.submission import sha256_file as _sha256_file   # the one streaming file hash
    return _sha256_file(path)


# ---------------------------------------------------------------------------------------------------
# machine


def machine_info(threads: int, root: Path = Path("/")) -> dict[str, Any]:
    """CPU model, core counts, the SIMD features that decide int8 speed, library versions."""
    import onnxruntime as ort

    cpu_model, flags = platform.processor() or "unknown", set()
    cpuinfo = root / "proc/cpuinfo"        # x86 / arm Linux: "model name" / "flags" (x86), "Features" (arm)
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and cpu_model in ("", "unknown", platform.processor()):
                cpu_model = val.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(val.split())
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp",
                        "i8mm") if f in flags]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "simd": simd,
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "onnx": _version("onnx"),
        "platform": platform.platform(),
    }


def _version(mod: str) -> str:
    try:
        return __import__(mod).__version__
    except Exception:  # noqa: BLE001 - a version string is informational only
        return "n/a"


def load_note(m: dict[str, Any]) -> str:
    """Load averages at start / end, with a warning when other work shared the CPUs."""
    la0, la1 = m.get("loadavg_start"), m.get("loadavg_end")
    if not la0 or not la1:
        return ""
    text = (f"load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in la0)}, "
            f"at end {'/'.join(f'{x:.2f}' for x in la1)}")
    # the benchmark itself keeps `threads` CPUs busy; anything beyond that is someone else's work
    if max(la0[0], la1[0]) > m["threads"] + 0.5:
        text += (" - **other processes were competing for the CPUs: absolute times are inflated "
                 "and ratios noisy; compare the min column too, or rerun on an idle machine**")
    return text


def machine_line(m: dict[str, Any]) -> str:
    return (f"machine: {m['cpu_model']}, {m['usable_cpus']} usable / {m['logical_cpus']} logical CPUs, "
            f"SIMD {'+'.join(m['simd']) or 'none detected'}; {m['threads']} threads; "
            f"onnxruntime {m['onnxruntime']}, numpy {m['numpy']}, onnx {m['onnx']}, "
            f"Python {m['python']}")


# ---------------------------------------------------------------------------------------------------
# ORT anchors


def ort_session(model: str | Path | bytes, threads: int, profile_prefix: str | None = None):
    """A CPU session with `threads` intra-op threads, sequential execution, all graph optimisations
    (ORT's defaults otherwise - the anchor is ORT as people use it)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])


def convert_opset(src: Path, dst: Path, opset: int = 17) -> Path:
    """onnx.version_converter to `opset` (PP-OCR exports are opset 11/12; per-channel QDQ needs >= 13)."""
    import onnx
    from onnx import version_converter

    m = onnx.load(str(src))
    cur = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if cur < opset:
        m = version_converter.convert_version(m, opset)
    onnx.save(m, str(dst))
    return dst


class _FeedReader:
    """onnxruntime.quantization.CalibrationDataReader over a list of ready feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def ort_quantize_static(src_fp32: Path, out: Path, calib_feeds: list[dict[str, np.ndarray]],
                        workdir: Path, opset: int = 17, per_channel: bool = True,
                        activations: str = "s8") -> Path:
    """ORT's own post-training static int8 quantisation (QDQ, s8 weights, MinMax calibration;
    activations s8 - ORT's default - or u8):
    opset -> `opset`, `quant_pre_process` (folds the Constant-node weights into initializers and
    infers shapes), then `quantize_static` over the calibration feeds."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_FeedReader, CalibrationDataReader):
        pass

    conv = convert_opset(src_fp32, workdir / f"{out.stem}.opset{opset}.onnx", opset)
    pre = workdir / f"{out.stem}.pre.onnx"
    if pre.exists():      # shared between activation variants of the same model
        pre.unlink()
    # Symbolic shape inference needs sympy; without it ORT's optimiser still folds the Constant
    # weights into initializers and onnx shape inference still runs, which is all QDQ needs here.
    quant_pre_process(str(conv), str(pre), skip_symbolic_shape=not _has("sympy"))
    quantize_static(str(pre), str(out), Reader(calib_feeds), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    activation_type=QuantType.QInt8 if activations == "s8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return out


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def ort_op_profile(make_session: Callable[[Any], Any], feeds: dict[str, np.ndarray], threads: int,
                   iters: int, workdir: Path, tag: str, top: int = 8) -> list[dict[str, Any]]:
    """ORT's built-in profiler: kernel time per op type, in ms per inference, biggest first.

    `make_session(sess_options)` builds the session (so the edgert-lowered model can be profiled
    the same way as the anchors)."""
    import onnxruntime as ort

    def options():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(workdir / f"ortprof_{tag}")
        return so

    sess = make_session(options())
    for _ in range(2):                      # warm-up runs are profiled too: subtract them
        sess.run(None, feeds)
    prof = Path(sess.end_profiling())
    warm = _kernel_times(json.loads(prof.read_text()))
    sess = make_session(options())
    for _ in range(2 + iters):
        sess.run(None, feeds)
    prof2 = Path(sess.end_profiling())
    allt = _kernel_times(json.loads(prof2.read_text()))
    per_op = {k: (v - warm.get(k, 0.0)) / iters / 1000.0 for k, v in allt.items()}
    total = sum(per_op.values())
    rows = sorted(per_op.items(), key=lambda kv: -kv[1])
    out = [{"op": k, "ms": round(v, 3), "share": round(v / total, 3) if total else 0.0}
           for k, v in rows[:top]]
    out.append({"op": "(all kernels)", "ms": round(total, 3), "share": 1.0})
    return out


def _kernel_times(events: list[dict]) -> dict[str, float]:
    """Sum the `<node>_kernel_time` events of an ORT profile per op type (microseconds)."""
    per_op: dict[str, float] = {}
    for ev in events:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + float(ev.get("dur", 0))
    return per_op


def ort_path_session(path: Path) -> Callable[[Any], Any]:
    import onnxruntime as ort

    return lambda so: ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def edgert_lowered_session(pkg: Path) -> Callable[[Any], Any]:
    """The ORT session edgert's `ort` backend would build, but with our SessionOptions (profiling)."""
    import onnxruntime as ort
    from edgert.backends.ort import _default_act_u8, lower
    from edgert.package import read_package

    graph = read_package(pkg).graph()
    low = lower(graph, _default_act_u8(), ())

    def make(so):
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if low.external:
            names = list(low.external)
            so.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(low.external[n])
                                                 for n in names])
        return ort.InferenceSession(low.model, so, providers=["CPUExecutionProvider"])

    return make


# ---------------------------------------------------------------------------------------------------
# edgert


def edgert_convert(src: Path, out: Path, *, wbits: int, abits: int | None, calib_dir: Path,
                   calib_count: int, preprocess, input_shapes: dict[str, list[int]],
                   progress: bool = False, **extra) -> tuple[Any, float]:
    """`converters.convert.convert` with the options of a benchmark; returns (report, seconds)."""
    from converters.convert import convert
    from converters.options import ConvertOptions

    opts = ConvertOptions(wbits=wbits, abits=abits, calib_dir=calib_dir, calib_count=calib_count,
                          preprocess=preprocess, input_shapes=input_shapes, progress=progress,
                          **extra)
    t0 = time.perf_counter()
    report = convert(src, out, opts)
    return report, time.perf_counter() - t0


class EdgertRunner:
    """An `edgert.load` session seen as `feeds -> first output` for timing."""

    def __init__(self, pkg: Path, backend: str, threads: int):
        import edgert

        self.session = edgert.load(pkg, backend=backend, threads=threads)
        self.output = self.session.outputs[0].name

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(feeds)[self.output]


class OrtRunner:
    def __init__(self, model: str | Path | bytes, threads: int):
        self.session = ort_session(model, threads)
        self.output = self.session.get_outputs()[0].name

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output], feeds)[0]


# ---------------------------------------------------------------------------------------------------
# timing


@dataclass
class Latency:
    n: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    block: int = 0                      # samples come in rounds of `block` (0: not interleaved)
    samples_ms: list[float] = field(repr=False, default_factory=list)

    @classmethod
    def of(cls, samples_ms: Sequence[float], block: int = 0) -> "Latency":
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(n=int(a.size), p50_ms=float(np.percentile(a, 50)), p90_ms=float(np.percentile(a, 90)),
                   mean_ms=float(a.mean()), min_ms=float(a.min()), max_ms=float(a.max()), block=block,
                   samples_ms=[round(float(x), 4) for x in a])

    def round_medians(self) -> np.ndarray:
        a = np.asarray(self.samples_ms)
        return np.median(a.reshape(-1, self.block), axis=1) if self.block else a


def paired_ratio(lat: Latency, base: Latency) -> float:
    """Median over rounds of (this contestant's block median / the baseline's block median in the
    same round): load that drifts between rounds cancels out of each pair."""
    a, b = lat.round_medians(), base.round_medians()
    if a.size != b.size or a.size == 0:
        return float("nan")
    return float(np.median(a / b))


def time_interleaved(contestants: dict[str, Callable[[], Any]], *, rounds: int, block: int,
                     warmup: int = 3) -> dict[str, Latency]:
    """Latency of several contestants measured in the same run, interleaved to share the noise.

    Each contestant first gets `warmup` untimed calls.  Then `rounds` rounds; in each, every
    contestant (in a rotated order) gets one untimed call - so an ORT thread pool still spinning
    from the previous contestant, or cold caches, cost nobody a timed sample - and `block` timed
    back-to-back calls.  Samples per contestant = rounds * block."""
    names = list(contestants)
    for name in names:
        for _ in range(warmup):
            contestants[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = contestants[name]
            fn()
            for _ in range(block):
                t0 = time.perf_counter_ns()
                fn()
                samples[name].append((time.perf_counter_ns() - t0) / 1e6)
    return {n: Latency.of(s, block) for n, s in samples.items()}


def time_few(fn: Callable[[], Any], iters: int, warmup: int = 0) -> Latency:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return Latency.of(out)


# ---------------------------------------------------------------------------------------------------
# rendered text (converters/synthetic.py draws it; these adapt what it returns)


def as_rgb_u8(img) -> np.ndarray:
    """PIL image or array -> (H, W, 3) uint8 RGB."""
    a = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a[:, :, :3]


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))


def save_png(img: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(img).save(path)
    return path


def resize_pad_line(img: np.ndarray, height: int, width: int, pad_value: int = 128) -> np.ndarray:
    """PaddleOCR's rec/cls line preparation in pixel space: resize to `height` keeping the aspect
    (capped at `width`), left-align, pad the right with mid-grey.  PaddleOCR pads the *normalised*
    tensor with 0, i.e. pixel 127.5 under mean = std = 0.5; 128 is the nearest uint8 (off by 0.004
    after normalisation), so an image prepared here goes through a plain `Preprocess(size=(h, w))`
    unchanged."""
    from PIL import Image

    h, w = img.shape[:2]
    new_w = max(1, min(width, int(np.ceil(height * w / float(h)))))
    resized = np.asarray(Image.fromarray(img).resize((new_w, height), Image.BILINEAR), dtype=np.uint8)
    out = np.full((height, width, 3), pad_value, dtype=np.uint8)
    out[:, :new_w] = resized
    return out


def fill_defaults(args: Any, defaults: dict[str, tuple[Any, Any]]) -> Any:
    """Options left at None take their (full, --quick) default."""
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def rendered_lines(seed: int, n: int, height: int, max_width: int | None) -> list[np.ndarray]:
    """n rendered text lines (converters.synthetic) of `height`; with `max_width`, lines wider than
    that are redrawn (so none is squeezed into a recogniser's input)."""
    from converters.synthetic import render_text_line

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        img = as_rgb_u8(render_text_line(rng, height=height))
        if max_width is None or img.shape[1] <= max_width:
            out.append(img)
    return out


def depthwise_convs(model: Path) -> list[str]:
    """Names of the grouped Conv nodes (depthwise in PP-OCR's backbones) of an ONNX model."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    out = []
    for n in m.graph.node:
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute):
            out.append(n.name)
    return out


# ---------------------------------------------------------------------------------------------------
# accuracy


def mask_iou(a: np.ndarray, b: np.ndarray, thr: float) -> float:
    ma, mb = a > thr, b > thr
    union = np.logical_or(ma, mb).sum()
    return 1.0 if union == 0 else float(np.logical_and(ma, mb).sum() / union)


def ctc_greedy_decode(probs: np.ndarray, charset: Sequence[str]) -> str:
    """[T, C] -> text: argmax per step, collapse repeats, drop the blank (index 0)."""
    idx = probs.argmax(axis=-1)
    keep = np.ones(idx.shape, dtype=bool)
    keep[1:] = idx[1:] != idx[:-1]
    keep &= idx != 0
    return "".join(charset[i] for i in idx[keep] if i < len(charset))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (one row of the DP table at a time)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def rec_charset(model: Path) -> list[str]:
    """PP-OCR rec dictionary: the `character` metadata of the ONNX model, with the CTC blank at 0
    and a space appended at the end (PaddleOCR's `use_space_char=True`, which the 6625-class
    PP-OCRv4 head was trained with: 6623 characters + blank + space)."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    if "character" not in meta:
        raise SystemExit(f"{model} has no 'character' metadata; pass the keys file instead")
    return ["<blank>"] + meta["character"].splitlines() + [" "]


# ---------------------------------------------------------------------------------------------------
# tables and JSON


@dataclass
class Check:
    """One target: `value` compared with `target` by `op` ('<=' or '>=')."""
    what: str
    value: float | None
    target: float
    op: str
    fmt: str = "{:.3f}"
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or not np.isfinite(self.value):
            return None
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def row(self) -> list[str]:
        v = "n/a" if self.value is None else self.fmt.format(self.value) + self.unit
        t = f"{'≤' if self.op == '<=' else '≥'} {self.fmt.format(self.target)}{self.unit}"
        met = {True: "yes", False: "**NO**", None: "n/a"}[self.met]
        return [self.what, v, t, met, self.note]


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def checks_table(checks: Sequence[Check]) -> str:
    return md_table(["check", "measured", "target", "met?", "note"], [c.row() for c in checks])


def latency_table(lat: dict[str, Latency], baseline: str, extra: dict[str, dict[str, str]] | None = None
                  ) -> str:
    b = lat[baseline]
    extra = extra or {}
    cols = list(dict.fromkeys(k for v in extra.values() for k in v))     # first-seen order
    rows = []
    for name, l in lat.items():
        rows.append([name, l.n, f"{l.p50_ms:.2f}", f"{l.p90_ms:.2f}", f"{l.min_ms:.2f}",
                     f"**{l.p50_ms / b.p50_ms:.3f}×**", f"{paired_ratio(l, b):.3f}×",
                     f"{l.min_ms / b.min_ms:.3f}×"] + [extra.get(name, {}).get(c, "") for c in cols])
    return md_table(["contestant", "n", "p50 ms", "p90 ms", "min ms", f"p50 / {baseline}",
                     "paired ratio", "min ratio"] + cols, rows)


def sqnr_lines(reports: dict[str, dict], k: int = 5) -> list[str]:
    """The k layers with the lowest SQNR in each converter report (`ConvertReport.to_json()`)."""
    worst = []
    for label, rep in reports.items():
        layers = [li for li in (rep or {}).get("layers", []) if li.get("sqnr_db") is not None]
        layers.sort(key=lambda li: li["sqnr_db"])
        if layers:
            worst.append(f"- {label}: " + ", ".join(
                f"{li['name']} ({li['op']}, W{li['wbits']}) {li['sqnr_db']:.1f} dB" for li in layers[:k])
                + f"; median {np.median([li['sqnr_db'] for li in layers]):.1f} dB over "
                f"{len(layers)} layers")
    return (["lowest per-layer SQNR (converter's report, on calibration inputs):"] + worst + [""]
            if worst else [])


def write_json(path: str | Path, obj: Any) -> None:
    def default(o):
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        if hasattr(o, "__dataclass_fields__"):
            return asdict(o)
        return str(o)

    Path(path).write_text(json.dumps(obj, indent=2, default=default, ensure_ascii=False) + "\n")


def mb(n_bytes: int | float) -> float:
    """Megabytes as 10^6 bytes (the unit of the size targets)."""
    return n_bytes / 1e6


def open_workdir(workdir: str | None, prefix: str) -> tuple[Path, Callable[[], None]]:
    """(folder, cleanup): `workdir` kept as given, else a temporary folder that cleanup() removes."""
    if workdir:
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        return work, lambda: None
    import tempfile
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    return Path(tmp.name), tmp.cleanup


def run_record(script: str, args: Any, targets: dict, **extra: Any) -> dict[str, Any]:
    """The JSON record every benchmark starts from: machine, load, config, targets."""
    machine = machine_info(args.threads)
    machine["loadavg_start"] = os.getloadavg()
    return {"script": script, "quick": args.quick, "machine": machine,
            "config": {k: v for k, v in vars(args).items() if k != "json"}, "targets": targets,
            **extra, "errors": {}}
