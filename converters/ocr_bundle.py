"""`convert_ocr(det, cls, rec, out, options) -> OcrConvertReport`: three PP-OCR ONNX models -> one
quantized OCR bundle that `edgert.ocr.load_ocr` runs.

Each model goes through the ordinary converter (`converters.convert.quantize_model`), with its own
weight / activation bits.  Calibration cascades, so every stage is calibrated on what it will see:

    pages --(page guards, det resize)--> det calibration
    det (quantized by default, or float: `cascade`) on the same pages -> boxes -> text-line crops
    crops --(cls batches)--> cls calibration;  cls turns upside-down crops
    turned crops --(rec batches, width-sorted)--> rec calibration

The image-side steps are `edgert.ocr.stages`, the functions the runtime uses.  The package holds
graphs "det", "cls", "rec" and two EXTRA sections: `ocr/keys` (the recogniser's dictionary, from
the rec model's `character` metadata or a keys file) and `ocr/config` (thresholds and shapes,
RapidOCR's defaults unless changed)."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from converters.calibration import IMAGE_SUFFIXES
from converters.convert import ConvertReport, QuantizeResult, check_supported, quantize_model
from converters.options import ConvertOptions
from edgert.errors import CalibrationError, ConversionError, EdgertError, InputError, PackageError
from edgert.ir import Graph, Preprocess
from edgert.ocr import stages as S
from edgert.ocr.config import CONFIG_SECTION, KEYS_SECTION, OcrConfig, keys_to_bytes, parse_keys
from edgert.ocr.pipeline import Stage, check_bundle, classify, detect

CASCADES = ("quantized", "float")
STAGES = ("det", "cls", "rec")


@dataclass
class StageOptions:
    """Per-model overrides; None inherits the bundle's value."""
    wbits: int | None = None
    abits: int | None = None
    weight_only: bool = False                  # no activation quantization in this model
    keep_float: set[str] = field(default_factory=set)          # node / output names or globs
    layer_bits: dict[str, int] = field(default_factory=dict)
    avg_bits: float | None = None              # mixed precision under a budget (converters/mixed)
    size_budget: str | None = None
    outlier: str | None = None                 # converters/outliers pass (os+ | os-gamma)
    recon: str | None = None                   # converters/recon pass (adaround | qdrop)


@dataclass
class OcrConvertOptions:
    wbits: int = 8
    abits: int | None = 8                      # None: weight-only everywhere
    det: StageOptions = field(default_factory=StageOptions)
    cls: StageOptions = field(default_factory=StageOptions)
    rec: StageOptions = field(default_factory=StageOptions)
    # calibration
    calib_dir: Path | None = None              # page images
    calib_count: int = 16                      # pages used (sorted by name)
    det_calib_side: int | None = None          # det short side while calibrating and cropping;
                                               # None = config.det.limit_side_len (the runtime's)
    max_calib_lines: int = 96                  # text-line crops kept for cls / rec calibration
    cascade: str = "quantized"                 # crops come from the "quantized" or "float" stages
    observer: str = "minmax"
    sqnr_batches: int = 1
    backend_for_calibration: str = "auto"
    # weights
    granularity: str = "channel"
    group_size: int = 128
    method: str = "auto"
    mixed_precision: str = "auto"
    # bundle
    keys_path: Path | None = None              # dictionary file (else the rec model's metadata)
    config: OcrConfig = field(default_factory=OcrConfig)
    compress: str = "zstd"
    signing_key: bytes | None = None
    progress: bool = True
    log: Callable[[str], None] | None = None   # one line per step (the CLI prints them)

    def stage(self, name: str) -> StageOptions:
        if name not in STAGES:
            raise ConversionError(f"unknown OCR stage {name!r} (known: {', '.join(STAGES)})")
        return getattr(self, name)

    def convert_options(self, name: str, preprocess: Preprocess) -> ConvertOptions:
        st = self.stage(name)
        abits = None if st.weight_only else (st.abits if st.abits is not None else self.abits)
        return ConvertOptions(
            wbits=st.wbits if st.wbits is not None else self.wbits, abits=abits,
            granularity=self.granularity, group_size=self.group_size, method=self.method,
            mixed_precision=self.mixed_precision, layer_bits=dict(st.layer_bits),
            keep_float=set(st.keep_float), observer=self.observer, sqnr_batches=self.sqnr_batches,
            backend_for_calibration=self.backend_for_calibration, preprocess=preprocess,
            compress=self.compress, progress=self.progress, avg_bits=st.avg_bits, size_budget=st.size_budget,
            outlier=st.outlier, recon=st.recon)

    def validate(self) -> None:
        for name in STAGES:
            self.convert_options(name, S.DEFAULT_PREPROCESS).quantize_options()
        if self.cascade not in CASCADES:
            raise ConversionError(f"cascade must be one of {', '.join(CASCADES)}, got {self.cascade!r}")
        if self.calib_count < 1 or self.max_calib_lines < 1:
            raise ConversionError("calib_count and max_calib_lines must be >= 1")
        if self.det_calib_side is not None and not 32 <= self.det_calib_side <= 8192:
            raise ConversionError(f"det_calib_side must be 32..8192, got {self.det_calib_side}")
        self.config.validate("OcrConvertOptions.config")


@dataclass
class OcrConvertReport:
    out_path: Path
    package_bytes: int
    stages: dict[str, ConvertReport]
    keys: int
    calib_pages: int = 0
    calib_lines: int = 0
    cascade: str = "quantized"
    signed: bool = False
    total_s: float = 0.0

    @property
    def source_bytes(self) -> int:
        return sum(r.source_bytes for r in self.stages.values())

    def summary_lines(self) -> list[str]:
        ratio = self.source_bytes / self.package_bytes if self.package_bytes else 0.0
        out = [f"package {self.out_path}  {self.package_bytes:,} B  ({ratio:.2f}x smaller than the "
               f"{self.source_bytes:,} B of ONNX){'  signed' if self.signed else ''}",
               f"calibration: {self.calib_pages} pages -> {self.calib_lines} text lines "
               f"({self.cascade} cascade); {self.keys} keys; total {self.total_s:.1f} s"]
        for name, r in self.stages.items():
            q = r.options
            bits = f"W{q.wbits}" + (f"A{q.abits}" if q.abits else " weight-only")
            out.append(f"  {name}: {bits}  {r.source_bytes:,} B -> {r.package_bytes:,} B  "
                       f"calibration {r.calibration_batches} batches {r.calibration_s:.1f} s")
        return out

    def format_table(self) -> str:
        parts = []
        for name, r in self.stages.items():
            parts.append(f"== {name} ==")
            parts.append(r.format_table())
            parts.append("")
        return "\n".join(parts + self.summary_lines())

    def to_json(self) -> dict:
        return {"package": str(self.out_path), "package_bytes": self.package_bytes,
                "source_bytes": self.source_bytes, "keys": self.keys, "calib_pages": self.calib_pages,
                "calib_lines": self.calib_lines, "cascade": self.cascade, "signed": self.signed,
                "total_s": round(self.total_s, 3),
                "stages": {n: r.to_json() for n, r in self.stages.items()}}


# -- inputs ---------------------------------------------------------------------------------------


def read_keys(rec_path: Path, keys_path: Path | None) -> list[str]:
    """The dictionary: a keys file (UTF-8, one entry per line, as RapidOCR's rec_keys_path) or the
    rec model's `character` metadata (one entry per line, as RapidOCR's get_character_list)."""
    if keys_path is not None:
        try:
            raw = Path(keys_path).read_bytes()
        except OSError as e:
            raise ConversionError(f"cannot read keys file {keys_path}: {e.strerror or e}") from None
        try:
            lines = [ln.rstrip("\r") for ln in raw.decode("utf-8").split("\n")]
        except UnicodeDecodeError as e:
            raise ConversionError(f"keys file {keys_path} is not UTF-8 ({e.reason})") from None
        if lines and lines[-1] == "":
            lines.pop()
        keys, where = lines, str(keys_path)
    else:
        import onnx
        try:
            m = onnx.load(str(rec_path), load_external_data=False)
        except Exception as e:   # protobuf DecodeError and friends
            raise ConversionError(f"cannot parse ONNX model {rec_path}: {e}") from None
        meta = {p.key: p.value for p in m.metadata_props}
        if "character" not in meta:
            raise ConversionError(f"rec model {rec_path} has no 'character' metadata: pass the "
                                  f"dictionary with --keys FILE")
        keys, where = meta["character"].splitlines(), f"{rec_path} metadata 'character'"
    try:
        return parse_keys(keys_to_bytes(keys, where), where)
    except EdgertError as e:
        raise ConversionError(str(e)) from None


