"""The image-side steps of edgert.ocr against RapidOCR's own code on the same inputs (det resize,
page guards, line crops, cls / rec batches, CTC decoding).  Our images are RGB, RapidOCR's BGR: the
models see the same BGR tensors either way."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.ocr import stages as S
from edgert.ocr.config import OcrConfig

CFG = OcrConfig()


@pytest.fixture(scope="module")
def rapid(rapidocr_models):
    from rapidocr_onnxruntime import RapidOCR
    return RapidOCR()


@pytest.mark.parametrize("hw", [(480, 640), (100, 2000), (736, 736), (1200, 900), (31, 400)])
def test_det_size_matches_rapidocr(hw):
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
    img = np.zeros((*hw, 3), np.uint8)
    want = DetPreProcess(736, "min").resize(img).shape[:2]
    assert S.det_size(hw, CFG.det) == want


def test_det_input_matches_rapidocr():
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
    rgb = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    want = DetPreProcess(736, "min", [0.5] * 3, [0.5] * 3)(rgb[:, :, ::-1].copy())
    got = S.det_input(rgb, CFG.det, S.DEFAULT_PREPROCESS)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("hw", [(24, 300), (60, 900), (2400, 1000), (20, 25), (400, 300)])
def test_page_guards_match_rapidocr(rapid, hw):
    rgb = np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)
    bgr = rgb[:, :, ::-1].copy()
    img, ratio_h, ratio_w = rapid.preprocess(bgr)
    img, record = rapid.maybe_add_letterbox(img, {})
    work, page = S.prepare_page(rgb, CFG.page)
    assert work.shape == img.shape
    np.testing.assert_array_equal(work[:, :, ::-1], img)
    assert (page.ratio_h, page.ratio_w, page.pad_top) == (ratio_h, ratio_w, record["padding_1"]["top"])


def test_crops_match_rapidocr(rapid):
    rgb = np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[[10, 20], [200, 25], [199, 60], [9, 55]],       # slightly rotated line
                      [[300, 10], [330, 10], [330, 250], [300, 250]]],  # tall: turned by 90°
                     np.float32)
    want = rapid.get_crop_img_list(rgb[:, :, ::-1].copy(), list(boxes.copy()))
    for box, w in zip(boxes, want):
        got = S.crop_line(rgb, box)
        np.testing.assert_array_equal(got[:, :, ::-1], w)
    assert S.crop_line(rgb, boxes[1]).shape[:2] == (30, 240)


def _crops(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(20, 70)), int(rng.integers(30, 900)), 3), dtype=np.uint8)
            for _ in range(n)]


def test_cls_batches_match_rapidocr(rapid):
    crops = _crops(3, 8)
    got = list(S.cls_batches(crops, CFG.cls, S.DEFAULT_PREPROCESS))
    order = np.argsort([c.shape[1] / c.shape[0] for c in crops])
    assert [len(i) for i, _ in got] == [6, 2]
    np.testing.assert_array_equal(np.concatenate([i for i, _ in got]), order)
    for idx, x in got:
        assert x.shape == (len(idx), 3, 48, 192)
        for k, i in enumerate(idx):
            want = rapid.text_cls.resize_norm_img(crops[i][:, :, ::-1].copy())
            np.testing.assert_allclose(x[k], want, atol=1e-5)


def test_rec_batches_match_rapidocr(rapid):
    crops = _crops(4, 9)
    for idx, x in S.rec_batches(crops, CFG.rec, S.DEFAULT_PREPROCESS):
        ratio = max(320 / 48, max(crops[i].shape[1] / crops[i].shape[0] for i in idx))
        assert x.shape == (len(idx), 3, 48, int(48 * ratio))
        for k, i in enumerate(idx):
            want = rapid.text_rec.resize_norm_img(crops[i][:, :, ::-1].copy(), ratio)
            np.testing.assert_allclose(x[k], want, atol=1e-5)


def test_rec_width_is_capped():
    crop = np.zeros((10, 2000, 3), np.uint8)                          # aspect 200
    (_, x), = S.rec_batches([crop], CFG.rec, S.DEFAULT_PREPROCESS)
    assert x.shape[-1] == CFG.rec.max_width


def test_ctc_greedy_matches_rapidocr():
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode
    keys = list("abcdefghij")
    dec = CTCLabelDecode(character=list(keys))
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((4, 40, len(keys) + 2)) * 3
    logits[1] = -10
    logits[1, :, 0] = 10                                               # all blanks -> "", score 0
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    want = dec(probs)
    got = S.ctc_greedy(probs, ["", *keys, " "])
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5)
    assert got[1] == ("", 0.0)
