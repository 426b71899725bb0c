"""Drawing helpers shared by the tasks' `render`: a fixed class palette and labelled text (OpenCV,
imported on first use)."""
from __future__ import annotations

import numpy as np

from edgert.errors import InputError


def cv2():
    try:
        import cv2 as _cv2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise InputError("drawing results needs OpenCV: pip install opencv-python-headless") from e
    return _cv2


def _voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map (VOCdevkit's labelcolormap): the bits of the class index spread
    over R, G and B from the most significant bit down.  (256, 3) uint8."""
    idx = np.arange(256)
    pal = np.zeros((256, 3), np.int64)
    for j in range(8):                      # 8 bit planes, not pixels
        for ch in range(3):
            pal[:, ch] |= ((idx >> (3 * j + ch)) & 1) << (7 - j)
    return pal.astype(np.uint8)


PALETTE = _voc_palette()


def color(index: int) -> tuple[int, int, int]:
    """A class colour (RGB); index 0 (VOC black) is replaced by white so it stays visible."""
    c = PALETTE[int(index) % 256] if int(index) % 256 else np.array([255, 255, 255])
    return int(c[0]), int(c[1]), int(c[2])


def check_image(image_rgb: np.ndarray) -> np.ndarray:
    """A contiguous copy of an (H, W, 3) uint8 image to draw on."""
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"render wants an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
    return np.ascontiguousarray(img).copy()


def font_scale(img: np.ndarray) -> float:
    return float(np.clip(min(img.shape[:2]) / 640.0, 0.35, 1.5))


def _font(img: np.ndarray) -> tuple[float, int]:
    scale = font_scale(img)
    return scale, max(1, int(round(scale * 1.5)))


def line_height(img: np.ndarray) -> int:
    """Height in pixels of one put_label box on this image."""
    c = cv2()
    scale, thick = _font(img)
    (_, th), base = c.getTextSize("Ag", c.FONT_HERSHEY_SIMPLEX, scale, thick)
    return th + base + 2


def put_label(img: np.ndarray, text: str, org: tuple[int, int], rgb: tuple[int, int, int]) -> None:
    """`text` on a filled box whose bottom-left corner is `org` (x, y), kept inside the image."""
    c = cv2()
    scale, thick = _font(img)
    (tw, th), base = c.getTextSize(text, c.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = img.shape[:2]
    x = int(np.clip(org[0], 0, max(0, w - tw - 2)))
    y = int(np.clip(org[1], th + base + 2, max(th + base + 2, h - 1)))
    c.rectangle(img, (x, y - th - base - 2), (x + tw + 2, y), rgb, -1)
    ink = (0, 0, 0) if sum(rgb) > 382 else (255, 255, 255)
    c.putText(img, text, (x + 1, y - base - 1), c.FONT_HERSHEY_SIMPLEX, scale, ink, thick, c.LINE_AA)
