"""Accuracy of BEV outputs against ground truth: BEV IoU per class and nuScenes-style detection AP.

IoU accumulates intersections and unions over every scored frame (dataset-level IoU, as BEV
segmentation benchmarks report it), per class 1..5 of CLASSES; the mean is over classes that occur
in the ground truth.  AP follows the nuScenes detection benchmark (nuscenes-devkit
`detection/algo.py`): a prediction matches the nearest unmatched ground-truth box of its class and
frame whose centre is within the threshold (0.5, 1, 2, 4 m on the ground plane), predictions taken
in descending score order over all frames; precision is interpolated at 101 recall points, recall
below 0.1 is dropped and precision above 0.1 renormalised; AP is averaged over the thresholds, then
over the object classes that occur in the ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgert.bev.schema import BOX_FIELDS, CLASSES, OBJECT_CLASSES

_CLS, _X, _Y = BOX_FIELDS.index("cls"), BOX_FIELDS.index("x"), BOX_FIELDS.index("y")
MIN_RECALL, MIN_PRECISION = 0.1, 0.1        # nuScenes DetectionConfig defaults
DISTANCE_THRESHOLDS_M = (0.5, 1.0, 2.0, 4.0)


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else float("nan")


@dataclass
class IouAccumulator:
    n_classes: int = len(CLASSES)
    inter: np.ndarray = field(init=False)
    union: np.ndarray = field(init=False)
    gt_cells: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.inter, self.union, self.gt_cells = (np.zeros(self.n_classes, np.int64) for _ in range(3))

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        p = np.bincount(pred.ravel(), minlength=self.n_classes)[:self.n_classes]
        g = np.bincount(gt.ravel(), minlength=self.n_classes)[:self.n_classes]
        both = np.bincount(gt[pred == gt].ravel(), minlength=self.n_classes)[:self.n_classes]
        self.inter += both
        self.union += p + g - both
        self.gt_cells += g

    def per_class(self) -> dict[str, float | None]:
        return {CLASSES[c]: (float(self.inter[c] / self.union[c]) if self.gt_cells[c] else None)
                for c in range(1, self.n_classes)}

    def mean(self) -> float:
        return _mean(list(self.per_class().values()))


@dataclass
class DetectionAccumulator:
    """Boxes per frame; `ap_per_class()` scores them all at once (matching is global by score)."""
    thresholds_m: tuple[float, ...] = DISTANCE_THRESHOLDS_M
    _frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray) -> None:
        pb = np.asarray(pred_boxes, np.float32)
        pb = pb if pb.ndim == 2 else pb.reshape(-1, len(BOX_FIELDS))
        self._frames.append((pb, np.asarray(pred_scores, np.float32).reshape(-1),
                             np.asarray(gt_boxes, np.float32).reshape(-1, len(BOX_FIELDS))))

    def ap_per_class(self) -> dict[str, float | None]:
        return {name: self._ap_class(CLASSES.index(name)) for name in OBJECT_CLASSES}

    def mean_ap(self) -> float:
        return _mean(list(self.ap_per_class().values()))

    def _ap_class(self, cls: int) -> float | None:
        preds, gts = [], []
        for f, (pb, ps, gb) in enumerate(self._frames):
            m = np.rint(pb[:, _CLS]) == cls
            preds += [(float(s), f, float(x), float(y)) for s, x, y in zip(ps[m], pb[m, _X], pb[m, _Y])]
            gts.append(gb[np.rint(gb[:, _CLS]) == cls][:, [_X, _Y]])
        n_gt = sum(len(g) for g in gts)
        if n_gt == 0:
            return None
        order = sorted(range(len(preds)), key=lambda i: -preds[i][0])    # stable: ties keep frame order
        return float(np.mean([_ap([preds[i] for i in order], gts, n_gt, t) for t in self.thresholds_m]))


def _ap(preds: list[tuple[float, int, float, float]], gts: list[np.ndarray], n_gt: int, threshold_m: float) -> float:
    taken = [np.zeros(len(g), bool) for g in gts]
    tp = np.zeros(len(preds))
    for i, (_, f, x, y) in enumerate(preds):
        g = gts[f]
        if not len(g):
            continue
        d = np.hypot(g[:, 0] - x, g[:, 1] - y)
        d[taken[f]] = np.inf
        j = int(np.argmin(d))
        if d[j] < threshold_m:
            taken[f][j] = True
            tp[i] = 1
    if not len(preds):
        return 0.0
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    prec, rec = ctp / (ctp + cfp), ctp / n_gt
    prec_at = np.interp(np.linspace(0, 1, 101), rec, prec, right=0)
    prec_at = prec_at[round(100 * MIN_RECALL) + 1:] - MIN_PRECISION
    return float(np.mean(np.clip(prec_at, 0, None)) / (1 - MIN_PRECISION))
