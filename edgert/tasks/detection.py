"""`detection`: decode YOLO or SSD outputs, NMS, boxes in source-frame pixels.

* format "yolo": one output [1, N, 4+C] or [1, 4+C, N] (YOLOv8: cx, cy, w, h in input pixels, then C
  class scores) or, with `objectness`, [1, N, 5+C] (YOLOv5: cx, cy, w, h, objectness, C class
  probabilities; score = objectness × class probability).  Each candidate keeps its best class
  (Ultralytics' default, multi_label off) and is kept when that score exceeds `score_thresh`.
* format "ssd": boxes [1, N, 4] normalised to [0, 1] in `box_order` (TF Object Detection API:
  y1, x1, y2, x2) and scores [1, N, C] whose class 0 is the background; the best non-background
  class is reported with its index in the score tensor (so `labels[0]` is the background's name).
Then class-aware NMS (or class-agnostic) in the model's coordinates and at most `max_det` boxes,
mapped back through the preprocessing resize (input_hw -> image_hw) and clipped to the frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.errors import InputError
from edgert.tasks._draw import check_image, color, cv2, put_label
from edgert.tasks._nms import batched_nms, nms
from edgert.tasks.base import FrameMeta, Task, first_output, labels_param, param, register

__all__ = ["Detection", "batched_nms", "nms", "decode_yolo", "decode_ssd"]

# Ultralytics' non_max_suppression caps the candidates entering NMS at max_nms = 30000.
MAX_NMS_CANDIDATES = 30000


def _squeeze_batch(x: np.ndarray, rank: int, what: str) -> np.ndarray:
    while x.ndim > rank and x.shape[0] == 1:
        x = x[0]
    if x.ndim != rank:
        raise InputError(f"{what}: unexpected output shape {tuple(x.shape)}")
    return x


def decode_yolo(out: np.ndarray, objectness: bool, num_classes: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (boxes xyxy in input pixels (N, 4), best score (N,), best class (N,)).
    The attribute axis is the one of length 4+C(+1) when the class count is known (labels), else the
    shorter one (YOLOv8 exports [1, 84, 8400], YOLOv5 [1, 25200, 85])."""
    x = _squeeze_batch(np.asarray(out), 2, "yolo detection")
    head = 5 if objectness else 4
    want = None if num_classes is None else head + num_classes
    if want is not None and (x.shape[0] == want) != (x.shape[1] == want):
        attr_first = x.shape[0] == want
    elif x.shape[0] != x.shape[1]:
        attr_first = x.shape[0] < x.shape[1]
    else:
        attr_first = not objectness
    if attr_first:
        x = x.T
    if x.shape[1] <= head:
        raise InputError(f"yolo detection: {x.shape[1]} values per candidate leave no class scores "
                         f"(want {head} + C)")
    x = x.astype(np.float32, copy=False)
    cls_scores = x[:, head:]
    if objectness:
        cls_scores = cls_scores * x[:, 4:5]
    cls = np.argmax(np.nan_to_num(cls_scores, nan=-np.inf), axis=1)
    score = np.take_along_axis(cls_scores, cls[:, None], axis=1)[:, 0]
    cx, cy, w, h = x[:, 0], x[:, 1], x[:, 2], x[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes, score, cls


def decode_ssd(outputs: dict[str, np.ndarray], box_order: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (boxes xyxy normalised (N, 4), best non-background score (N,), its class index (N,)).
    The boxes are the output whose last axis is 4 (the first such, when the scores have 4 classes
    too); the scores, the other one with the same N."""
    arrs = [(k, np.asarray(v)) for k, v in outputs.items()]
    arrs = [(k, _squeeze_batch(v, 2, f"ssd output {k!r}")) for k, v in arrs if v.ndim >= 2]
    box_i = next((i for i, (_, v) in enumerate(arrs) if v.shape[1] == 4), None)
    if box_i is None:
        raise InputError("ssd detection: no output of shape [1, N, 4] (boxes)")
    boxes = arrs[box_i][1]
    sc = next((v for i, (_, v) in enumerate(arrs) if i != box_i and v.shape[0] == boxes.shape[0]), None)
    if sc is None:
        raise InputError(f"ssd detection: no [1, {boxes.shape[0]}, C] scores beside the boxes")
    if sc.shape[1] < 2:
        raise InputError("ssd detection: the scores need a background class 0 and at least one class")
    fg = np.nan_to_num(sc[:, 1:].astype(np.float32, copy=False), nan=-np.inf)
    cls = np.argmax(fg, axis=1)
    score = np.take_along_axis(fg, cls[:, None], axis=1)[:, 0]
    b = boxes.astype(np.float32, copy=False)
    if box_order == "yxyx":
        b = b[:, [1, 0, 3, 2]]
    # corners in either order (some exports do not sort them)
    b = np.stack([np.minimum(b[:, 0], b[:, 2]), np.minimum(b[:, 1], b[:, 3]),
                  np.maximum(b[:, 0], b[:, 2]), np.maximum(b[:, 1], b[:, 3])], axis=1)
    return b, score, cls + 1


@register
class Detection(Task):
    name = "detection"

    @dataclass(frozen=True)
    class Params:
        format: str = param("yolo", "choice", choices=("yolo", "ssd"))
        objectness: bool = param(False, "bool")          # yolo: YOLOv5-style [1, N, 5+C]
        box_order: str = param("yxyx", "choice", choices=("yxyx", "xyxy"))   # ssd boxes
        score_thresh: float = param(0.25, "float", 0.0, 1.0)
        iou_thresh: float = param(0.45, "float", 0.0, 1.0)
        max_det: int = param(300, "int", 1, 100000)
        labels: tuple[str, ...] = labels_param()
        class_agnostic: bool = param(False, "bool")

    def detect(self, outputs: dict[str, np.ndarray], meta: FrameMeta
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (boxes xyxy in source pixels (K, 4) float64, scores (K,), classes (K,)), best first."""
        p = self.params
        ih, iw = meta.image_hw
        if p.format == "yolo":
            n = len(p.labels) or None
            boxes, scores, cls = decode_yolo(first_output(outputs, self.name), p.objectness, n)
            mh, mw = meta.input_hw
            scale = np.array([iw / mw, ih / mh, iw / mw, ih / mh])
        else:
            boxes, scores, cls = decode_ssd(outputs, p.box_order)
            scale = np.array([iw, ih, iw, ih], np.float64)
        ok = (scores > p.score_thresh) & np.isfinite(boxes).all(axis=1)
        idx = np.flatnonzero(ok)
        if idx.size > MAX_NMS_CANDIDATES:
            idx = idx[np.argsort(-scores[idx], kind="stable")[:MAX_NMS_CANDIDATES]]
        b, s, c = boxes[idx].astype(np.float64), scores[idx].astype(np.float64), cls[idx]
        # NMS in the model's own coordinates (as Ultralytics and the TF OD API do), then undo the resize
        if p.class_agnostic:
            keep = nms(b, s, p.iou_thresh, p.max_det)
        else:
            keep = batched_nms(b, s, c, p.iou_thresh, p.max_det)
        b = b[keep] * scale
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, iw)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, ih)
        return b, s[keep], c[keep]

    def postprocess(self, outputs: dict[str, np.ndarray], meta: FrameMeta) -> dict:
        boxes, scores, classes = self.detect(outputs, meta)
        return {"boxes": [{"box": [float(v) for v in b], "score": float(s), "class": int(c),
                           "label": self.label(int(c))}
                          for b, s, c in zip(boxes, scores, classes)]}

    def render(self, image_rgb: np.ndarray, result: dict) -> np.ndarray:
        img = check_image(image_rgb)
        c = cv2()
        thick = max(1, round(min(img.shape[:2]) / 320))
        for d in result.get("boxes", []):
            x1, y1, x2, y2 = (int(round(v)) for v in d["box"])
            rgb = color(d["class"])
            c.rectangle(img, (x1, y1), (x2, y2), rgb, thick)
            name = d.get("label") if d.get("label") is not None else str(d["class"])
            put_label(img, f"{name} {d['score']:.2f}", (x1, y1), rgb)
        return img
