"""Rendered text images for calibration, tests and benchmarks (no downloaded data sets).

Words come from Python's own `pydoc_data.topics` (always installed); glyphs from Pillow's built-in
font, which takes a size since Pillow 10.1.  Everything is a pure function of the seed."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=1)
def _words() -> tuple[str, ...]:
    from pydoc_data.topics import topics
    text = " ".join(topics[k] for k in sorted(topics))
    return tuple(w for w in re.findall(r"[A-Za-z][A-Za-z0-9_.,:()'-]{1,13}", text))


@lru_cache(maxsize=32)
def _font(size: int):
    from PIL import ImageFont
    return ImageFont.load_default(size=size)


def _phrase(rng: np.random.Generator, n_words: int) -> str:
    words = _words()
    start = int(rng.integers(0, len(words) - n_words))
    return " ".join(words[start:start + n_words])


def _colors(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 70, 3))
    return bg, fg


def render_text_page(rng: np.random.Generator, size: tuple[int, int] = (640, 640)) -> np.ndarray:
    """A page (H, W, 3) uint8: light background, lines of dark words at several sizes / positions."""
    from PIL import Image, ImageDraw
    h, w = size
    bg, fg = _colors(rng)
    im = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(im)
    base = max(8, min(h, w) // 24)
    y = int(rng.integers(0, max(1, base)))
    while y < h - base // 2:
        font_px = int(base * rng.choice([0.8, 1.0, 1.4, 2.0]))
        x = int(rng.integers(0, max(1, w // 4)))
        if rng.random() < 0.8:       # leave some blank lines
            ink = tuple(int(np.clip(c + rng.integers(-30, 30), 0, 255)) for c in fg)
            draw.text((x, y), _phrase(rng, int(rng.integers(2, 9))), fill=ink, font=_font(font_px))
        y += int(font_px * rng.uniform(1.3, 2.2))
    return np.asarray(im, dtype=np.uint8)


def render_text_line(rng: np.random.Generator, text: str | None = None,
                     height: int = 48) -> np.ndarray:
    """One line of words (H=height, W fits the text), for the recognition / direction models."""
    from PIL import Image, ImageDraw
    text = text if text is not None else _phrase(rng, int(rng.integers(1, 5)))
    font = _font(max(6, int(height * rng.uniform(0.55, 0.75))))
    left, top, right, bottom = font.getbbox(text)
    pad = height // 6
    w = max(height, right - left + 2 * pad)
    bg, fg = _colors(rng)
    im = Image.new("RGB", (w, height), bg)
    y = (height - (bottom - top)) // 2 - top
    ImageDraw.Draw(im).text((pad - left, y), text, fill=fg, font=font)
    return np.asarray(im, dtype=np.uint8)


def write_calibration_folder(directory: str | Path, n: int, seed: int = 0, kind: str = "page",
                             size: tuple[int, int] = (640, 640), height: int = 48) -> list[Path]:
    """Write n PNGs (`kind` "page" or "line") into `directory`; returns their paths in order."""
    from PIL import Image
    if kind not in ("page", "line"):
        raise ValueError(f"kind must be 'page' or 'line', got {kind!r}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = render_text_page(rng, size) if kind == "page" else render_text_line(rng, height=height)
        p = d / f"{kind}_{i:04d}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths
