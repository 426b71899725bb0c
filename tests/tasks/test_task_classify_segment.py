"""classification, segmentation and raw tasks: results and renders."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgert.errors import InputError
from edgert.tasks import FrameMeta, get_task
from edgert.tasks._draw import PALETTE
from edgert.tasks.classification import Classification
from edgert.tasks.segmentation import Segmentation, nearest_resize, rle_decode, rle_encode

META = FrameMeta((8, 8), (4, 4))


# --------------------------------------------------------------------------- classification
def test_top_k_with_labels_from_logits():
    task = get_task("classification").from_json({"top_k": 3, "labels": ["a", "b", "c", "d"]})
    logits = np.array([[1.0, 3.0, 2.0, 0.0]], np.float32)
    res = task.postprocess({"logits": logits}, META)
    e = np.exp(logits[0] - 3.0)
    p = e / e.sum()
    assert [(t["index"], t["label"]) for t in res["top"]] == [(1, "b"), (2, "c"), (0, "a")]
    assert [t["score"] for t in res["top"]] == pytest.approx([p[1], p[2], p[0]])
    json.dumps(res)


def test_softmax_auto_keeps_a_distribution():
    probs = np.array([0.1, 0.6, 0.3], np.float32)
    res = Classification().postprocess({"p": probs}, META)
    assert [t["score"] for t in res["top"]] == pytest.approx([0.6, 0.3, 0.1])     # top_k 5 > C = 3
    assert [t["label"] for t in res["top"]] == [None, None, None]
    forced = Classification(Classification.Params(softmax=True)).postprocess({"p": probs}, META)
    assert forced["top"][0]["score"] < 0.6
    never = Classification(Classification.Params(softmax=False))
    assert never.postprocess({"p": np.array([[5.0, -1.0]])}, META)["top"][0]["score"] == 5.0


def test_classification_ties_and_bad_shapes():
    res = Classification(Classification.Params(top_k=2)).postprocess({"p": np.full((1, 4), 0.25)}, META)
    assert [t["index"] for t in res["top"]] == [0, 1]
    with pytest.raises(InputError):
        Classification().postprocess({"p": np.zeros((1, 3, 4, 4))}, META)


def test_classification_render():
    task = Classification(Classification.Params(labels=("cat", "dog")))
    res = task.postprocess({"p": np.array([[0.2, 0.8]])}, META)
    img = np.zeros((120, 160, 3), np.uint8)
    out = task.render(img, res)
    assert out.shape == img.shape and out.dtype == np.uint8 and img.max() == 0
    assert out[:40].any() and not out[80:].any()          # the label at the top-left


# --------------------------------------------------------------------------- segmentation
def _scores() -> np.ndarray:
    """[1, 3, 4, 4]: class 1 in the top-left 2 x 2, class 2 in the bottom row, else class 0."""
    s = np.zeros((1, 3, 4, 4), np.float32)
    s[0, 0] = 1.0
    s[0, 1, :2, :2] = 2.0
    s[0, 2, 3, :] = 3.0
    return s


def test_segmentation_classes_at_source_resolution():
    task = get_task("segmentation").from_json({"labels": ["bg", "cat", "road"]})
    res = task.postprocess({"out": _scores()}, FrameMeta((8, 12), (4, 4)))
    assert res["mask_shape"] == [8, 12]
    got = {c["label"]: (c["index"], c["pixels"]) for c in res["classes"]}
    # nearest upsampling x2 rows, x3 cols: every model pixel becomes 6 source pixels
    assert got == {"bg": (0, 6 * 16 - 6 * 4 - 6 * 4), "cat": (1, 6 * 4), "road": (2, 6 * 4)}
    assert sum(c["fraction"] for c in res["classes"]) == pytest.approx(1.0)
    json.dumps(res)


def test_segmentation_overlay_shape_and_colours():
    task = Segmentation(Segmentation.Params(alpha=0.5))
    res = task.postprocess({"out": _scores()}, FrameMeta((8, 8), (4, 4)))
    img = np.full((8, 8, 3), 100, np.uint8)
    out = task.render(img, res)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8 and (img == 100).all()
    np.testing.assert_array_equal(out[4:6, 0:8], 100)                  # class 0: background, untouched
    want1 = np.rint(100 * 0.5 + PALETTE[1] * 0.5)                      # VOC class 1 (128, 0, 0)
    np.testing.assert_array_equal(out[0:4, 0:4], np.broadcast_to(want1, (4, 4, 3)))
    want2 = np.rint(100 * 0.5 + PALETTE[2] * 0.5)
    np.testing.assert_array_equal(out[6:8, :], np.broadcast_to(want2, (2, 8, 3)))
    # a frame of another size: the mask is resized to it
    assert task.render(np.zeros((5, 7, 3), np.uint8), res).shape == (5, 7, 3)


def test_segmentation_map_forms():
    task = Segmentation()
    binary = np.zeros((1, 1, 4, 4), np.float32)
    binary[..., :2] = 0.9
    res = task.postprocess({"p": binary}, META)
    assert [(c["index"], c["pixels"]) for c in res["classes"]] == [(0, 32), (1, 32)]
    decided = np.zeros((1, 4, 4), np.int64)
    decided[0, 0, 0] = 5
    assert [c["index"] for c in task.postprocess({"m": decided}, META)["classes"]] == [0, 5]
    nhwc = np.moveaxis(_scores(), 1, -1)                                 # [1, 4, 4, 3]
    lab = Segmentation(Segmentation.Params(labels=("a", "b", "c")))
    assert lab.postprocess({"o": nhwc}, META)["classes"] == lab.postprocess({"o": _scores()}, META)["classes"]
    with pytest.raises(InputError):
        task.postprocess({"m": np.full((1, 4, 4), -1, np.int64)}, META)
    with pytest.raises(InputError):
        task.postprocess({"m": np.zeros((1, 2, 3, 4, 5), np.float32)}, META)


def test_rle_round_trip_and_nearest_resize():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 4, (7, 9))
    np.testing.assert_array_equal(rle_decode(json.loads(json.dumps(rle_encode(m)))), m)
    with pytest.raises(InputError):
        rle_decode({"size": [2, 2], "values": [1], "counts": [3]})
    np.testing.assert_array_equal(nearest_resize(np.array([[1, 2], [3, 4]]), (4, 4)),
                                  np.kron(np.array([[1, 2], [3, 4]]), np.ones((2, 2), int)))


# --------------------------------------------------------------------------- raw
def test_raw_statistics_and_render():
    task = get_task("raw")()
    res = task.postprocess({"y": np.arange(6, dtype=np.float32).reshape(2, 3)}, META)
    assert res == {"outputs": {"y": {"shape": [2, 3], "dtype": "float32", "min": 0.0, "max": 5.0,
                                     "mean": 2.5}}}
    img = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    out = task.render(img, res)
    np.testing.assert_array_equal(out, img)
    assert out is not img
    with pytest.raises(InputError):
        task.render(np.zeros((4, 5), np.uint8), res)
