"""`load_ocr(path) -> OcrPipeline`: PP-OCR text spotting (det -> cls -> rec) from one package.

The package holds three graphs named "det", "cls", "rec" and two EXTRA sections, `ocr/config`
and `ocr/keys` (edgert/ocr/config.py).  It is read once; each graph is checked with
`edgert.graphcheck.check_graph` before a backend prepares it (as `edgert.load` does) and each run
goes through the graph's shape budget (`GraphPlan.check_feeds`).

    page (RGB) -> page guards -> det (short side 736, multiple of 32) -> DB boxes in reading
      order (edgert.tasks.text_detection) -> perspective crops -> cls (3x48x192, batches of 6;
      turn 180° when sure) -> rec (3x48xW, width-sorted batches of 6) -> CTC greedy decode
      -> lines with score >= text_score

An image whose det input would exceed the memory budget (e.g. a 3000x200 strip: short side 200 ->
736 makes the long side ~11000, as RapidOCR would too) raises InputError before anything runs.

This mirrors RapidOCR (rapidocr-onnxruntime 1.4.4) step for step; see /work/shared/ANCHORS.md."""
from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgert import format as F
from edgert.errors import InputError, PackageError
from edgert.ir import Graph, Preprocess
from edgert.ocr import stages as S
from edgert.ocr.config import (CONFIG_SECTION, GRAPH_NAMES, KEYS_SECTION, ClsConfig, DetConfig,
                               OcrConfig, RecConfig, charset, parse_config, parse_keys)


def db_params(cfg: DetConfig):
    """The DB post-process parameters (edgert.tasks.text_detection) of a det config."""
    from edgert.tasks.text_detection import TextDetection
    return TextDetection.Params(thresh=cfg.thresh, box_thresh=cfg.box_thresh,
                                unclip_ratio=cfg.unclip_ratio, max_candidates=cfg.max_candidates,
                                use_dilation=cfg.use_dilation, score_mode=cfg.score_mode)


# -- results --------------------------------------------------------------------------------------


@dataclass
class Line:
    text: str
    score: float
    box: list[list[float]]           # 4 corners [x, y]: top-left, top-right, bottom-right, bottom-left

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "score": round(float(self.score), 5),
                "box": [[round(float(x), 2), round(float(y), 2)] for x, y in self.box]}


@dataclass
class OcrResult:
    lines: list[Line] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)   # det (incl. crops), cls, rec, total

    @property
    def text(self) -> str:
        return "\n".join(ln.text for ln in self.lines)

    def to_json(self) -> dict[str, Any]:
        return {"lines": [ln.to_json() for ln in self.lines],
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}}


# -- one model ------------------------------------------------------------------------------------


class Stage:
    """One checked, prepared graph with one input and one output: `stage(x) -> y`."""

    def __init__(self, graph: Graph, executable, plan, backend: str):
        self.graph, self._exe, self.plan, self.backend = graph, executable, plan, backend
        self.input = graph.inputs[0].name
        self.output = graph.outputs[0].name
        self.preprocess: Preprocess = graph.preprocess or S.DEFAULT_PREPROCESS

    @classmethod
    def prepare(cls, graph: Graph, backend: str = "auto", threads: int = 0,
                max_value_bytes: int = F.DEFAULT_MAX_VALUE_BYTES) -> "Stage":
        from edgert.backends.base import BackendOptions, get_backend
        from edgert.graphcheck import CheckOptions, check_graph

        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise PackageError(f"graph {graph.name!r}: an OCR stage has one input and one output")
        plan = check_graph(graph, CheckOptions(max_value_bytes=max_value_bytes))
        be = get_backend(backend)
        exe = be.prepare(graph, BackendOptions(threads=threads))
        return cls(graph, exe, plan, be.name)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        feeds = {self.input: np.ascontiguousarray(x, np.float32)}
        self.plan.check_feeds(feeds)           # every value of this run within the budget
        return self._exe.run(feeds)[self.output]


