"""Image file -> model input, following the `Preprocess` recorded in the package at convert time.

Pillow is imported only here and only when an image is actually read."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgert.errors import InputError
from edgert.ir import Preprocess


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array; unreadable files raise InputError."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:  # pragma: no cover - depends on the install
        raise InputError("reading images needs Pillow: pip install 'edgert[image]'") from e
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"cannot read image {p}: {e}") from None


def _resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image
    h, w = hw
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR), dtype=np.uint8)


def target_size(img_hw: tuple[int, int], pp: Preprocess) -> tuple[int, int]:
    if pp.size:
        return (int(pp.size[0]), int(pp.size[1]))
    m = max(1, pp.pad_multiple)
    h, w = img_hw
    return (max(m, -(-h // m) * m), max(m, -(-w // m) * m))


def preprocess_array(img: np.ndarray, pp: Preprocess) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> float32 batch of one, laid out as the model wants."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
    img = _resize(img, target_size(img.shape[:2], pp))
    if pp.channels in ("rgb", "bgr"):
        return _normalize_lut(img, pp)
    x = img.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]   # gray
    x = (x - np.float32(pp.mean[0])) / np.float32(pp.std[0])
    if pp.layout == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def _normalize_lut(img: np.ndarray, pp: Preprocess) -> np.ndarray:
    """Scale, normalise and lay out in one gather per channel: a uint8 pixel has only 256 values, so
    (v / 255 - mean) / std is a 256-entry table (the same float32 arithmetic, bit for bit)."""
    h, w, _ = img.shape
    order = (2, 1, 0) if pp.channels == "bgr" else (0, 1, 2)
    v = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0)
    nchw = pp.layout == "nchw"
    out = np.empty((1, 3, h, w) if nchw else (1, h, w, 3), np.float32)
    for c, src in enumerate(order):
        lut = (v - np.float32(pp.mean[c])) / np.float32(pp.std[c])
        if nchw:
            np.take(lut, img[:, :, src], out=out[0, c])
        else:
            out[0, :, :, c] = lut[img[:, :, src]]
    return out


def preprocess_file(path: str | Path, pp: Preprocess) -> np.ndarray:
    return preprocess_array(load_image(path), pp)