def _calibration_pages(folder: Path, count: int) -> list[np.ndarray]:
    from edgert.preprocess import load_image
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in calibration folder {folder}")
    pages = []
    for p in files[:count]:
        try:
            pages.append(load_image(p))
        except InputError as e:
            raise CalibrationError(f"unusable calibration image {p}: {e}") from None
    return pages


def _import(path: Path, name: str, shape: list) -> Graph:
    from converters.onnx_import import ImportOptions, import_onnx
    g = import_onnx(path, ImportOptions(input_shapes=None, name=name))
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise ConversionError(f"{name} model {path}: want one input and one output, got "
                              f"{[v.name for v in g.inputs]} -> {[v.name for v in g.outputs]}")
    g = import_onnx(path, ImportOptions(input_shapes={g.inputs[0].name: shape}, name=name))
    check_supported(g)
    return g


def _check_sources(det: Path, cls: Path | None, rec: Path) -> None:
    for name, p in (("det", det), ("cls", cls), ("rec", rec)):
        if p is not None and not Path(p).is_file():
            raise ConversionError(f"{name} model not found: {p}")


# -- the cascade ----------------------------------------------------------------------------------


@dataclass
class _Built:
    float_graph: Graph
    result: QuantizeResult
    source: Path
    seconds: float = 0.0

    def graph_for(self, cascade: str) -> Graph:
        return self.result.graph if cascade == "quantized" else self.float_graph


class _MapReader:
    """A re-iterable calibration reader that builds each batch when asked (det inputs of whole
    pages are large: nothing but the source images is kept between batches)."""

    def __init__(self, items: list, make: Callable[[object], np.ndarray], input_name: str):
        self.items, self.make, self.input_name = items, make, input_name

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        for it in self.items:
            yield {self.input_name: self.make(it)}


def _quantize(name: str, src: Path, graph: Graph, items: list, make: Callable[[object], np.ndarray],
              opts: OcrConvertOptions, pp: Preprocess) -> _Built:
    copts = opts.convert_options(name, pp)
    reader = _MapReader(items, make, graph.inputs[0].name) if items else None
    t0 = time.perf_counter()
    result = quantize_model(graph, copts, reader)      # leaves `graph` float (sets its preprocess)
    result.graph.name = name
    return _Built(graph, result, src, time.perf_counter() - t0)


def _stage(graph: Graph, opts: OcrConvertOptions) -> Stage:
    return Stage.prepare(graph, opts.backend_for_calibration)


