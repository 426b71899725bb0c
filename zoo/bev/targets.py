"""Ground truth -> training targets: the CenterPoint-style object targets on the model grid (the
segmentation target is the ground-truth grid itself).

Heatmap: per object class, a Gaussian around the cell that holds each box centre (CenterNet,
arXiv 1904.07850, §3: peak 1 at that cell, overlaps keep the max), sigma from the box footprint.
Box fields (decode.BOX_REG) are the regression targets at those centre cells only.
"""
from __future__ import annotations

import numpy as np

from edgert.bev.rig import BevGrid
from edgert.bev.schema import OBJECT_CLASSES
from zoo.bev.decode import BOX_REG, OBJECT_CLASS_IDS

MIN_SIGMA_CELLS = 0.5


def object_targets(boxes: np.ndarray, grid: BevGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """boxes [N, len(BOX_FIELDS)] -> (heatmap [n_obj, S, S], boxreg [len(BOX_REG), S, S],
    reg_mask [S, S]: 1 at centre cells).  Boxes whose class is not an object class or whose centre is
    off the grid are skipped."""
    s = grid.size
    heat = np.zeros((len(OBJECT_CLASSES), s, s), np.float32)
    reg = np.zeros((len(BOX_REG), s, s), np.float32)
    mask = np.zeros((s, s), np.float32)
    if boxes is None or len(boxes) == 0:
        return heat, reg, mask
    cls_to_ch = {c: i for i, c in enumerate(OBJECT_CLASS_IDS)}
    rc = grid.to_cell(boxes[:, 1:3])
    rr, cc = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    for b, (r, c) in zip(boxes, rc):
        ch = cls_to_ch.get(int(round(float(b[0]))))
        ri, ci = int(np.floor(r)), int(np.floor(c))
        if ch is None or not (0 <= ri < s and 0 <= ci < s):
            continue
        sigma = max(MIN_SIGMA_CELLS, 0.25 * max(float(b[4]), float(b[5])) / grid.cell_m)
        g = np.exp(-((rr - ri) ** 2 + (cc - ci) ** 2) / (2 * sigma ** 2))
        np.maximum(heat[ch], g, out=heat[ch])
        heat[ch, ri, ci] = 1.0
        reg[:, ri, ci] = (r - ri - 0.5, c - ci - 0.5, b[3], np.log(max(b[4], 1e-2)), np.log(max(b[5], 1e-2)),
                          np.log(max(b[6], 1e-2)), np.sin(b[7]), np.cos(b[7]), b[8], b[9])
        mask[ri, ci] = 1.0
    return heat, reg, mask
