"""DB text-detection post-process (edgert/tasks/text_detection.py) on hand-made probability maps,
and against RapidOCR's own DBPostProcess / filter_tag_det_res / sorted_boxes on the same maps."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.tasks import FrameMeta, get_task
from edgert.tasks.text_detection import (TextDetection, db_boxes, order_points_clockwise, sort_boxes,
                                         unclip_rects)

cv2 = pytest.importorskip("cv2")

P = TextDetection.Params()


def _unclipped(corners: np.ndarray, ratio: float = 1.6) -> np.ndarray:
    """The rectangle `corners` (4, 2) in cycle order grown by area * ratio / perimeter per side."""
    c = corners.mean(axis=0)
    e1, e2 = corners[1] - corners[0], corners[3] - corners[0]
    w, h = np.linalg.norm(e1), np.linalg.norm(e2)
    d = w * h * ratio / (2 * (w + h))
    u1, u2 = e1 / w, e2 / h
    out = []
    for p in corners:
        a, b = (p - c) @ u1, (p - c) @ u2
        out.append(c + (a + np.sign(a) * d) * u1 + (b + np.sign(b) * d) * u2)
    return np.array(out)


def _match(got: np.ndarray, want: np.ndarray) -> float:
    """Largest corner distance after pairing each wanted corner with its nearest got corner."""
    return max(np.linalg.norm(got - w, axis=1).min() for w in want)


def test_axis_aligned_rectangle_in_source_coordinates():
    m = np.zeros((96, 128), np.float32)
    m[20:36, 30:90] = 0.9           # pixel rows 20..35, cols 30..89
    boxes, scores = db_boxes(m, (192, 320))        # source 2x taller, 2.5x wider
    assert boxes.shape == (1, 4, 2) and boxes.dtype == np.float32
    # the mean over the box includes the dilated rim of zeros: 0.9 * 16 * 60 / (17 * 61)
    assert scores[0] == pytest.approx(0.9 * 16 * 60 / (17 * 61), abs=1e-6)
    # the 2x2 dilation (kernel anchor at its centre (1, 1)) grows the blob by one pixel right and
    # down: pixel centres 30..90 x 20..36
    x0, x1, y0, y1 = 30.0, 90.0, 20.0, 36.0
    want = _unclipped(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])) * [2.5, 2.0]
    assert np.abs(boxes[0] - want).max() <= 2.0
    # clockwise from top-left
    tl, tr, br, bl = boxes[0]
    assert tl[0] < tr[0] and tl[1] < bl[1] and br[0] > bl[0] and br[1] > tr[1]


def test_rectangle_without_dilation_is_the_exact_closed_form():
    m = np.zeros((64, 80), np.float32)
    m[20:40, 15:60] = 0.8
    params = TextDetection.Params(use_dilation=False)
    boxes, scores = db_boxes(m, (64, 80), params)
    assert scores[0] == pytest.approx(0.8, abs=1e-6)
    want = _unclipped(np.array([[15.0, 20], [59, 20], [59, 39], [15, 39]]))
    np.testing.assert_array_equal(boxes[0], np.round(want))


@pytest.mark.parametrize("ang", [20.0, 60.0])
@pytest.mark.parametrize("dilate", [False, True])
def test_rotated_rectangle_after_resize(dilate, ang):
    H, W, src = 160, 224, (200, 280)                # source 1.25x the map
    (cx, cy), (w, h) = (110.0, 80.0), (90.0, 24.0)
    corners = cv2.boxPoints(((cx, cy), (w, h), ang)).astype(np.float64)
    m = np.where(_inside(corners, H, W), np.float32(0.85), np.float32(0))
    boxes, scores = db_boxes(m, src, TextDetection.Params(use_dilation=dilate))
    assert len(boxes) == 1 and 0.6 < scores[0] <= 0.85
    if dilate:   # the 2x2 dilation is the union with the blob shifted by (0|1, 0|1)
        corners = _grown_by_dilation(corners)
    want = _unclipped(corners) * np.array(src[::-1]) / np.array([W, H])
    assert _match(boxes[0].astype(np.float64), want) <= 2.0


def _inside(corners: np.ndarray, H: int, W: int) -> np.ndarray:
    """(H, W) bool: pixel centres inside the convex quad `corners` (4, 2) in cycle order."""
    yy, xx = np.mgrid[0:H, 0:W]
    ok = np.ones((H, W), bool)
    e, f = corners[1] - corners[0], corners[2] - corners[1]
    sign = np.sign(e[0] * f[1] - e[1] * f[0])
    for i in range(4):                  # four half-planes
        a, b = corners[i], corners[(i + 1) % 4]
        ok &= sign * ((b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0])) >= 0
    return ok


def _grown_by_dilation(corners: np.ndarray) -> np.ndarray:
    """The minimum rectangle around the union of `corners` shifted by (0|1, 0|1), same angle."""
    c = corners.mean(axis=0)
    e1, e2 = corners[1] - corners[0], corners[3] - corners[0]
    u1, u2 = e1 / np.linalg.norm(e1), e2 / np.linalg.norm(e2)
    pts = np.concatenate([corners + s for s in ([0, 0], [1, 0], [0, 1], [1, 1])])
    a, b = (pts - c) @ u1, (pts - c) @ u2
    ca, cb = (a.max() + a.min()) / 2, (b.max() + b.min()) / 2
    ha, hb = (a.max() - a.min()) / 2, (b.max() - b.min()) / 2
    c2 = c + ca * u1 + cb * u2
    return np.array([c2 + sa * ha * u1 + sb * hb * u2 for sa, sb in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def test_boxes_below_box_thresh_are_dropped():
    m = np.zeros((80, 120), np.float32)
    m[10:25, 10:60] = 0.45          # binarised (> 0.3) but scores 0.45 < box_thresh 0.5
    m[40:55, 10:60] = 0.8
    boxes, scores = db_boxes(m, (80, 120))
    assert len(boxes) == 1 and 0.7 < scores[0] < 0.8
    assert boxes[0, :, 1].min() > 30
    lower = TextDetection.Params(box_thresh=0.4)
    assert len(db_boxes(m, (80, 120), lower)[0]) == 2


def test_small_blobs_are_dropped():
    m = np.zeros((60, 60), np.float32)
    m[10:12, 10:40] = 0.9           # 2 rows (3 after dilation): short side 2 < min_size 3
    m[30:45, 10:40] = 0.9
    boxes, _ = db_boxes(m, (60, 60))
    assert len(boxes) == 1 and boxes[0, :, 1].min() > 20


def test_reading_order_top_to_bottom_then_left_to_right():
    m = np.zeros((120, 200), np.float32)
    # line 1: three words whose tops differ by < 10 px, given out of x order
    m[22:32, 140:190] = 0.9
    m[20:30, 10:60] = 0.9
    m[26:36, 75:125] = 0.9
    # line 2
    m[80:90, 100:150] = 0.9
    m[78:88, 20:70] = 0.9
    boxes, _ = db_boxes(m, (120, 200))
    lefts = boxes[:, 0, 0]
    assert list(np.argsort(lefts[:3])) == [0, 1, 2]          # line 1 left to right
    assert boxes[:3, 0, 1].max() < boxes[3:, 0, 1].min()     # line 1 before line 2
    assert lefts[3] < lefts[4]


def test_sort_boxes_matches_rapidocr_sorted_boxes():
    main = pytest.importorskip("rapidocr_onnxruntime.main")
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 25))
        tl = np.stack([rng.integers(0, 300, n), rng.integers(0, 60, n)], axis=1).astype(np.float32)
        boxes = np.stack([tl, tl + [30, 0], tl + [30, 12], tl + [0, 12]], axis=1)
        want = np.array(main.RapidOCR.sorted_boxes(boxes.copy()))
        np.testing.assert_array_equal(boxes[sort_boxes(boxes)], want)


def test_order_points_clockwise():
    pts = np.array([[[10, 20], [0, 0], [10, 0], [0, 20]]], np.float64)
    np.testing.assert_array_equal(order_points_clockwise(pts)[0], [[0, 0], [10, 0], [10, 20], [0, 20]])


def test_unclip_of_an_integer_rectangle_is_the_offset():
    r = np.array([[[10.0, 10], [30, 10], [30, 20], [10, 20]]])
    grown, d = unclip_rects(r, 1.6)
    assert d[0] == pytest.approx(20 * 10 * 1.6 / 60)
    lo, hi = grown[0].min(axis=0), grown[0].max(axis=0)
    np.testing.assert_allclose(lo, [10 - d[0], 10 - d[0]])
    np.testing.assert_allclose(hi, [30 + d[0], 20 + d[0]])


def test_max_candidates_caps_the_contours():
    m = np.zeros((100, 100), np.float32)
    for i in range(5):
        m[5 + 18 * i: 15 + 18 * i, 10:80] = 0.9
    assert len(db_boxes(m, (100, 100))[0]) == 5
    assert len(db_boxes(m, (100, 100), TextDetection.Params(max_candidates=2))[0]) == 2


def test_nan_map_and_empty_map():
    m = np.full((40, 40), np.nan, np.float32)
    b, s = db_boxes(m, (40, 40))
    assert b.shape == (0, 4, 2) and s.shape == (0,)
    assert len(db_boxes(np.zeros((40, 40), np.float32), (40, 40))[0]) == 0


def test_task_postprocess_and_render():
    task = get_task("text-detection")()
    m = np.zeros((1, 1, 64, 96), np.float32)
    m[0, 0, 20:40, 10:80] = 0.95
    res = task.postprocess({"sigmoid_0.tmp_0": m}, FrameMeta((128, 192), (64, 96)))
    assert len(res["boxes"]) == 1
    box = res["boxes"][0]
    assert len(box["box"]) == 4 and all(len(p) == 2 for p in box["box"]) and box["score"] > 0.85
    import json
    json.dumps(res)
    img = np.zeros((128, 192, 3), np.uint8)
    out = task.render(img, res)
    assert out.shape == img.shape and out.dtype == np.uint8 and img.max() == 0
    x, y = (int(v) for v in box["box"][0])
    assert (out[max(0, y - 2):y + 3, max(0, x - 2):x + 3] == [0, 255, 0]).all(axis=2).any()


# --------------------------------------------------------------------------- RapidOCR parity
def _rapidocr(prob: np.ndarray, hw: tuple[int, int], score_mode: str = "fast") -> np.ndarray:
    utils = pytest.importorskip("rapidocr_onnxruntime.ch_ppocr_det.utils")
    text_detect = pytest.importorskip("rapidocr_onnxruntime.ch_ppocr_det.text_detect")
    main = pytest.importorskip("rapidocr_onnxruntime.main")
    # TextDetector's own post-process settings (text_detect.py: the RapidOCR defaults)
    pp = utils.DBPostProcess(thresh=0.3, box_thresh=0.5, max_candidates=1000, unclip_ratio=1.6,
                             score_mode=score_mode, use_dilation=True)
    boxes, _ = pp(prob[None, None], hw)
    det = text_detect.TextDetector.__new__(text_detect.TextDetector)   # no model session needed
    boxes = det.filter_tag_det_res(boxes, hw)
    return np.array(main.RapidOCR.sorted_boxes(boxes)) if len(boxes) else np.zeros((0, 4, 2))


@pytest.mark.parametrize("scale", [1.0, 0.6, 1.5])
def test_matches_rapidocr_db_postprocess(scale):
    rng = np.random.default_rng(int(scale * 10))
    H, W = 160, 224
    hw = (int(H * scale), int(W * scale))
    compared = 0
    for _ in range(12):
        m = rng.uniform(0, 0.1, (H, W)).astype(np.float32)
        for _ in range(6):
            rect = ((rng.uniform(20, W - 20), rng.uniform(15, H - 15)),
                    (rng.uniform(8, 60), rng.uniform(5, 20)), rng.uniform(-30, 30))
            cv2.fillPoly(m, [np.round(cv2.boxPoints(rect)).astype(np.int32)], float(rng.uniform(0.35, 0.95)))
        ours, _ = db_boxes(m, hw)
        theirs = _rapidocr(m, hw)
        assert ours.shape == theirs.shape
        if len(ours):
            assert np.abs(ours - theirs).max() <= 2.0
        compared += len(ours)
    assert compared > 10


def test_slow_score_mode_matches_rapidocr():
    rng = np.random.default_rng(7)
    m = rng.uniform(0, 0.1, (120, 160)).astype(np.float32)
    for _ in range(5):
        rect = ((rng.uniform(20, 140), rng.uniform(15, 105)), (rng.uniform(10, 50), rng.uniform(6, 16)),
                rng.uniform(-30, 30))
        cv2.fillPoly(m, [np.round(cv2.boxPoints(rect)).astype(np.int32)], float(rng.uniform(0.45, 0.9)))
    ours, scores = db_boxes(m, (120, 160), TextDetection.Params(score_mode="slow"))
    theirs = _rapidocr(m, (120, 160), "slow")
    assert len(ours) == len(theirs) > 0 and np.abs(ours - theirs).max() <= 2.0
    assert (scores >= 0.5).all()
