"""`classification`: the top-k classes of a [1, C] (or [C]) score vector."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.errors import InputError
from edgert.tasks._draw import check_image, color, line_height, put_label
from edgert.tasks.base import FrameMeta, Task, first_output, labels_param, param, register

# "auto" treats the output as probabilities when it already is a distribution: every value in
# [0, 1] and the sum within this of 1 (float32 softmax outputs sum to 1 within ~1e-6 per 1k classes).
SUM_TOLERANCE = 1e-3


def softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - np.max(x)
    e = np.exp(z)
    return e / e.sum()


def is_distribution(x: np.ndarray) -> bool:
    return bool(x.size and x.min() >= 0.0 and x.max() <= 1.0 and abs(float(x.sum()) - 1.0) <= SUM_TOLERANCE)


@register
class Classification(Task):
    name = "classification"

    @dataclass(frozen=True)
    class Params:
        top_k: int = param(5, "int", 1, 100)
        labels: tuple[str, ...] = labels_param()
        softmax: bool | str = param("auto", "auto_bool")   # "auto": only when not a distribution

    def scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        x = first_output(outputs, self.name)
        if x.ndim == 0 or x.size == 0 or (x.ndim > 1 and x.size != max(x.shape)):
            raise InputError(f"classification wants one score vector ([1, C] or [C]), got shape "
                             f"{tuple(x.shape)}")
        x = np.nan_to_num(x.reshape(-1).astype(np.float64), nan=-np.inf)
        sm = self.params.softmax
        if sm is True or (sm == "auto" and not is_distribution(x)):
            x = softmax(x)
        return x

    def postprocess(self, outputs: dict[str, np.ndarray], meta: FrameMeta) -> dict:
        s = self.scores(outputs)
        k = min(self.params.top_k, s.size)
        top = np.argsort(-s, kind="stable")[:k]
        return {"top": [{"index": int(i), "label": self.label(int(i)), "score": float(s[i])}
                        for i in top]}

    def render(self, image_rgb: np.ndarray, result: dict) -> np.ndarray:
        img = check_image(image_rgb)
        step = line_height(img) + 2
        for row, t in enumerate(result.get("top", [])[:5]):
            text = f"{t['label'] if t.get('label') is not None else t['index']}: {t['score']:.3f}"
            put_label(img, text, (2, 2 + (row + 1) * step), color(t["index"]))
        return img