def _static_dim(vi, axis: int) -> int | None:
    if not -len(vi.shape) <= axis < len(vi.shape):
        return None
    d = vi.shape[axis]
    return d if isinstance(d, int) and d >= 0 else None


def check_bundle(graphs: dict[str, Graph], config: OcrConfig, keys: list[str], where: str) -> None:
    """The graphs a bundle needs are there, and the config and keys fit them wherever their dims
    are static (the converter runs this before writing, `load_ocr` before preparing)."""
    want = [n for n in GRAPH_NAMES if n != "cls" or config.cls.enabled]
    missing = [n for n in want if n not in graphs]
    if missing:
        raise PackageError(f"{where}: an OCR bundle needs graphs {', '.join(want)}; missing "
                           f"{', '.join(missing)} (have {', '.join(graphs) or 'none'})")
    for name in want:
        g = graphs[name]
        if len(g.inputs) != 1 or len(g.outputs) != 1:
            raise PackageError(f"{where}: graph {name!r} must have one input and one output, got "
                               f"{len(g.inputs)} and {len(g.outputs)}")
        shape = g.inputs[0].shape
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise PackageError(f"{where}: graph {name!r} input must be [N, 3, H, W], got {shape}")
        pp = g.preprocess
        if pp is not None and (pp.layout != "nchw" or pp.channels not in ("rgb", "bgr")):
            raise PackageError(f"{where}: graph {name!r} preprocess must be nchw with rgb or bgr "
                               f"channels, got {pp.layout} {pp.channels}")
    for name, shape in (("cls", config.cls.image_shape), ("rec", config.rec.image_shape)):
        if name not in want:
            continue
        vi = graphs[name].inputs[0]
        h, w = _static_dim(vi, 2), _static_dim(vi, 3)
        if h is not None and h != shape[1]:
            raise PackageError(f"{where}: ocr/config {name}.image_shape {list(shape)} does not fit "
                               f"graph {name!r} input {vi.shape}")
        if name == "cls" and w is not None and w != shape[2]:
            raise PackageError(f"{where}: ocr/config cls.image_shape {list(shape)} does not fit "
                               f"graph 'cls' input {vi.shape}")
        if name == "rec" and w is not None:
            raise PackageError(f"{where}: graph 'rec' has a fixed input width {w}; recognition "
                               f"needs a dynamic width")
    n_rec = _static_dim(graphs["rec"].outputs[0], -1)
    n_chars = len(charset(keys, config.rec))
    if n_rec is not None and n_rec != n_chars:
        raise PackageError(f"{where}: ocr/keys gives {n_chars} classes (blank + {len(keys)} keys"
                           f"{' + space' if config.rec.use_space_char else ''}) but graph 'rec' "
                           f"outputs {n_rec}")
    if "cls" in want:
        n_cls = _static_dim(graphs["cls"].outputs[0], -1)
        if n_cls is not None and n_cls != len(config.cls.labels):
            raise PackageError(f"{where}: ocr/config cls.labels has {len(config.cls.labels)} labels "
                               f"but graph 'cls' outputs {n_cls}")


# -- the steps (module functions: the converter's calibration cascade runs them too) --------------


