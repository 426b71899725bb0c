"""Rendered pages with known text for the OCR tests (import: ``from ocr_pages import render_page``).

Lines of plain words (letters only, drawn with Pillow's built-in font at 28-36 px on a light
background) so that the float PP-OCRv4 pipeline reads them exactly; the truth is the text of each
line and its ink box."""
from __future__ import annotations

import re

import numpy as np


def _plain_words() -> tuple[str, ...]:
    from converters.synthetic import _words
    return tuple(w for w in _words() if re.fullmatch(r"[A-Za-z]{3,10}", w))


def render_page(seed: int, size: tuple[int, int] = (480, 640)) -> tuple[np.ndarray, list[dict]]:
    """(H, W, 3) uint8 RGB page, [{"text", "box": (x0, y0, x1, y1)}] top to bottom."""
    from PIL import Image, ImageDraw, ImageFont
    rng = np.random.default_rng(seed)
    words = _plain_words()
    h, w = size
    im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(225, 256, 3)))
    draw = ImageDraw.Draw(im)
    lines, y = [], 24
    while y < h - 48:
        px = int(rng.choice([28, 32, 36]))
        font = ImageFont.load_default(size=px)
        text = " ".join(words[int(i)] for i in rng.integers(0, len(words), int(rng.integers(2, 4))))
        left, top, right, bottom = font.getbbox(text)
        x = int(rng.integers(16, 64))
        if x + right > w - 16:
            continue
        ink = tuple(int(v) for v in rng.integers(0, 60, 3))
        draw.text((x, y), text, fill=ink, font=font)
        lines.append({"text": text, "box": (x + left, y + top, x + right, y + bottom)})
        y += int(px * rng.uniform(1.7, 2.1))
    return np.asarray(im, dtype=np.uint8), lines


def squash(text: str) -> str:
    """PP-OCRv4 drops many spaces in English text: compare without whitespace."""
    return "".join(text.split())


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def quad_iou(a, b) -> float:
    """IoU of the axis-aligned bounding boxes of two quadrilaterals (near-horizontal text)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 2), np.asarray(b, np.float64).reshape(-1, 2)
    ax0, ay0, ax1, ay1 = *a.min(0), *a.max(0)
    bx0, by0, bx1, by1 = *b.min(0), *b.max(0)
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(ours, theirs, min_iou: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU: [(i ours, j theirs, iou)]."""
    pairs = sorted(((quad_iou(a, b), i, j) for i, a in enumerate(ours) for j, b in enumerate(theirs)),
                   reverse=True)
    used_i, used_j, out = set(), set(), []
    for iou, i, j in pairs:
        if iou < min_iou or i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        out.append((i, j, iou))
    return out
