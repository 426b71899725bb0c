"""Greedy non-maximum suppression in numpy, vectorised over the remaining candidates per kept box."""
from __future__ import annotations

import numpy as np


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of `boxes` (N, 4); a degenerate box has area 0 and IoU 0."""
    iw = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0)
    ih = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0)
    inter = iw * ih
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float, max_det: int) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best score first (ties: lower index first), at most
    `max_det`.  A box is dropped when its IoU with an already kept box exceeds `iou_thresh`
    (torchvision.ops.nms semantics).  boxes (N, 4) x1, y1, x2, y2; scores (N,)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[i], boxes[rest]) <= iou_thresh]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_thresh: float,
                max_det: int) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other.  Each class is shifted
    by its own offset larger than the span of all boxes (the coordinate trick of
    torchvision.ops.batched_nms), then one `nms` runs over all."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted = boxes + (np.asarray(classes, np.float64).reshape(-1) * span)[:, None]
    return nms(shifted, scores, iou_thresh, max_det)
