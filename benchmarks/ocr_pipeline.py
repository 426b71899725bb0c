#!/usr/bin/env python
"""The whole OCR pipeline (det -> cls -> rec) on rendered pages: edgert's OCR bundle against RapidOCR,
one run, plus `edgert run --video` throughput against `edgert bench` on the det package.

* pages: rendered here with Pillow (known text and line boxes): Pillow's default font and the
  DejaVu / STIX faces that matplotlib ships (or /usr/share/fonts), 20-48 px, 3-12 lines, dark ink on
  light, light on dark, text on coloured and gradient backgrounds, some with sensor-like noise; every
  tenth page (index 3, 13, 23, ...) rotated 180 degrees.  Calibration pages come from other seeds
  than the evaluation pages (held out; checked pixel for pixel).
* contestants, 2 intra-op threads each: RapidOCR (rapidocr_onnxruntime, its defaults,
  `intra_op_num_threads`), edgert bundles from `converters.ocr_bundle.convert_ocr` at W8A8 and a
  smaller mixed one (det W4A8, cls / rec W8A8), run by `edgert.ocr.load_ocr` on the `ort` backend.
* accuracy against the rendered truth, whitespace removed on both sides (PP-OCRv4 drops spaces in
  English): CER = edit distance / truth length summed over pages (output lines put in the page's
  reading order, in the page's own frame for rotated pages), its per-page spread, line recall (a
  truth line is found when some output line reads it with CER <= 0.2), box recall (IoU >= 0.5).
* time: end to end per page from an RGB array (no decoding), contestants interleaved page by page
  in a rotating order after warm-up; p50, mean, per-page paired ratio.
* video: PP-OCRv4 det alone at 640x640 W8A8 with the text-detection task; `run_bench` (what
  `edgert bench` runs) against `edgert.pipeline.Pipeline` over an MJPG video of rendered pages
  (annotated .mp4 written), and the per-stage cost of the pipeline's work.

    python benchmarks/ocr_pipeline.py [--quick] [--pages N] [--calib-pages N] [--json out.json]
                                      [--workdir DIR] [--skip-video]
"""
from __future__ import annotations

import argparse
import colorsys
import hashlib
import importlib.util
import itertools
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 8 pages, 2 calibration pages at det short side 320, 24 video frames")
    ap.add_argument("--pages", type=int, default=None, help="evaluation pages (default 40, 8 quick)")
    ap.add_argument("--calib-pages", type=int, default=None,
                    help="calibration pages of every package (default 8, 2 quick)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads everywhere (default 2)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed pages per contestant before timing (default 2, 1 quick)")
    ap.add_argument("--gap-ms", type=float, default=20.0,
                    help="idle gap before each timed page, so the previous contestant's ORT threads "
                         "have stopped spinning (default 20)")
    ap.add_argument("--video-frames", type=int, default=None, help="default 60 (24 quick)")
    ap.add_argument("--bench-iters", type=int, default=None, help="default 50 (10 quick)")
    ap.add_argument("--eval-seed", type=int, default=20000, help="page i uses seed eval_seed + i")
    ap.add_argument("--calib-seed", type=int, default=10000)
    ap.add_argument("--video-seed", type=int, default=30000)
    ap.add_argument("--skip-video", action="store_true", help="no run --video vs bench part")
    ap.add_argument("--json", metavar="PATH", help="write every raw number here")
    ap.add_argument("--workdir", help="keep pages, packages and videos here (default: a temp dir)")
    args = ap.parse_args(argv)
    for name, full, quick in (("pages", 40, 8), ("calib_pages", 8, 2), ("warmup", 2, 1),
                              ("video_frames", 60, 24), ("bench_iters", 50, 10)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.pages < 1 or args.calib_pages < 1:
        ap.error("--pages and --calib-pages must be >= 1")
    ranges = {k: (getattr(args, k), getattr(args, k) + getattr(args, n)) for k, n in
              (("eval_seed", "pages"), ("calib_seed", "calib_pages"), ("video_seed", "video_frames"))}
    for (a, (lo1, hi1)), (b, (lo2, hi2)) in itertools.combinations(ranges.items(), 2):
        if lo1 < hi2 and lo2 < hi1:           # the page sets must not share a seed
            ap.error(f"the seed ranges of --{a.replace('_', '-')} and --{b.replace('_', '-')} overlap")
    return args


ARGS = parse_args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))
REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

# issue 10 §6
TARGETS = {"cer_points_over_rapidocr": 0.5, "time_ratio": 0.8, "video_over_bench": 0.9}
RAPID = "RapidOCR"
W8 = "edgert W8A8"
MIXED = "edgert det W4 + cls/rec W8"
LINE_CER_FOUND = 0.2
BOX_IOU_FOUND = 0.5
VIDEO_HW = (640, 640)
VIDEO_FPS = 30.0
ROTATED_EVERY, EVAL_ROT_AT, CALIB_ROT_AT = 10, 3, 1   # page i rotated when i % 10 == 3 (calib: 1)
PAGE_SIZES = ((480, 640), (640, 480), (600, 800), (800, 600), (720, 720))      # (H, W)
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
              "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf",
              "STIXGeneral.ttf", "STIXGeneralBol.ttf")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# pages


