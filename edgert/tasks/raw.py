"""`raw`: no post-processing; summary statistics of every output (what `edgert run` prints)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.outputs import _stats
from edgert.tasks._draw import check_image
from edgert.tasks.base import FrameMeta, Task, register


@register
class Raw(Task):
    name = "raw"

    @dataclass(frozen=True)
    class Params:
        pass

    def postprocess(self, outputs: dict[str, np.ndarray], meta: FrameMeta) -> dict:
        return {"outputs": {k: _stats(np.asarray(v)) for k, v in outputs.items()}}

    def render(self, image_rgb: np.ndarray, result: dict) -> np.ndarray:
        return check_image(image_rgb)