def detect(det: Stage, work: np.ndarray, cfg: DetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Work image -> (boxes (K, 4, 2) in work coordinates, in reading order; det scores)."""
    x = S.det_input(work, cfg, det.preprocess)
    y = det(x)
    if y.ndim != 4 or y.shape[0] != 1 or y.shape[1] < 1:
        raise PackageError(f"graph 'det' output has shape {y.shape}; want [1, 1, H, W]")
    from edgert.tasks.text_detection import db_boxes
    # clockwise corners clipped to the image, sides <= 3 px dropped, in reading order
    return db_boxes(y[0, 0], work.shape[:2], db_params(cfg))


def classify(cls: Stage | None, crops: list[np.ndarray], cfg: ClsConfig
             ) -> tuple[list[np.ndarray], list[tuple[str, float]]]:
    """Turn crops the direction classifier reads as upside down (label "180", score above
    cls.thresh) by 180°; returns the crops and (label, score) per crop."""
    out = list(crops)
    res: list[tuple[str, float]] = [("", 0.0)] * len(crops)
    if cls is None:
        return out, res
    for idx, x in S.cls_batches(crops, cfg, cls.preprocess):
        p = cls(x).reshape(len(idx), -1)
        if p.shape[1] != len(cfg.labels):
            raise PackageError(f"graph 'cls' gave {p.shape[1]} classes; ocr/config has "
                               f"{len(cfg.labels)} labels")
        best = p.argmax(axis=1)
        for k, i in enumerate(idx):
            label, score = cfg.labels[best[k]], float(p[k, best[k]])
            res[i] = (label, score)
            if label == "180" and score > cfg.thresh:     # RapidOCR: strictly above
                out[i] = np.ascontiguousarray(out[i][::-1, ::-1])
    return out, res


def recognize(rec: Stage, crops: list[np.ndarray], cfg: RecConfig, chars: list[str]
              ) -> list[tuple[str, float]]:
    res: list[tuple[str, float]] = [("", 0.0)] * len(crops)
    for idx, x in S.rec_batches(crops, cfg, rec.preprocess):
        p = rec(x)
        if p.ndim != 3 or p.shape[0] != len(idx) or p.shape[2] != len(chars):
            raise PackageError(f"graph 'rec' output has shape {p.shape}; want [{len(idx)}, T, "
                               f"{len(chars)}]")
        for k, r in zip(idx, S.ctc_greedy(p, chars)):
            res[k] = r
    return res


# -- the pipeline ---------------------------------------------------------------------------------


class OcrPipeline:
    """`pipeline(image_rgb) -> OcrResult`.  Stages are public for tools that need one step
    (the converter's calibration cascade uses `detect` / `crops` / `classify`)."""

    def __init__(self, det: Stage, cls: Stage | None, rec: Stage, config: OcrConfig,
                 keys: list[str], package=None):
        self.det, self.cls, self.rec = det, cls, rec
        self.config = config
        self.keys = keys
        self.charset = charset(keys, config.rec)
        self.package = package

    @classmethod
    def from_graphs(cls, graphs: dict[str, Graph], config: OcrConfig, keys: list[str],
                    backend: str = "auto", threads: int = 0, package=None, where: str = "graphs",
                    max_value_bytes: int = F.DEFAULT_MAX_VALUE_BYTES) -> "OcrPipeline":
        check_bundle(graphs, config, keys, where)
        st = {n: Stage.prepare(graphs[n], backend, threads, max_value_bytes)
              for n in GRAPH_NAMES if n != "cls" or config.cls.enabled}
        return cls(st["det"], st.get("cls"), st["rec"], config, keys, package)

    @property
    def backend(self) -> str:
        return self.det.backend

    def detect(self, work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return detect(self.det, work, self.config.det)

    def crops(self, work: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
        return [S.crop_line(work, b) for b in boxes]

    def classify(self, crops: list[np.ndarray]) -> tuple[list[np.ndarray], list[tuple[str, float]]]:
        return classify(self.cls, crops, self.config.cls)

    def recognize(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        return recognize(self.rec, crops, self.config.rec, self.charset)

    def __call__(self, image: np.ndarray) -> OcrResult:
        img = _check_image(image)
        t0 = time.perf_counter()
        work, page = S.prepare_page(img, self.config.page)
        boxes, _ = self.detect(work)
        crops = self.crops(work, boxes)
        t1 = time.perf_counter()
        crops, _ = self.classify(crops)
        t2 = time.perf_counter()
        rec = self.recognize(crops)
        t3 = time.perf_counter()
        orig = page.to_original(boxes)
        lines = [Line(text, score, orig[i].tolist()) for i, (text, score) in enumerate(rec)
                 if score >= self.config.rec.text_score]
        ms = lambda a, b: (b - a) * 1e3  # noqa: E731
        return OcrResult(lines, {"det": ms(t0, t1), "cls": ms(t1, t2), "rec": ms(t2, t3),
                                 "total": ms(t0, t3)})

    def close(self) -> None:
        close = getattr(self.package, "close", None)
        if close:
            close()

    def __enter__(self) -> "OcrPipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"OCR wants an (H, W, 3) uint8 RGB image, got {desc}")
    return np.ascontiguousarray(image)


# -- loading --------------------------------------------------------------------------------------


@dataclass
class OcrLoadOptions:
    backend: str = "auto"
    threads: int = 0
    require_signature: bool = False
    public_key: bytes | None = None
    verify_hashes: bool = True
    max_value_bytes: int = F.DEFAULT_MAX_VALUE_BYTES


def load_ocr(path: str | Path, backend: str = "auto", threads: int = 0,
             options: OcrLoadOptions | None = None) -> OcrPipeline:
    """Read an OCR bundle once, validate its config and keys, check and prepare its three graphs."""
    from edgert.package import ReadOptions, read_package

    opts = options or OcrLoadOptions(backend=backend, threads=threads)
    p = Path(path)
    pkg = read_package(p, ReadOptions(verify_hashes=opts.verify_hashes,
                                      require_signature=opts.require_signature,
                                      public_key=opts.public_key))
    try:
        names = pkg.extra_names()
        for sec in (CONFIG_SECTION, KEYS_SECTION):
            if sec not in names:
                raise PackageError(f"{p}: not an OCR bundle (no {sec!r} section; extra sections: "
                                   f"{', '.join(names) or 'none'})")
        config = parse_config(pkg.extra(CONFIG_SECTION), f"{p}: {CONFIG_SECTION}")
        keys = parse_keys(pkg.extra(KEYS_SECTION), f"{p}: {KEYS_SECTION}")
        pipe = OcrPipeline.from_graphs(dict(pkg.graphs), config, keys, opts.backend, opts.threads,
                                       package=pkg, where=str(p),
                                       max_value_bytes=opts.max_value_bytes)
    except BaseException:
        pkg.close()
        raise
    return pipe


def is_ocr_package(pkg_or_path) -> bool:
    """True when a package (a `Package` or a path) has the `ocr/config` section.  For a path only
    the header and section table are read (no hashing): a cheap probe for `edgert run`, which then
    calls `load_ocr` to validate everything.  Unreadable or non-package files give False."""
    if hasattr(pkg_or_path, "extra_names"):
        return CONFIG_SECTION in pkg_or_path.extra_names()
    try:
        with open(os.fspath(pkg_or_path), "rb") as f:
            head = f.read(F.HEADER_SIZE)
            if len(head) != F.HEADER_SIZE:
                return False
            magic, major, _, _, _, _, table_off, count, entry_size, _, _ = F.HEADER.unpack(head)
            if magic != F.MAGIC or major != F.FORMAT_MAJOR or entry_size != F.SECTION_ENTRY_SIZE \
                    or not 1 <= count <= F.MAX_SECTIONS:
                return False
            f.seek(table_off)
            table = f.read(count * F.SECTION_ENTRY_SIZE)
            if len(table) != count * F.SECTION_ENTRY_SIZE:
                return False
    except (OSError, TypeError, ValueError, struct.error):
        return False
    want = CONFIG_SECTION.encode("ascii")
    for i in range(count):
        name, kind = F.SECTION_ENTRY.unpack_from(table, i * F.SECTION_ENTRY_SIZE)[:2]
        if kind == int(F.SectionKind.EXTRA) and name.rstrip(b"\x00") == want:
            return True
    return False


__all__ = ["OcrPipeline", "OcrResult", "Line", "Stage", "load_ocr", "is_ocr_package", "OcrLoadOptions",
           "check_bundle", "detect", "classify", "recognize", "db_params"]