@dataclass
class Page:
    seed: int
    image: np.ndarray                   # (H, W, 3) uint8 RGB, as presented (rotated when `rotated`)
    lines: list[dict]                   # {"text", "box": (x0, y0, x1, y1) in presented coords, "font", "px"}
    rotated: bool
    scheme: str
    noise: float = 0.0
    bgr: np.ndarray | None = field(default=None, repr=False)

    def meta(self) -> dict:
        return {"seed": self.seed, "hw": list(self.image.shape[:2]), "rotated": self.rotated,
                "scheme": self.scheme, "noise_sigma": self.noise, "lines": self.lines}


def font_pool() -> list[tuple[str, str | None]]:
    """(label, file) pairs; file None is Pillow's built-in scalable font.  The TrueType faces come
    from matplotlib's mpl-data (found without importing it), else the Debian DejaVu package."""
    dirs = []
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf")
    dirs += [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/TTF")]
    pool: list[tuple[str, str | None]] = [("Pillow default", None)]
    for name in FONT_FILES:
        for d in dirs:
            if (d / name).is_file():
                pool.append((Path(name).stem, str(d / name)))
                break
    return pool


@lru_cache(maxsize=512)
def _font(path: str | None, px: int):
    from PIL import ImageFont
    return ImageFont.load_default(size=px) if path is None else ImageFont.truetype(path, px)


@lru_cache(maxsize=1)
def _plain_words() -> tuple[str, ...]:
    import re

    from converters.synthetic import _words
    return tuple(w for w in _words() if re.fullmatch(r"[A-Za-z]{3,10}", w))


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(round(x * 255)) for x in colorsys.hsv_to_rgb(h, s, v))


def _scheme(rng: np.random.Generator, hw: tuple[int, int]):
    """(name, background (H, W, 3) uint8, ink() -> colour): contrast of every ink with the
    background is >= ~110 in luma."""
    h, w = hw
    kind = str(rng.choice(["light", "dark", "colour", "gradient"], p=[0.45, 0.2, 0.2, 0.15]))
    if kind == "light":
        bg = tuple(int(v) for v in rng.integers(205, 256, 3))
        img = np.broadcast_to(np.array(bg, np.uint8), (h, w, 3)).copy()
    elif kind == "dark":
        bg = tuple(int(v) for v in rng.integers(0, 50, 3))
        img = np.broadcast_to(np.array(bg, np.uint8), (h, w, 3)).copy()
    elif kind == "colour":
        bg = _rgb(float(rng.random()), float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.55, 0.95)))
        img = np.broadcast_to(np.array(bg, np.uint8), (h, w, 3)).copy()
    else:
        a, b = (np.array(_rgb(float(rng.random()), float(rng.uniform(0.05, 0.35)),
                              float(rng.uniform(0.85, 1.0))), np.float32) for _ in range(2))
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        img = np.broadcast_to(a + (b - a) * t, (h, w, 3)).round().astype(np.uint8)
        bg = tuple(int(v) for v in (a + b) / 2)
    light_bg = _luma(bg) > 128

    def ink() -> tuple[int, int, int]:
        for _ in range(20):
            if light_bg:
                c = (tuple(int(v) for v in rng.integers(0, 70, 3)) if rng.random() < 0.6 else
                     _rgb(float(rng.random()), float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.2, 0.45))))
            else:
                c = (tuple(int(v) for v in rng.integers(210, 256, 3)) if rng.random() < 0.7 else
                     _rgb(float(rng.random()), float(rng.uniform(0.2, 0.5)), 1.0))
            if abs(_luma(c) - _luma(bg)) >= 110:
                return c
        return (0, 0, 0) if light_bg else (255, 255, 255)

    return kind, img, ink


def _line_text(rng: np.random.Generator) -> str:
    words = _plain_words()
    toks = [words[int(i)] for i in rng.integers(0, len(words), int(rng.integers(1, 7)))]
    if rng.random() < 0.15:                      # a number somewhere in the line
        toks.insert(int(rng.integers(0, len(toks) + 1)), str(int(rng.integers(0, 10000))))
    r = rng.random()
    if r < 0.1:
        toks = [t.upper() for t in toks]
    elif r < 0.5:
        toks[0] = toks[0][:1].upper() + toks[0][1:]
    return " ".join(toks)


