"""The image side of the OCR pipeline: page guards, the det input, box ordering, line crops, the
cls / rec batches and CTC decoding.  Pure functions of numpy arrays and the typed config.

The converter calibrates with exactly these functions (`converters/ocr_bundle.py`), so calibration
and `OcrPipeline` see the same pixels.  Resizes and crops use OpenCV as PP-OCR was trained and as
RapidOCR runs it (`cv2.resize` INTER_LINEAR without antialiasing, `warpPerspective` INTER_CUBIC with
replicated borders); the rest of edgert resizes with Pillow (`edgert.preprocess.resize`), which
would shift the text-line pixels these models were trained on.

Images are (H, W, 3) uint8 RGB; the models' channel order comes from each graph's recorded
`Preprocess` (PP-OCR models take BGR)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from edgert.errors import BackendUnavailable
from edgert.ir import Preprocess
from edgert.ocr.config import ClsConfig, DetConfig, PageConfig, RecConfig

# PaddleOCR / RapidOCR normalisation of every stage: x / 255, mean 0.5, std 0.5, BGR.
DEFAULT_PREPROCESS = Preprocess(size=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channels="bgr",
                                pad_multiple=32)


def cv2():
    try:
        import cv2 as _cv2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise BackendUnavailable("the OCR pipeline needs OpenCV: pip install opencv-python-headless") from e
    return _cv2


# -- page -----------------------------------------------------------------------------------------


@dataclass
class PageMap:
    """How the working image relates to the caller's image: work = resize(img) then letterbox."""
    raw_hw: tuple[int, int]
    ratio_h: float = 1.0        # original = work * ratio (RapidOCR's op_record "preprocess")
    ratio_w: float = 1.0
    pad_top: int = 0            # letterbox rows added above (RapidOCR's "padding_1")

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(K, 4, 2) boxes in work coordinates -> the caller's image, clipped to it."""
        out = boxes.astype(np.float32, copy=True)
        out[..., 1] -= self.pad_top
        out[..., 0] *= self.ratio_w
        out[..., 1] *= self.ratio_h
        h, w = self.raw_hw
        np.clip(out[..., 0], 0, w, out=out[..., 0])
        np.clip(out[..., 1], 0, h, out=out[..., 1])
        return out


def _resize_to_32(img: np.ndarray, ratio: float) -> tuple[np.ndarray, float, float]:
    h, w = img.shape[:2]
    rh = max(32, int(round(int(h * ratio) / 32) * 32))
    rw = max(32, int(round(int(w * ratio) / 32) * 32))
    return cv2().resize(img, (rw, rh)), h / rh, w / rw


def prepare_page(img: np.ndarray, cfg: PageConfig) -> tuple[np.ndarray, PageMap]:
    """RapidOCR's page guards: shrink past `max_side_len`, enlarge under `min_side_len` (both to
    multiples of 32), then pad top and bottom with black when the page is very short or very wide
    (a long single line otherwise comes out of det as a sliver)."""
    m = PageMap(raw_hw=(img.shape[0], img.shape[1]))
    h, w = img.shape[:2]
    if max(h, w) > cfg.max_side_len:
        img, m.ratio_h, m.ratio_w = _resize_to_32(img, cfg.max_side_len / max(h, w))
    h, w = img.shape[:2]
    if min(h, w) < cfg.min_side_len:
        img, m.ratio_h, m.ratio_w = _resize_to_32(img, cfg.min_side_len / min(h, w))
    h, w = img.shape[:2]
    wide = cfg.width_height_ratio != -1 and w / h > cfg.width_height_ratio
    if h <= cfg.min_height or wide:
        target = max(int(w / cfg.width_height_ratio) if cfg.width_height_ratio > 0 else 0,
                     cfg.min_height) * 2
        pad = int(abs(target - h) / 2)
        if pad:
            img = cv2().copyMakeBorder(img, pad, pad, 0, 0, cv2().BORDER_CONSTANT, value=(0, 0, 0))
            m.pad_top = pad
    return img, m


# -- det ------------------------------------------------------------------------------------------


def det_size(hw: tuple[int, int], cfg: DetConfig) -> tuple[int, int]:
    """RapidOCR's DetPreProcess: scale so the short side reaches `limit_side_len` ("min"; larger
    pages are left alone) or the long side stays within it ("max"), then round each side to a
    multiple of 32 (at least 32)."""
    h, w = hw
    if cfg.limit_type == "max":
        ratio = cfg.limit_side_len / max(h, w) if max(h, w) > cfg.limit_side_len else 1.0
    else:
        ratio = cfg.limit_side_len / min(h, w) if min(h, w) < cfg.limit_side_len else 1.0
    rh = max(32, int(round(int(h * ratio) / 32) * 32))
    rw = max(32, int(round(int(w * ratio) / 32) * 32))
    return rh, rw