def convert_ocr(det: str | Path, cls: str | Path | None, rec: str | Path, out: str | Path,
                options: OcrConvertOptions | None = None) -> OcrConvertReport:
    """Convert the three PP-OCR models into one OCR bundle (cls None: a bundle without the direction
    classifier, `cls.enabled` false)."""
    from converters.package_writer import WriteOptions, write_package

    opts = options or OcrConvertOptions()
    t0 = time.perf_counter()
    det, rec, out = Path(det), Path(rec), Path(out)
    cls = Path(cls) if cls is not None else None
    cfg = copy.deepcopy(opts.config)
    if cls is None:
        cfg.cls.enabled = False
    opts.validate()
    _check_sources(det, cls, rec)
    say = opts.log or (lambda s: None)
    keys = read_keys(rec, opts.keys_path)

    needs_act = any(opts.convert_options(n, S.DEFAULT_PREPROCESS).abits is not None
                    for n in STAGES if n != "cls" or cls is not None)
    pages: list[np.ndarray] = []
    if opts.calib_dir is not None:
        pages = _calibration_pages(opts.calib_dir, opts.calib_count)
    elif needs_act:
        raise CalibrationError("activation quantization needs calibration pages: give a folder of "
                               "page images (--calib DIR), or use weight-only stages")

    det_cfg = copy.deepcopy(cfg.det)
    if opts.det_calib_side is not None:
        det_cfg.limit_side_len = opts.det_calib_side
    _, ch, cw = cfg.cls.image_shape
    _, rh, _ = cfg.rec.image_shape
    pps = {"det": S.DEFAULT_PREPROCESS,
           "cls": Preprocess(size=(ch, cw), mean=(0.5,) * 3, std=(0.5,) * 3, channels="bgr"),
           "rec": Preprocess(size=None, mean=(0.5,) * 3, std=(0.5,) * 3, channels="bgr")}

    say("importing the models")
    g_det = _import(det, "det", ["n", 3, "h", "w"])
    g_cls = _import(cls, "cls", ["n", 3, ch, cw]) if cls is not None else None
    g_rec = _import(rec, "rec", ["n", 3, rh, "w"])
    floats = {g.name: g for g in (g_det, g_cls, g_rec) if g is not None}
    try:                    # before any calibration: e.g. a keys file that does not fit rec
        check_bundle(floats, cfg, keys, "the OCR models")
    except PackageError as e:
        raise ConversionError(str(e)) from None

    # det: pages through the page guards and the det resize
    works = [S.prepare_page(p, cfg.page)[0] for p in pages]
    say(f"det: calibrating on {len(works)} pages (short side {det_cfg.limit_side_len})")
    built = {"det": _quantize("det", det, g_det, works,
                              lambda w: S.det_input(w, det_cfg, pps["det"]), opts, pps["det"])}

    # the cascade: text lines found by det on the same pages
    crops: list[np.ndarray] = []
    if pages:
        det_stage = _stage(built["det"].graph_for(opts.cascade), opts)
        for w in works:
            boxes, _ = detect(det_stage, w, det_cfg)
            crops.extend(S.crop_line(w, b) for b in boxes)
        if len(crops) > opts.max_calib_lines:      # spread the kept lines over all pages
            pick = np.linspace(0, len(crops) - 1, opts.max_calib_lines).round().astype(int)
            crops = [crops[i] for i in pick]
        say(f"{opts.cascade} det found {len(crops)} text lines for cls / rec calibration")
        if not crops and needs_act:
            raise CalibrationError(f"det found no text lines in the {len(pages)} calibration pages; "
                                   f"cls and rec need text to calibrate on")

    if g_cls is not None:
        feeds = [x for _, x in S.cls_batches(crops, cfg.cls, pps["cls"])]
        say(f"cls: calibrating on {len(crops)} lines in {len(feeds)} batches")
        built["cls"] = _quantize("cls", Path(cls), g_cls, feeds, lambda x: x, opts, pps["cls"])
        if crops:
            crops, _ = classify(_stage(built["cls"].graph_for(opts.cascade), opts), crops, cfg.cls)

    feeds = [x for _, x in S.rec_batches(crops, cfg.rec, pps["rec"])]
    say(f"rec: calibrating on {len(crops)} lines in {len(feeds)} batches")
    built["rec"] = _quantize("rec", rec, g_rec, feeds, lambda x: x, opts, pps["rec"])

    # one package: graphs det, cls, rec + the two sections
    graphs = [built[n].result.graph for n in STAGES if n in built]
    try:
        check_bundle({g.name: g for g in graphs}, cfg, keys, "the converted bundle")
    except PackageError as e:          # e.g. a keys file that does not fit the rec model
        raise ConversionError(str(e)) from None
    producer = {"tool": "edgert convert-ocr", "ocr": {
        "cascade": opts.cascade, "calib_pages": len(pages), "calib_lines": len(crops),
        "stages": {n: built[n].result.graph.metadata["quantization"] for n in built}}}
    written = write_package(out, graphs, WriteOptions(compress=opts.compress, signing_key=opts.signing_key),
                            producer=producer,
                            extras={CONFIG_SECTION: cfg.to_bytes(), KEYS_SECTION: keys_to_bytes(keys)})
    sec_bytes = {s.name: s.stored_bytes for s in written.sections}
    reports = {}
    for i, n in enumerate(n for n in STAGES if n in built):
        b = built[n]
        calib = b.result.calibration
        reports[n] = ConvertReport(
            src_path=b.source, out_path=out, source_bytes=b.source.stat().st_size,
            package_bytes=int(sec_bytes.get(f"weights.{i}", 0)), layers=b.result.graph.layers,
            calibration_s=calib.seconds if calib else 0.0,
            calibration_batches=calib.batches if calib else 0,
            calibration_backend=calib.backend if calib else None, sqnr_s=b.result.sqnr_s,
            total_s=b.seconds, options=opts.convert_options(n, pps[n]))
    return OcrConvertReport(out_path=out, package_bytes=int(written.size_bytes), stages=reports,
                            keys=len(keys), calib_pages=len(pages), calib_lines=len(crops),
                            cascade=opts.cascade, signed=written.signed,
                            total_s=time.perf_counter() - t0)
