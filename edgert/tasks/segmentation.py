"""`segmentation`: per-pixel classes (argmax over the channel axis), mapped to the source frame.

The class map is carried in the result run-length encoded at the model's output resolution (so the
result stays JSON and bounded by the model, not the camera); pixel counts are taken on the map
resized to the source frame with nearest-neighbour sampling."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.errors import InputError
from edgert.tasks._draw import PALETTE, check_image
from edgert.tasks.base import FrameMeta, Task, first_output, labels_param, param, register

MAX_CLASSES = 1 << 16         # class ids of a decided [H, W] map (pixel counts use bincount)


def nearest_resize(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w) map -> (H, W) sampling the pixel centres, as Pillow's NEAREST does (edgert.preprocess)."""
    h, w = m.shape
    H, W = int(hw[0]), int(hw[1])
    if (h, w) == (H, W):
        return m
    rows = np.minimum(((np.arange(H) + 0.5) * (h / H)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * (w / W)).astype(np.int64), w - 1)
    return m[rows[:, None], cols[None, :]]


def rle_encode(m: np.ndarray) -> dict:
    """Row-major runs of a 2-D integer map: {"size": [h, w], "values": [...], "counts": [...]}."""
    flat = m.reshape(-1)
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1]) if flat.size else \
        np.zeros(0, np.int64)
    counts = np.diff(np.append(starts, flat.size))
    return {"size": [int(m.shape[0]), int(m.shape[1])], "values": flat[starts].tolist(),
            "counts": counts.tolist()}


def rle_decode(rle: dict) -> np.ndarray:
    h, w = (int(v) for v in rle["size"])
    values = np.asarray(rle["values"], np.int64)
    counts = np.asarray(rle["counts"], np.int64)
    if values.shape != counts.shape or counts.ndim != 1 or (counts < 0).any() or counts.sum() != h * w:
        raise InputError(f"malformed run-length mask (size {h}x{w}, {counts.size} runs)")
    return np.repeat(values, counts).reshape(h, w)


@register
class Segmentation(Task):
    name = "segmentation"

    @dataclass(frozen=True)
    class Params:
        labels: tuple[str, ...] = labels_param()
        alpha: float = param(0.5, "float", 0.0, 1.0)     # overlay opacity in render

    def class_map(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """(h, w) int class map from [1, C, h, w] scores (argmax over C), [1, h, w, C] when the
        labels say the last axis holds the classes, or an already-decided [1, h, w] / [h, w] map.
        One channel (or a float map without one) is foreground where it exceeds 0.5 for
        probabilities in [0, 1], else 0 (logits)."""
        x = raw = first_output(outputs, self.name)
        while x.ndim > 3 and x.shape[0] == 1:
            x = x[0]                                     # batch of one
        if x.ndim == 3:
            n = len(self.params.labels)
            if n and x.shape[-1] == n and x.shape[0] != n:
                x = np.moveaxis(x, -1, 0)                # NHWC output
            if x.shape[0] == 1:
                x = x[0]
        if x.ndim == 2 and x.size:
            m = x.astype(np.int64) if x.dtype.kind in "iub" else self._binary(x)
        elif x.ndim == 3 and x.size:
            x = np.where(np.isnan(x), -np.inf, x) if x.dtype.kind == "f" else x
            m = np.argmax(x, axis=0).astype(np.int64)
        else:
            raise InputError(f"segmentation wants [1, C, H, W] scores or an [H, W] map, got "
                             f"{tuple(raw.shape)}")
        if m.min() < 0 or m.max() >= MAX_CLASSES:
            raise InputError(f"segmentation map holds class {int(m.min() if m.min() < 0 else m.max())} "
                             f"(want 0..{MAX_CLASSES - 1})")
        return m

    @staticmethod
    def _binary(x: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(x.astype(np.float64), nan=0.0)
        t = 0.5 if x.size and x.min() >= 0.0 and x.max() <= 1.0 else 0.0
        return (x > t).astype(np.int64)

    def postprocess(self, outputs: dict[str, np.ndarray], meta: FrameMeta) -> dict:
        m = self.class_map(outputs)
        full = nearest_resize(m, meta.image_hw)
        counts = np.bincount(full.reshape(-1), minlength=1)
        total = int(full.size)
        present = np.flatnonzero(counts)
        return {"classes": [{"index": int(i), "label": self.label(int(i)), "pixels": int(counts[i]),
                             "fraction": float(counts[i] / total)} for i in present],
                "mask_shape": [int(full.shape[0]), int(full.shape[1])],
                "mask": rle_encode(m)}

    def render(self, image_rgb: np.ndarray, result: dict) -> np.ndarray:
        """Blend the class colours (fixed PASCAL VOC palette) over the frame; class 0 is treated as
        background and left uncoloured."""
        img = check_image(image_rgb)
        if "mask" not in result:
            return img
        m = nearest_resize(rle_decode(result["mask"]), img.shape[:2])
        fg = m > 0
        a = np.float32(self.params.alpha)
        colours = PALETTE[m % 256].astype(np.float32)
        blended = img.astype(np.float32) * (1 - a) + colours * a
        img[fg] = np.clip(np.rint(blended[fg]), 0, 255).astype(np.uint8)
        return img