def normalize(img: np.ndarray, pp: Preprocess, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in the model's channel order, (v/255 - mean)/std
    through a 256-entry table per channel (the same float32 arithmetic as edgert.preprocess)."""
    h, w = img.shape[:2]
    if out is None:
        out = np.empty((3, h, w), np.float32)
    v = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0)
    order = (2, 1, 0) if pp.channels == "bgr" else (0, 1, 2)
    for c, src in enumerate(order):
        lut = (v - np.float32(pp.mean[c])) / np.float32(pp.std[c])
        np.take(lut, img[:, :, src], out=out[c])
    return out


def det_input(img: np.ndarray, cfg: DetConfig, pp: Preprocess) -> np.ndarray:
    """Work image -> det input [1, 3, H32, W32]."""
    rh, rw = det_size(img.shape[:2], cfg)
    resized = cv2().resize(img, (rw, rh)) if (rh, rw) != img.shape[:2] else img
    return normalize(resized, pp)[None]


def crop_line(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """RapidOCR's get_rotate_crop_image: warp the quadrilateral to an upright rectangle (its longer
    opposite sides as width / height), and turn tall results (h/w >= 1.5) by 90° counter-clockwise
    so vertical lines read left to right."""
    c = cv2()
    pts = np.asarray(box, np.float32)
    w = int(max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3])))
    h = int(max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2])))
    w, h = max(w, 1), max(h, 1)
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    m = c.getPerspectiveTransform(pts, dst)
    crop = c.warpPerspective(img, m, (w, h), borderMode=c.BORDER_REPLICATE, flags=c.INTER_CUBIC)
    if crop.shape[0] / crop.shape[1] >= 1.5:
        crop = np.ascontiguousarray(np.rot90(crop))
    return crop


# -- cls / rec batches ----------------------------------------------------------------------------


def _aspect(crops: list[np.ndarray]) -> np.ndarray:
    return np.array([c.shape[1] / float(c.shape[0]) for c in crops], np.float64)


def _batch(crops: list[np.ndarray], idx: np.ndarray, height: int, width: int, pp: Preprocess
           ) -> np.ndarray:
    """Each crop resized to `height` keeping its aspect (at most `width`), left-aligned, the rest
    zero in normalised space (PaddleOCR's resize_norm_img)."""
    c = cv2()
    x = np.zeros((len(idx), 3, height, width), np.float32)
    for k, i in enumerate(idx):
        img = crops[i]
        rw = min(width, int(math.ceil(height * img.shape[1] / float(img.shape[0]))))
        rw = max(1, rw)
        normalize(c.resize(img, (rw, height)), pp, out=x[k, :, :, :rw])
    return x


def cls_batches(crops: list[np.ndarray], cfg: ClsConfig, pp: Preprocess
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(crop indices, [B, 3, 48, 192]) batches in order of aspect ratio (similar crops together)."""
    order = np.argsort(_aspect(crops), kind="stable")
    _, h, w = cfg.image_shape
    for beg in range(0, len(order), cfg.batch):
        idx = order[beg:beg + cfg.batch]
        yield idx, _batch(crops, idx, h, w, pp)


def rec_batches(crops: list[np.ndarray], cfg: RecConfig, pp: Preprocess
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(crop indices, [B, 3, 48, W]) batches in order of aspect ratio; W = 48 x the widest aspect in
    the batch, at least image_shape's width (RapidOCR) and at most `max_width` (edgert's bound)."""
    ratios = _aspect(crops)
    order = np.argsort(ratios, kind="stable")
    _, h, w0 = cfg.image_shape
    for beg in range(0, len(order), cfg.batch):
        idx = order[beg:beg + cfg.batch]
        max_ratio = max(w0 / h, float(ratios[idx].max()))
        width = min(cfg.max_width, int(h * max_ratio))
        yield idx, _batch(crops, idx, h, width, pp)


def ctc_greedy(probs: np.ndarray, charset: list[str]) -> list[tuple[str, float]]:
    """[B, T, C] class probabilities -> (text, score) per row: best class per step, repeats collapsed,
    blanks (class 0) dropped; score = mean best probability of the kept steps (0 when none)."""
    idx = probs.argmax(axis=-1)
    best = np.take_along_axis(probs, idx[..., None], axis=-1)[..., 0]
    keep = idx != 0
    keep[:, 1:] &= idx[:, 1:] != idx[:, :-1]
    kept = keep.sum(axis=1)
    scores = np.where(kept > 0, (best * keep).sum(axis=1) / np.maximum(kept, 1), 0.0)
    return [("".join(charset[i] for i in idx[r][keep[r]]), float(scores[r])) for r in range(len(idx))]
