"""decode.py and targets.py: numpy only, the pieces the runtime shares with training."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.bev.rig import BevGrid
from edgert.bev.schema import BOX_FIELDS, CLASSES
from zoo.bev.decode import BOX_REG, IMAGE_MEAN, IMAGE_STD, decode_boxes, preprocess, seg_to_grid
from zoo.bev.metrics import confusion, iou_per_class, miou
from zoo.bev.targets import object_targets

GRID = BevGrid(50, 1.0)


def _boxes():
    rows = [(CLASSES.index("car"), 10.3, -4.2, 0.8, 4.5, 1.9, 1.6, 0.4, 6.0, 0.5),
            (CLASSES.index("truck"), -15.6, 7.7, 1.6, 8.0, 2.5, 3.2, -2.9, -3.0, 0.0),
            (CLASSES.index("pedestrian"), 3.2, 6.1, 0.9, 0.7, 0.7, 1.75, 1.2, 0.0, 1.1),
            (CLASSES.index("cone"), -2.4, -5.3, 0.4, 0.45, 0.45, 0.75, 0.0, 0.0, 0.0),
            (CLASSES.index("car"), 40.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0, 0.0, 0.0)]    # off the grid
    return np.array(rows, np.float32)


def test_targets_then_decode_recovers_boxes():
    boxes = _boxes()
    heat, reg, mask = object_targets(boxes, GRID)
    assert heat.shape == (4, 50, 50) and reg.shape == (len(BOX_REG), 50, 50)
    assert mask.sum() == 4 and heat.max() == 1.0 and (heat == 1.0).sum() == 4
    out, scores = decode_boxes(heat[None], reg[None], GRID, score_min=0.99)
    assert out.shape == (4, len(BOX_FIELDS)) and (scores == 1.0).all()
    out = out[np.lexsort((out[:, 1], out[:, 0]))]
    exp = boxes[:4][np.lexsort((boxes[:4, 1], boxes[:4, 0]))]
    exp[:, 7] = np.arctan2(np.sin(exp[:, 7]), np.cos(exp[:, 7]))
    np.testing.assert_allclose(out, exp, rtol=1e-5, atol=1e-4)


def test_decode_keeps_peaks_only_and_orders_by_score():
    heat = np.zeros((4, 50, 50), np.float32)
    heat[0, 10, 10], heat[0, 10, 11] = 0.9, 0.8          # a neighbour of a stronger peak: suppressed
    heat[2, 30, 5] = 0.95
    heat[1, 40, 40] = 0.2                                # under the threshold
    reg = np.zeros((len(BOX_REG), 50, 50), np.float32)
    boxes, scores = decode_boxes(heat, reg, GRID, score_min=0.3)
    np.testing.assert_allclose(scores, [0.95, 0.9])
    assert boxes[0, 0] == CLASSES.index("pedestrian") and boxes[1, 0] == CLASSES.index("car")
    # cell (10, 10) centre: x = 25 - 10.5, y = 25 - 10.5; size exp(0) = 1
    np.testing.assert_allclose(boxes[1, 1:3], [14.5, 14.5])
    np.testing.assert_allclose(boxes[1, 4:7], [1, 1, 1])


def test_preprocess_normalises_and_masks_missing():
    f = np.full((96, 160, 3), 255, np.uint8)
    f[..., 1] = 0
    images, mask = preprocess([f, None, f, f, f, f], 96, 160)
    assert images.shape == (6, 3, 96, 160) and images.dtype == np.float32
    np.testing.assert_allclose(mask, [1, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(images[0, 0], (1 - IMAGE_MEAN) / IMAGE_STD)
    np.testing.assert_allclose(images[0, 1], (0 - IMAGE_MEAN) / IMAGE_STD)
    assert (images[1] == 0).all()
    with pytest.raises(ValueError, match="frame 0"):
        preprocess([f[:10]], 96, 160)


def test_seg_to_grid_and_iou():
    seg = np.zeros((1, 6, 4, 4), np.float32)
    seg[0, 1, :2] = 1                                    # top half road
    grid = seg_to_grid(seg)
    assert grid.dtype == np.uint8 and (grid[:2] == 1).all() and (grid[2:] == 0).all()
    gt = np.zeros((4, 4), np.uint8)
    gt[:3] = 1
    conf = confusion(grid, gt)
    iou = iou_per_class(conf)
    np.testing.assert_allclose(iou[:2], [4 / 8, 8 / 12])
    assert np.isnan(iou[2:]).all()
    np.testing.assert_allclose(miou(conf), (0.5 + 2 / 3) / 2)
