"""Vectorised NMS (edgert/tasks/_nms.py) against a brute-force greedy reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.tasks.detection import batched_nms, nms


def _iou(a, b) -> float:
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    union = area_a + max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0) - inter
    return inter / union if union > 0 else 0.0


def _ref_nms(boxes, scores, thr, max_det) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(_iou(boxes[j], boxes[i]) <= thr for j in keep):
            keep.append(i)
    return keep[:max_det]


# integer corners (exact in float64, so the reference and the vectorised IoU agree to the bit);
# few distinct scores, so ties are common
_box = st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 30), st.integers(0, 30)).map(
    lambda t: [float(t[0]), float(t[1]), float(t[0] + t[2]), float(t[1] + t[3])])
_case = st.lists(st.tuples(_box, st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), st.integers(0, 2)),
                 min_size=0, max_size=40)


@settings(max_examples=150, deadline=None)
@given(_case, st.sampled_from([0.0, 0.3, 0.45, 0.5, 0.7, 1.0]), st.integers(1, 50))
def test_nms_matches_brute_force(case, thr, max_det):
    boxes = [c[0] for c in case]
    scores = [c[1] for c in case]
    got = nms(np.array(boxes, np.float64).reshape(-1, 4), np.array(scores), thr, max_det)
    assert got.dtype == np.int64
    assert got.tolist() == _ref_nms(boxes, scores, thr, max_det)


@settings(max_examples=150, deadline=None)
@given(_case, st.sampled_from([0.3, 0.5, 0.7]), st.integers(1, 50))
def test_batched_nms_is_per_class_nms(case, thr, max_det):
    boxes = [c[0] for c in case]
    scores = [c[1] for c in case]
    classes = [c[2] for c in case]
    kept: list[int] = []
    for k in set(classes):
        idx = [i for i, c in enumerate(classes) if c == k]
        kept += [idx[j] for j in _ref_nms([boxes[i] for i in idx], [scores[i] for i in idx], thr, len(idx))]
    want = sorted(kept, key=lambda i: (-scores[i], i))[:max_det]
    got = batched_nms(np.array(boxes, np.float64).reshape(-1, 4), np.array(scores), np.array(classes),
                      thr, max_det)
    assert got.tolist() == want


def test_nms_hand_case():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5, 10).tolist() == [3, 2]
    assert nms(boxes, scores, 0.5, 1).tolist() == [3]
    assert batched_nms(boxes, scores, np.array([0, 1, 0, 0]), 0.5, 10).tolist() == [3, 1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5, 10).tolist() == []


def test_nms_random_float_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (600, 2))
    wh = rng.uniform(5, 80, (600, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(0, 1, 600)
    keep = nms(boxes, scores, 0.45, 100)
    assert len(keep) == 100 and np.all(np.diff(scores[keep]) <= 0)
    assert keep.tolist() == _ref_nms(boxes.tolist(), scores.tolist(), 0.45, 100)


def test_nms_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        nms(np.zeros((3, 4)), np.zeros(2), 0.5, 10)
