"""Image file -> model input, following the `Preprocess` recorded in the package at convert time.

Pillow is imported only here and only when an image is actually read or resized."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgert.errors import InputError
from edgert.ir import Preprocess


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array; unreadable files raise InputError."""
    Image = _pil()
    from PIL import UnidentifiedImageError
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image not found")
    try:
        with Image.open(p) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{p}: cannot read image ({e})") from None


# Pillow's filters: bilinear and cubic widen their support by the scale factor when downscaling
# (antialiased, as torchvision's PIL transforms train with); "area" is Pillow's BOX filter.
INTERPOLATIONS = ("nearest", "bilinear", "cubic", "area")
DEFAULT_INTERPOLATION = "bilinear"


def resize(img: np.ndarray, hw: tuple[int, int], interpolation: str = DEFAULT_INTERPOLATION) -> np.ndarray:
    """The one image resize in edgert, to (height, width): `edgert run`, the camera and agent sources,
    calibration and the eval harness all go through it, so a package sees the same pixels everywhere.
    Takes (H, W, 3) uint8 images and (H, W) uint8 label maps; returns `img` itself at the same size."""
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"unknown interpolation {interpolation!r} (known: {', '.join(INTERPOLATIONS)})")
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise InputError(f"cannot resize to {h}x{w}")
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise InputError(f"can resize (H, W, 3) or (H, W) uint8 arrays, got {img.shape} {img.dtype}")
    if img.shape[:2] == (h, w):
        return img
    Image = _pil()
    filters = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "cubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX}
    return np.asarray(Image.fromarray(img).resize((w, h), filters[interpolation]), dtype=np.uint8)


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the install
        raise InputError("reading and resizing images needs Pillow: pip install 'edgert[image]'") from e
    return Image


def target_size(img_hw: tuple[int, int], pp: Preprocess) -> tuple[int, int]:
    if pp.size:
        return (int(pp.size[0]), int(pp.size[1]))
    m = max(1, pp.pad_multiple)
    h, w = img_hw
    return (max(m, -(-h // m) * m), max(m, -(-w // m) * m))


def preprocess_array(img: np.ndarray, pp: Preprocess, interpolation: str = DEFAULT_INTERPOLATION) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> float32 batch of one, laid out as the model wants."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
    img = resize(img, target_size(img.shape[:2], pp), interpolation)
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
