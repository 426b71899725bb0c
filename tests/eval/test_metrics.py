"""LPCVC 2023 Dice, IoU, pixel accuracy and top-k, checked by hand on tiny cases."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from edgert.errors import EvalError
from edgert.eval.metrics import (ClassificationMeter, SegmentationMeter, confusion, dice_image,
                                 dice_per_class, iou_per_class)

A = np.array


def test_confusion_rows_are_truth_cols_are_prediction():
    label = A([[0, 0], [1, 1]], np.uint8)
    pred = A([[0, 1], [1, 1]], np.uint8)
    c = confusion(pred, label, 3)
    assert c.dtype == np.int64
    assert c.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_dice_by_hand_with_a_class_absent_from_both():
    c = confusion(A([[0, 1], [1, 1]]), A([[0, 0], [1, 1]]), 3)
    d = dice_per_class(c)
    assert d[0] == pytest.approx(2 * 1 / (2 + 1))          # row 2, col 1
    assert d[1] == pytest.approx(2 * 2 / (2 + 3))          # row 2, col 3
    assert math.isnan(d[2])                                # in neither: 0/0, skipped
    assert dice_image(c) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_class_only_in_the_prediction_scores_zero_and_counts():
    label = np.zeros((2, 2), np.uint8)
    pred = A([[0, 0], [0, 2]], np.uint8)
    c = confusion(pred, label, 3)
    assert c[2].sum() == 0 and c[:, 2].sum() == 1          # row 0, col 1
    d = dice_per_class(c)
    assert d[2] == 0.0 and math.isnan(d[1])
    assert d[0] == pytest.approx(6 / 7)
    assert dice_image(c) == pytest.approx((6 / 7 + 0.0) / 2)


def test_ignore_pixels_are_skipped_whatever_is_predicted_there():
    label = A([[0, 255], [1, 255]], np.uint8)
    pred = A([[0, 2], [1, 2]], np.uint8)
    c = confusion(pred, label, 3)
    assert c.sum() == 2 and c[:, 2].sum() == 0
    assert dice_image(c) == 1.0


def test_every_pixel_ignored_gives_nan_without_warning():
    label = np.full((2, 2), 255, np.uint8)
    c = confusion(np.zeros((2, 2), np.uint8), label, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(dice_image(c))
    m = SegmentationMeter(3)
    assert math.isnan(m.add(np.zeros((2, 2), np.uint8), label))
    r = m.result()
    assert r["images"] == 1 and r["dice_mean"] is None and r["pixel_accuracy"] is None


def test_mean_over_images_differs_from_the_pooled_dice():
    a_label = np.zeros((4, 4), np.uint8)
    b_label = np.zeros((4, 4), np.uint8)
    b_label[3, 3] = 1                                       # one pixel of class 1, missed
    pred = np.zeros((4, 4), np.uint8)
    m = SegmentationMeter(2)
    assert m.add(pred, a_label) == 1.0
    assert m.add(pred, b_label) == pytest.approx((30 / 31 + 0) / 2)
    r = m.result()
    per_image = (1.0 + 15 / 31) / 2                         # LPCVC: mean of per-image Dice
    pooled = (62 / 63 + 0) / 2                              # Dice of the summed matrix
    assert r["dice_mean"] == pytest.approx(per_image)
    assert r["dice_pooled"] == pytest.approx(pooled)
    assert abs(per_image - pooled) > 0.2
    assert r["dice_per_image"] == pytest.approx([1.0, 15 / 31])


def test_iou_and_pixel_accuracy_by_hand():
    label = A([[0, 0], [1, 1]], np.uint8)
    pred = A([[0, 1], [1, 1]], np.uint8)
    iou = iou_per_class(confusion(pred, label, 3))
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(2 / 3) and math.isnan(iou[2])
    m = SegmentationMeter(3, names=("bg", "a", "b"))
    m.add(pred, label)
    r = m.result()
    assert r["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["pixel_accuracy"] == pytest.approx(3 / 4)
    pc = r["per_class"]
    assert [p["name"] for p in pc] == ["bg", "a", "b"]
    assert [p["pixels"] for p in pc] == [2, 2, 0]
    assert [p["images_present"] for p in pc] == [1, 1, 0]
    assert pc[2]["dice"] is None and pc[2]["iou"] is None and pc[2]["dice_mean_over_images"] is None


def test_per_class_dice_mean_over_images_skips_images_without_the_class():
    m = SegmentationMeter(2)
    m.add(A([[0, 1]]), A([[0, 1]]))          # class 1 dice 1
    m.add(A([[0, 0]]), A([[0, 1]]))          # class 1 dice 0
    m.add(A([[0, 0]]), A([[0, 0]]))          # class 1 absent: NaN, skipped
    pc = m.result()["per_class"]
    assert pc[1]["dice_mean_over_images"] == pytest.approx(0.5)
    assert pc[1]["images_present"] == 2
    assert pc[1]["dice"] == pytest.approx(2 * 1 / (2 + 1))


def test_result_is_strict_json():
    rng = np.random.default_rng(0)
    m = SegmentationMeter(14)
    for _ in range(3):
        m.add(rng.integers(0, 3, (8, 8)), rng.integers(0, 3, (8, 8)).astype(np.uint8))
    json.dumps(m.result(), allow_nan=False)


def test_matches_a_brute_force_count():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 14, (64, 48)).astype(np.uint8)
    label[rng.random(label.shape) < 0.1] = 255
    pred = rng.integers(0, 14, (64, 48))
    ref = np.zeros((14, 14), np.int64)
    keep = label != 255
    np.add.at(ref, (label[keep], pred[keep]), 1)
    assert (confusion(pred, label, 14) == ref).all()


@pytest.mark.parametrize("pred, label, msg", [
    (A([[0, 3]]), A([[0, 1]]), "prediction holds class 3"),
    (A([[0, -1]]), A([[0, 1]]), "prediction holds class -1"),
    (A([[0.0, 1.0]]), A([[0, 1]]), "integer class indices"),
    (A([[0, 1, 1]]), A([[0, 1]]), "does not match"),
    (A([[0, 1]]), A([[0, 7]]), "label holds class 7"),
])
def test_invalid_inputs_raise_eval_error(pred, label, msg):
    with pytest.raises(EvalError, match=msg):
        confusion(pred, label, 3)
    with pytest.raises(EvalError):
        SegmentationMeter(3).add(pred, label)


def test_classification_top1_top5_by_hand():
    s = A([0.1, 0.5, 0.2, 0.05, 0.1, 0.05])
    m = ClassificationMeter(6)
    m.add(s, 1)          # rank 0: top-1 and top-5
    m.add(s, 2)          # rank 1: top-5 only
    m.add(s, 3)          # four scores above it, tie with 5 broken by index: rank 4, top-5
    m.add(s, 5)          # four above, and class 3 ties first: rank 5, not top-5
    r = m.result()
    assert r["images"] == 4
    assert r["top1"] == pytest.approx(1 / 4)
    assert r["top5"] == pytest.approx(3 / 4)
    assert r["per_class_top1"] == [None, 1.0, 0.0, 0.0, None, 0.0]
    json.dumps(r, allow_nan=False)


def test_classification_ties_follow_argmax():
    m = ClassificationMeter(3)
    m.add(A([1.0, 1.0, 0.0]), 1)         # np.argmax picks class 0
    m.add(A([[1.0, 1.0, 0.0]]), 0)       # a batch of one is accepted
    assert m.result()["per_class_top1"] == [1.0, 0.0, None]


def test_classification_empty_and_invalid():
    m = ClassificationMeter(3)
    assert m.result() == {"images": 0, "top1": None, "top5": None, "per_class_top1": [None] * 3}
    with pytest.raises(EvalError, match="expected 3 class scores"):
        m.add(A([0.1, 0.2]), 0)
    with pytest.raises(EvalError, match="NaN"):
        m.add(A([0.1, np.nan, 0.2]), 0)
    with pytest.raises(EvalError, match="label 3"):
        m.add(A([0.1, 0.2, 0.3]), 3)
