"""BEV segmentation IoU from a confusion matrix (numpy only; usable by the runtime's evaluation)."""
from __future__ import annotations

import numpy as np

from edgert.bev.schema import CLASSES


def confusion(pred: np.ndarray, gt: np.ndarray, n: int = len(CLASSES)) -> np.ndarray:
    """[n, n] counts, rows = ground truth, columns = prediction."""
    return np.bincount(gt.astype(np.int64).ravel() * n + pred.astype(np.int64).ravel(),
                       minlength=n * n).reshape(n, n)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for a class absent from both ground truth and prediction."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou(conf: np.ndarray) -> float:
    """Mean IoU over the classes that occur (in ground truth or prediction)."""
    return float(np.nanmean(iou_per_class(conf)))
