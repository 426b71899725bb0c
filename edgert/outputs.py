"""Inputs and outputs of `edgert run`: read images / arrays, time one run, write npy + json + PNG maps."""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgert.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    latency_ms: float


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"input not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"cannot read {path} as a .npy array: {e}") from None


def read_inputs(session, items: list[Path]) -> tuple[dict[str, np.ndarray], dict]:
    """Each item is an image (preprocessed as recorded in the package), a .npy, or NAME=file.npy."""
    from edgert.preprocess import preprocess_file

    feeds: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    names = [i.name for i in session.inputs]
    for pos, item in enumerate(items):
        text = str(item)
        name, sep, rest = text.partition("=")
        if sep and name in names:
            path = Path(rest)
        else:
            if pos >= len(names):
                raise InputError(f"the model has {len(names)} input(s) {names}; got {len(items)} files")
            name, path = names[pos], Path(text)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            pp = session.preprocess
            if pp is None:
                raise InputError("this package records no image preprocessing; feed a .npy instead")
            feeds[name] = preprocess_file(path, pp)
        elif path.suffix.lower() == ".npy":
            feeds[name] = _load_npy(path)
        else:
            raise InputError(f"unsupported input file {path} (want an image or .npy)")
        source[name] = str(path)
    return feeds, source


def timed_run(session, feeds: dict[str, np.ndarray]) -> RunResult:
    feeds = session.check_feeds(feeds)
    t0 = time.perf_counter_ns()
    outs = session._exe.run(feeds)
    return RunResult(outs, (time.perf_counter_ns() - t0) / 1e6)


def _stats(a: np.ndarray) -> dict:
    d = {"shape": list(a.shape), "dtype": str(a.dtype)}
    if a.size and a.dtype.kind in "fiu":
        af = a.astype(np.float64)
        d.update(min=float(af.min()), max=float(af.max()), mean=float(af.mean()))
    return d


def summarize(session, result: RunResult, source: dict) -> dict:
    summary = {"backend": session.backend, "latency_ms": round(result.latency_ms, 3),
               "inputs": source, "outputs": {k: _stats(v) for k, v in result.outputs.items()}}
    for k, v in result.outputs.items():
        if v.ndim == 2 and v.shape[0] <= 16 and v.shape[1] <= 100000:   # classifier-like
            summary["outputs"][k]["top1"] = [int(i) for i in v.argmax(axis=1)]
    return summary


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "output"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def map_image(a: np.ndarray) -> np.ndarray | None:
    """An (H, W) uint8 picture of a spatial output map ([N,1,H,W], [1,H,W] or [H,W]), else None."""
    x = np.asarray(a)
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2 or min(x.shape) < 8 or x.dtype.kind != "f":
        return None
    lo, hi = float(x.min()), float(x.max())
    if 0.0 <= lo and hi <= 1.0:       # probabilities: keep the absolute scale
        lo, hi = 0.0, 1.0
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((x - lo) * scale, 0, 255).astype(np.uint8)


def write_outputs(out_dir: Path, outputs: dict[str, np.ndarray], summary: dict) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, arr in outputs.items():
        import io
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        p = out_dir / f"{_safe(name)}.npy"
        _atomic_write(p, buf.getvalue())
        written.append(str(p))
        img = map_image(arr)
        if img is not None:
            try:
                from PIL import Image
            except ImportError:
                continue
            png = io.BytesIO()
            Image.fromarray(img).save(png, format="PNG")
            p = out_dir / f"{_safe(name)}.png"
            _atomic_write(p, png.getvalue())
            written.append(str(p))
    p = out_dir / "result.json"
    _atomic_write(p, json.dumps({**summary, "files": written + [str(p)]}, indent=2).encode())
    written.append(str(p))
    return written


def format_summary(summary: dict) -> str:
    lines = [f"backend {summary['backend']}   latency {summary['latency_ms']:.2f} ms"]
    for name, st in summary["outputs"].items():
        line = f"  {name}: {'x'.join(map(str, st['shape']))} {st['dtype']}"
        if "min" in st:
            line += f"  min {st['min']:.4g} max {st['max']:.4g} mean {st['mean']:.4g}"
        if "top1" in st:
            line += f"  top-1 {st['top1']}"
        lines.append(line)
    for f in summary.get("files", []):
        lines.append(f"  wrote {f}")
    return "\n".join(lines)