def render_page(seed: int, rotated: bool, hw: tuple[int, int] | None = None) -> Page:
    """One page with known text: 3-12 lines (as many as fit), fonts and sizes 20-48 px per line;
    (H, W) one of PAGE_SIZES unless given."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    pool = font_pool()
    size = PAGE_SIZES[int(rng.integers(0, len(PAGE_SIZES)))]
    hw = tuple(hw) if hw is not None else size
    h, w = hw
    kind, bg, ink = _scheme(rng, hw)
    im = Image.fromarray(bg)
    draw = ImageDraw.Draw(im)
    want = int(rng.integers(3, 13))
    lines: list[dict] = []
    y = int(rng.integers(16, 40))
    for _ in range(100):
        if len(lines) >= want:
            break
        px = int(rng.integers(20, 49))
        label, path = pool[int(rng.integers(0, len(pool)))]
        font = _font(path, px)
        x = int(rng.integers(16, 80))
        toks = _line_text(rng).split(" ")
        while toks and x + font.getbbox(" ".join(toks))[2] > w - 16:
            toks.pop()                            # shorten until it fits the width
        if not toks:
            continue
        text = " ".join(toks)
        left, top, right, bottom = font.getbbox(text)
        if y + bottom > h - 16:
            break
        draw.text((x, y), text, fill=ink(), font=font)
        lines.append({"text": text, "box": [x + left, y + top, x + right, y + bottom],
                      "font": label, "px": px})
        y += int(px * rng.uniform(1.5, 2.2))
    img = np.asarray(im, dtype=np.uint8)
    sigma = 0.0
    if rng.random() < 0.3:                        # sensor-like noise on some pages
        sigma = float(rng.uniform(2.0, 6.0))
        img = np.clip(img + rng.normal(0.0, sigma, img.shape), 0, 255).astype(np.uint8)
    if rotated:
        img = img[::-1, ::-1]
        for ln in lines:
            x0, y0, x1, y1 = ln["box"]
            ln["box"] = [w - x1, h - y1, w - x0, h - y0]
    img = np.ascontiguousarray(img)
    return Page(seed, img, lines, rotated, kind, round(sigma, 2))


def render_pages(seed0: int, n: int, rot_at: int) -> list[Page]:
    return [render_page(seed0 + i, i % ROTATED_EVERY == rot_at) for i in range(n)]


def _digest(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# accuracy


def squash(text: str) -> str:
    return "".join(text.split())


def box_xyxy(box) -> tuple[float, float, float, float]:
    a = np.asarray(box, np.float64).reshape(-1, 2)
    return float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 0].max()), float(a[:, 1].max())


def iou_xyxy(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reading_order(boxes: list, hw: tuple[int, int], rotated: bool) -> list[int]:
    """Indices of output lines in the page's reading order, judged in the page's own frame (a
    rotated page's boxes are turned back first): rows top to bottom, a box joining a row when its
    centre is within half a line height of the row's, left to right within a row.  The same rule
    for every contestant: neither pipeline knows the page is upside down (cls turns lines only)."""
    h, w = hw
    items = []
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = box_xyxy(b)
        if rotated:
            x0, y0, x1, y1 = w - x1, h - y1, w - x0, h - y0
        items.append((0.5 * (y0 + y1), max(1.0, y1 - y0), x0, i))
    items.sort()
    rows: list[list] = []
    for it in items:
        if rows and abs(it[0] - rows[-1][0][0]) < 0.5 * min(it[1], rows[-1][0][1]):
            rows[-1].append(it)
        else:
            rows.append([it])
    return [it[3] for row in rows for it in sorted(row, key=lambda t: t[2])]


def score_page(page: Page, out: list[tuple[str, float, list]], rapid: list | None) -> dict:
    """Errors of one contestant's lines [(text, score, box)] on one page."""
    order = reading_order([b for _, _, b in out], page.image.shape[:2], page.rotated)
    got = squash("".join(out[i][0] for i in order))
    truth = squash("".join(ln["text"] for ln in page.lines))
    ed = C.edit_distance(got, truth)
    outs = [squash(t) for t, _, _ in out]
    found = 0
    for ln in page.lines:
        t = squash(ln["text"])
        if any(C.edit_distance(o, t) <= LINE_CER_FOUND * len(t) for o in outs):
            found += 1
    oboxes = [box_xyxy(b) for _, _, b in out]
    box_found = sum(1 for ln in page.lines
                    if any(iou_xyxy(ln["box"], ob) >= BOX_IOU_FOUND for ob in oboxes))
    rec = {"edits": ed, "truth_chars": len(truth), "cer": ed / max(1, len(truth)),
           "lines": len(page.lines), "lines_found": found, "boxes_found": box_found,
           "out_lines": len(out), "text": got}
    if rapid is not None:
        ref = squash("".join(rapid[i][0] for i in reading_order([b for _, _, b in rapid],
                                                                page.image.shape[:2], page.rotated)))
        rec["edits_vs_rapidocr"] = C.edit_distance(got, ref)
        rec["rapidocr_chars"] = len(ref)
    return rec


def summarize_accuracy(per_page: list[dict], pages: list[Page]) -> dict:
    cer = np.array([p["cer"] for p in per_page])
    tot_e, tot_c = sum(p["edits"] for p in per_page), sum(p["truth_chars"] for p in per_page)
    rot = [p for p, pg in zip(per_page, pages) if pg.rotated]
    s = {"cer": tot_e / max(1, tot_c), "edits": tot_e, "truth_chars": tot_c,
         "page_cer_mean": float(cer.mean()), "page_cer_p50": float(np.percentile(cer, 50)),
         "page_cer_p90": float(np.percentile(cer, 90)), "page_cer_max": float(cer.max()),
         "worst_page_seed": pages[int(cer.argmax())].seed,
         "line_recall": sum(p["lines_found"] for p in per_page) / max(1, sum(p["lines"] for p in per_page)),
         "box_recall": sum(p["boxes_found"] for p in per_page) / max(1, sum(p["lines"] for p in per_page)),
         "out_lines": sum(p["out_lines"] for p in per_page), "truth_lines": sum(p["lines"] for p in per_page),
         "cer_rotated_pages": (sum(p["edits"] for p in rot) / max(1, sum(p["truth_chars"] for p in rot))
                               if rot else None),
         "rotated_pages": len(rot)}
    if per_page and "edits_vs_rapidocr" in per_page[0]:
        s["cer_vs_rapidocr"] = (sum(p["edits_vs_rapidocr"] for p in per_page)
                                / max(1, sum(p["rapidocr_chars"] for p in per_page)))
    return s


# ---------------------------------------------------------------------------------------------------
# contestants: page -> ([(text, score, box 4x2)], stage ms)


class RapidRunner:
    def __init__(self, threads: int):
        from rapidocr_onnxruntime import RapidOCR
        self.engine = RapidOCR(intra_op_num_threads=threads)

    def threads_in_effect(self) -> dict[str, int | None]:
        """What the three ORT sessions were built with (RapidOCR silently keeps ORT's default when
        the value exceeds os.cpu_count(): utils/infer_engine.py)."""
        e = self.engine
        out = {}
        for name, sess in (("det", getattr(getattr(e.text_det, "infer", None), "session", None)),
                           ("cls", getattr(getattr(e.text_cls, "infer", None), "session", None)),
                           ("rec", getattr(getattr(e.text_rec, "session", None), "session", None))):
            try:
                out[name] = int(sess.get_session_options().intra_op_num_threads)
            except Exception:  # noqa: BLE001 - informational; RapidOCR's internals may move
                out[name] = None
        return out

    def __call__(self, page: Page):
        res, elapse = self.engine(page.bgr)          # an ndarray goes in as-is, taken as BGR
        lines = [(str(t), float(s), b) for b, t, s in (res or [])]
        ms = {}
        if elapse and len(elapse) == 3:
            ms = {"det": elapse[0] * 1e3, "cls": elapse[1] * 1e3, "rec": elapse[2] * 1e3}
        return lines, ms


class EdgertOcrRunner:
    def __init__(self, pkg: Path, threads: int):
        from edgert.ocr import OcrLoadOptions, load_ocr
        self.pipe = load_ocr(pkg, options=OcrLoadOptions(backend="ort", threads=threads))

    def __call__(self, page: Page):
        r = self.pipe(page.image)
        return [(ln.text, float(ln.score), ln.box) for ln in r.lines], dict(r.timings_ms)


def build_bundles(det: Path, cls: Path, rec: Path, work: Path, calib_dir: Path, n_calib: int,
                  args, res: dict) -> dict[str, Path]:
    from converters.ocr_bundle import OcrConvertOptions, StageOptions, convert_ocr

    common = dict(calib_dir=calib_dir, calib_count=n_calib, progress=False,
                  det_calib_side=320 if args.quick else None,      # None: the runtime's 736
                  max_calib_lines=16 if args.quick else 96, sqnr_batches=0 if args.quick else 1)
    variants = {W8: OcrConvertOptions(wbits=8, abits=8, **common),
                MIXED: OcrConvertOptions(wbits=8, abits=8, det=StageOptions(wbits=4), **common)}
    pkgs = {}
    for name, opts in variants.items():
        out = work / ("ocr.w8a8.pkg" if name == W8 else "ocr.det4.pkg")
        log(f"convert_ocr {name} (calibrating on {n_calib} held-out pages)")
        t0 = time.perf_counter()
        try:
            rep = convert_ocr(det, cls, rec, out, opts)
            pkgs[name] = out
            res["bundles"][name] = {"build_s": time.perf_counter() - t0, "report": rep.to_json(),
                                    "stage_bytes": {n: r.package_bytes for n, r in rep.stages.items()},
                                    "package_bytes": out.stat().st_size}
        except Exception as e:  # noqa: BLE001 - report, carry on with the other contestants
            res["errors"][f"convert {name}"] = f"{type(e).__name__}: {e}"
            log(f"convert {name} failed:\n{traceback.format_exc()}")
    return pkgs


def run_pages(runners: dict, pages: list[Page], warm: list[Page], gap_s: float):
    """Every contestant on every page, interleaved page by page in a rotating order; returns
    ({name: [lines per page]}, {name: [ms per page]}, {name: [stage ms per page]})."""
    names = list(runners)
    for name in names:
        for pg in warm:
            runners[name](pg)
    outs = {n: [] for n in names}
    ms = {n: [] for n in names}
    stages = {n: [] for n in names}
    for i, pg in enumerate(pages):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            if gap_s:
                time.sleep(gap_s)
            t0 = time.perf_counter()
            lines, st = runners[name](pg)
            ms[name].append((time.perf_counter() - t0) * 1e3)
            outs[name].append(lines)
            stages[name].append(st)
        log(f"page {i + 1}/{len(pages)} (seed {pg.seed}{', rotated' if pg.rotated else ''}, "
            f"{len(pg.lines)} lines): " + ", ".join(f"{n} {ms[n][-1]:.0f} ms" for n in names))
    return outs, ms, stages


# ---------------------------------------------------------------------------------------------------
# run --video vs bench


def video_part(det_src: Path, calib_dir: Path, n_calib: int, work: Path, args, res: dict) -> dict:
    import cv2

    import edgert
    from converters.convert import convert
    from converters.options import ConvertOptions
    from edgert.bench import BenchOptions, run_bench
    from edgert.ir import Preprocess
    from edgert.pipeline import FrameRecord, ModelApp, Pipeline, PipelineOptions, _Writer, draw_stats
    from edgert.preprocess import preprocess_array
    from edgert.sources import open_source
    from edgert.tasks import get_task

    v: dict = {"frames_rendered": args.video_frames, "hw": list(VIDEO_HW)}
    pp = Preprocess(size=VIDEO_HW, mean=(0.5,) * 3, std=(0.5,) * 3, channels="bgr")
    pkg = work / "det640.w8a8.pkg"
    log(f"video: convert det 640x640 W8A8 with task text-detection ({n_calib} calibration pages)")
    t0 = time.perf_counter()
    rep = convert(det_src, pkg, ConvertOptions(
        wbits=8, abits=8, calib_dir=calib_dir, calib_count=n_calib, preprocess=pp,
        input_shapes={"x": [1, 3, *VIDEO_HW]}, task=get_task("text-detection")(), progress=False,
        sqnr_batches=0))
    v.update(build_s=time.perf_counter() - t0, package_bytes=pkg.stat().st_size,
             convert_report=rep.to_json())

    # the video: pages rendered at 640x640, MJPG in .avi
    video = work / "pages.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, VIDEO_HW[::-1])
    if not vw.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG to {video}")
    first = None
    for i in range(args.video_frames):
        frame = render_page(args.video_seed + i, i % ROTATED_EVERY == EVAL_ROT_AT, VIDEO_HW).image
        first = frame if first is None else first
        vw.write(np.ascontiguousarray(frame[:, :, ::-1]))
    vw.release()
    v["video_bytes"] = video.stat().st_size
    log(f"video: {args.video_frames} frames {VIDEO_HW[1]}x{VIDEO_HW[0]} MJPG -> {video}")

    sess = edgert.load(pkg, backend="ort", threads=args.threads)
    feeds = sess.check_feeds(preprocess_array(first, sess.preprocess))
    bopts = BenchOptions(warmup=5, iters=args.bench_iters)

    def bench(tag: str) -> dict:
        r = run_bench(sess, feeds, bopts, package_bytes=pkg.stat().st_size)
        log(f"video: bench ({tag}) {r.throughput_ips:.2f} inferences/s, p50 {r.latency_ms['p50']:.1f} ms")
        return r.to_json()

    # `edgert run --video` plans its inference workers itself (edgert/cli/run.py _plan_workers):
    # on a file with the ort backend, one single-threaded run in flight per core
    from edgert.cli.run import _plan_workers
    workers, run_threads = _plan_workers(0, 0, "ort", False, pkg)
    v["run_workers"], v["run_threads"] = workers, run_threads
    run_sess = edgert.load(pkg, backend="ort", threads=run_threads)

    def pipeline(out: Path | None) -> dict:
        src = open_source(str(video))
        s = Pipeline(ModelApp(run_sess), src, PipelineOptions(out=out, status_every_s=0.0,
                                                              workers=workers),
                     echo=lambda _: None, emit=lambda _: None).run()
        log(f"video: pipeline (out={out.name if out else None}, {workers} workers x {run_threads} "
            f"threads) {s.frames} frames {s.fps:.2f} FPS")
        return s.to_json()

    # bench, pipeline, pipeline without output, bench: load drift shows as bench before != after
    v["bench_before"] = bench("before")
    v["pipeline"] = pipeline(work / "annotated.mp4")
    v["pipeline_no_out"] = pipeline(None)
    v["bench_after"] = bench("after")
    v["bench_ips"] = 0.5 * (v["bench_before"]["throughput_ips"] + v["bench_after"]["throughput_ips"])
    v["ratio"] = v["pipeline"]["fps"] / v["bench_ips"] if v["bench_ips"] else None
    v["ratio_no_out"] = v["pipeline_no_out"]["fps"] / v["bench_ips"] if v["bench_ips"] else None

    # where the time goes: the pipeline's stages one after another on this thread (no overlap,
    # no contention), each as the pipeline runs it
    app = ModelApp(sess)
    writer = _Writer(work / "profile.mp4", VIDEO_FPS)
    st: dict[str, list[float]] = {k: [] for k in ("decode", "preprocess", "inference", "postprocess",
                                                  "render", "encode")}
    src = open_source(str(video))
    it = iter(src)
    try:
        while True:
            t0 = time.perf_counter_ns()
            frame = next(it, None)
            t1 = time.perf_counter_ns()
            if frame is None:
                break
            prepared = app.prepare(frame.image)
            t2 = time.perf_counter_ns()
            outs = sess._exe.run(prepared[0])
            t3 = time.perf_counter_ns()
            result = app.task.postprocess(outs, prepared[1])
            t4 = time.perf_counter_ns()
            img = draw_stats(app.render(frame.image, result), "text-detection  30.0 FPS  33.3 ms")
            t5 = time.perf_counter_ns()
            writer.write(img, FrameRecord(frame.source, frame.index, frame.path, frame.t_ns, 0.0))
            t6 = time.perf_counter_ns()
            for k, a, b in (("decode", t0, t1), ("preprocess", t1, t2), ("inference", t2, t3),
                            ("postprocess", t3, t4), ("render", t4, t5), ("encode", t5, t6)):
                st[k].append((b - a) / 1e6)
    finally:
        src.close()
        writer.close()
    v["stages_ms"] = {k: {"mean": float(np.mean(x)), "p50": float(np.median(x)), "n": len(x)}
                      for k, x in st.items() if x}
    v["stage_samples_ms"] = {k: [round(t, 3) for t in x] for k, x in st.items()}
    return v


# ---------------------------------------------------------------------------------------------------
# report


def _mark(ok: bool | None) -> str:
    return {True: "✓", False: "✗", None: "n/a"}[ok]


def _pct(x: float | None, nd: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{nd}f} %"


def report_markdown(res: dict, args) -> str:
    m = res["machine"]
    names = list(res["latency"])
    lat: dict[str, C.Latency] = res["latency"]
    acc = res["accuracy"]
    base = lat.get(RAPID)
    n_pages = len(res["pages"])
    n_rot = sum(p["rotated"] for p in res["pages"])
    out = [f"## OCR pipeline: edgert bundle vs RapidOCR, {args.threads} threads"
           + (" (--quick smoke run)" if args.quick else ""), "", C.machine_line(m), "",
           C.load_note(m), "",
           f"{n_pages} evaluation pages (seeds {args.eval_seed}..{args.eval_seed + n_pages - 1}, "
           f"{n_rot} rotated 180°, {sum(len(p['lines']) for p in res['pages'])} lines, fonts: "
           f"{', '.join(res['fonts'])}); calibration: {res['calib']['pages']} **held-out** pages "
           f"(seeds {args.calib_seed}..{args.calib_seed + res['calib']['pages'] - 1}, none shares a "
           f"seed or a pixel-identical image with the evaluation pages). RapidOCR session threads: "
           f"{res['rapidocr_threads']}.", ""]

    # accuracy
    rows = []
    for n in names:
        a = acc[n]
        rows.append([n, _pct(a["cer"]), _pct(a["page_cer_mean"]), _pct(a["page_cer_p50"]),
                     _pct(a["page_cer_p90"]), f"{_pct(a['page_cer_max'])} (seed {a['worst_page_seed']})",
                     _pct(a["line_recall"], 1), _pct(a["box_recall"], 1),
                     f"{a['out_lines']} / {a['truth_lines']}", _pct(a["cer_rotated_pages"]),
                     _pct(a.get("cer_vs_rapidocr")) if n != RAPID else "—"])
    out += ["### accuracy against the rendered truth (whitespace removed)", "",
            C.md_table(["contestant", "CER (Σ edits / Σ chars)", "page CER mean", "p50", "p90",
                        "max", f"line recall (CER ≤ {LINE_CER_FOUND})", f"box recall (IoU ≥ {BOX_IOU_FOUND})",
                        "lines out / truth", f"CER on {n_rot} rotated pages", "CER vs RapidOCR text"],
                       rows), ""]

    # time
    rows = []
    for n in names:
        l = lat[n]
        st = res["stage_ms_mean"].get(n, {})
        r50 = l.p50_ms / base.p50_ms if base else float("nan")
        rmean = l.mean_ms / base.mean_ms if base else float("nan")
        paired = (float(np.median(np.asarray(l.samples_ms) / np.asarray(base.samples_ms)))
                  if base else float("nan"))
        rows.append([n, l.n, f"{l.p50_ms:.0f}", f"{l.mean_ms:.0f}", f"{l.p90_ms:.0f}", f"{l.min_ms:.0f}",
                     f"**{r50:.3f}×**", f"{rmean:.3f}×", f"{paired:.3f}×",
                     " / ".join(f"{st[k]:.0f}" if k in st else "–" for k in ("det", "cls", "rec"))])
    out += [f"### end-to-end time per page (RGB array in, lines out; interleaved per page after "
            f"{args.warmup} warm-up page(s), {args.gap_ms:g} ms idle gap before each)", "",
            C.md_table(["contestant", "pages", "p50 ms", "mean ms", "p90 ms", "min ms",
                        f"p50 / {RAPID}", f"mean / {RAPID}", "median per-page ratio",
                        "stage means det / cls / rec ms"], rows),
            "", "Stage times are each pipeline's own clocks and do not cover the same work: edgert's "
                "det includes the page guards and the line crops, its cls / rec the batch preparation "
                "(resize, normalise); RapidOCR's det is its detector call (resize, model, DB "
                "post-process), its cls / rec the model and decoding only. RapidOCR gets the page as "
                "a BGR copy made before timing (it takes arrays as BGR).", ""]

    # sizes
    src = res["sources"]
    onnx_total = sum(s["bytes"] for s in src.values())
    rows = [["ONNX files (RapidOCR)"] + [f"{C.mb(src[k]['bytes']):.3f}" for k in ("det", "cls", "rec")]
            + [f"{C.mb(onnx_total):.3f}", "1.00×"]]
    for n, b in res["bundles"].items():
        sb = b["stage_bytes"]
        rows.append([n] + [f"{C.mb(sb.get(k, 0)):.3f}" for k in ("det", "cls", "rec")]
                     + [f"{C.mb(b['package_bytes']):.3f}", f"{onnx_total / b['package_bytes']:.2f}× smaller"])
    out += ["### size (MB = 10^6 bytes; bundle stages = their compressed weight sections)", "",
            C.md_table(["", "det", "cls", "rec", "total file", "vs ONNX"], rows), ""]

    # targets
    checks = []
    if W8 in acc and RAPID in acc:
        cer_w8, cer_r = 100 * acc[W8]["cer"], 100 * acc[RAPID]["cer"]
        tgt = cer_r + TARGETS["cer_points_over_rapidocr"]
        checks.append(["W8A8 CER", f"{cer_w8:.2f} %", f"≤ {tgt:.2f} % (RapidOCR {cer_r:.2f} % + 0.5)",
                       f"{cer_w8 - cer_r:+.2f} points", _mark(cer_w8 <= tgt)])
    if W8 in lat and base:
        r50 = lat[W8].p50_ms / base.p50_ms
        checks.append(["W8A8 time p50 / RapidOCR", f"{lat[W8].p50_ms:.0f} / {base.p50_ms:.0f} ms",
                       f"≤ {TARGETS['time_ratio']}×", f"{r50:.3f}×", _mark(r50 <= TARGETS["time_ratio"])])
        rm = lat[W8].mean_ms / base.mean_ms
        checks.append(["W8A8 time mean / RapidOCR", f"{lat[W8].mean_ms:.0f} / {base.mean_ms:.0f} ms",
                       f"≤ {TARGETS['time_ratio']}×", f"{rm:.3f}×", _mark(rm <= TARGETS["time_ratio"])])
    v = res.get("video")
    if v and v.get("ratio") is not None:
        checks.append(["run --video FPS / bench throughput (det 640², W8A8)",
                       f"{v['pipeline']['fps']:.2f} / {v['bench_ips']:.2f}", f"≥ {TARGETS['video_over_bench']}×",
                       f"{v['ratio']:.3f}×", _mark(v["ratio"] >= TARGETS["video_over_bench"])])
    out += ["### targets (issue 10 §6)", "",
            C.md_table(["check", "measured", "target", "ratio / delta", "met"], checks), ""]

    if v:
        out += video_markdown(v, args)
    if res["errors"]:
        out += ["### errors", ""] + [f"- {k}: {e}" for k, e in res["errors"].items()] + [""]
    builds = ", ".join(f"{n} {b['build_s']:.0f}" for n, b in res["bundles"].items())
    if v and "build_s" in v:
        builds += f", det 640² {v['build_s']:.0f}"
    out.append(f"build times (s): {builds}; whole run {res['wall_s']:.0f} s")
    return "\n".join(out)


def video_markdown(v: dict, args) -> list[str]:
    p, pn = v["pipeline"], v["pipeline_no_out"]
    b0, b1 = v["bench_before"], v["bench_after"]
    out = [f"### run --video vs bench: PP-OCRv4 det 640×640 W8A8 (task text-detection, "
           f"{C.mb(v['package_bytes']):.2f} MB), {v['frames_rendered']}-frame MJPG video", "",
           C.md_table(["measure", "frames / iters", "throughput /s", "inference p50 ms", "ratio to bench"], [
               ["bench before (run_bench, ort)", b0["iters"], f"{b0['throughput_ips']:.2f}",
                f"{b0['latency_ms']['p50']:.1f}", ""],
               ["bench after", b1["iters"], f"{b1['throughput_ips']:.2f}", f"{b1['latency_ms']['p50']:.1f}", ""],
               [f"Pipeline → annotated.mp4 ({v.get('run_workers', 1)} workers × "
                f"{v.get('run_threads', args.threads)} thread)", p["frames"], f"{p['fps']:.2f}", f"{p['infer_ms'].get('p50', 0):.1f}",
                f"**{v['ratio']:.3f}×**"],
               ["Pipeline, no output (diagnostic)", pn["frames"], f"{pn['fps']:.2f}",
                f"{pn['infer_ms'].get('p50', 0):.1f}", f"{v['ratio_no_out']:.3f}×"]]), "",
           f"Pipeline end-to-end (capture → written) p50 {p['e2e_ms'].get('p50', 0):.0f} ms; "
           f"dropped {p['dropped']}. The ratio uses the mean of the two bench runs. `bench` runs "
           f"one inference at a time on {args.threads} threads; `run --video` on a file plans its "
           f"own workers (edgert/cli/run.py `_plan_workers`), as measured here.", ""]
    st = v.get("stages_ms", {})
    if st:
        thread = {"decode": "capture", "preprocess": "capture", "inference": "inference",
                  "postprocess": "output", "render": "output", "encode": "output"}
        total = sum(s["mean"] for s in st.values())
        rows = [[k, thread[k], f"{s['mean']:.2f}", f"{s['p50']:.2f}", f"{s['mean'] / total:.0%}"]
                for k, s in st.items()]
        out += ["where the time goes (the pipeline's stages timed one after another on one thread, "
                f"model on {args.threads} threads, no overlap):", "",
                C.md_table(["stage", "pipeline thread", "mean ms", "p50 ms", "share"], rows), ""]
        run = st["inference"]["mean"]
        other = total - run
        in_pipe = p["infer_ms"].get("mean", 0.0)
        workers = v.get("run_workers", 1)
        out += [f"- per frame: model {run:.1f} ms; decode + preprocess + DB post-process + render + "
                f"encode {other:.1f} ms of CPU on the capture and output threads; in series "
                f"{1000 / total:.2f} FPS, measured {p['fps']:.2f} FPS",
                f"- inside the pipeline each inference took {in_pipe:.1f} ms on "
                f"{v.get('run_threads', args.threads)} thread(s), with {workers} in flight: "
                f"{workers * 1000 / in_pipe if in_pipe else 0:.2f} inferences/s of capacity", ""]
    return out


# ---------------------------------------------------------------------------------------------------


def main() -> int:
    args = ARGS
    t_start = time.perf_counter()
    work, cleanup = C.open_workdir(args.workdir, "edgert-ocrpipe-")
    res = C.run_record("benchmarks/ocr_pipeline.py", args, TARGETS, bundles={})
    machine = res["machine"]
    srcs = {k: C.model_path(k) for k in ("det", "cls", "rec")}
    res["sources"] = {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in srcs.items()}
    res["fonts"] = [label for label, _ in font_pool()]

    # ---- pages: calibration and evaluation from disjoint seeds, checked pixel for pixel
    calib = render_pages(args.calib_seed, args.calib_pages, CALIB_ROT_AT)
    pages = render_pages(args.eval_seed, args.pages, EVAL_ROT_AT)
    shared = {_digest(p.image) for p in calib} & {_digest(p.image) for p in pages}
    if shared:
        raise SystemExit("evaluation pages repeat calibration pages: pick another --eval-seed")
    for p in pages:
        p.bgr = np.ascontiguousarray(p.image[:, :, ::-1])
    calib_dir = work / "calib_pages"
    calib_dir.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(calib):
        C.save_png(p.image, calib_dir / f"page_{i:03d}.png")
    res["calib"] = {"pages": len(calib), "seeds": [p.seed for p in calib],
                    "rotated": [p.seed for p in calib if p.rotated], "dir": str(calib_dir)}
    res["pages"] = [p.meta() for p in pages]
    log(f"{len(calib)} calibration pages (seeds from {args.calib_seed}), {len(pages)} evaluation "
        f"pages (seeds from {args.eval_seed}, {sum(p.rotated for p in pages)} rotated) in {work}")

    # ---- contestants
    runners: dict = {RAPID: RapidRunner(args.threads)}
    res["rapidocr_threads"] = runners[RAPID].threads_in_effect()
    pkgs = build_bundles(srcs["det"], srcs["cls"], srcs["rec"], work, calib_dir, len(calib), args, res)
    for name, pkg in pkgs.items():
        try:
            runners[name] = EdgertOcrRunner(pkg, args.threads)
        except Exception as e:  # noqa: BLE001
            res["errors"][f"load {name}"] = f"{type(e).__name__}: {e}"
            log(f"load {name} failed:\n{traceback.format_exc()}")

    # ---- all pages, interleaved
    outs, ms, stages = run_pages(runners, pages, pages[:args.warmup], args.gap_ms / 1e3)
    res["latency"] = {n: C.Latency.of(v) for n, v in ms.items()}
    res["stage_ms_mean"] = {n: {k: float(np.mean([s[k] for s in v if k in s]))
                                for k in ("det", "cls", "rec", "total") if any(k in s for s in v)}
                            for n, v in stages.items()}
    per_page = {n: [score_page(pg, o, outs[RAPID][i] if n != RAPID else None)
                    for i, (pg, o) in enumerate(zip(pages, v))] for n, v in outs.items()}
    res["accuracy"] = {n: summarize_accuracy(v, pages) for n, v in per_page.items()}
    res["per_page"] = per_page
    res["outputs"] = {n: [[{"text": t, "score": round(s, 4), "box": np.asarray(b, float).round(1).tolist()}
                           for t, s, b in lines] for lines in v] for n, v in outs.items()}
    log("pages done")

    # ---- run --video vs bench on the det package
    if not args.skip_video:
        try:
            res["video"] = video_part(srcs["det"], calib_dir, len(calib), work, args, res)
        except Exception as e:  # noqa: BLE001
            res["errors"]["video"] = f"{type(e).__name__}: {e}"
            log(f"video part failed:\n{traceback.format_exc()}")

    machine["loadavg_end"] = os.getloadavg()
    res["wall_s"] = time.perf_counter() - t_start
    print(report_markdown(res, args))
    if args.json:
        C.write_json(args.json, res)
        log(f"raw numbers -> {args.json}")
    cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
