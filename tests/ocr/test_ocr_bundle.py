"""A W8A8 OCR bundle of the real PP-OCR models (det, cls, rec in one package) reads rendered pages:
the text equals the truth, and the boxes are RapidOCR's own within a few pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgert.errors import InputError, PackageError
from edgert.ocr import is_ocr_package, load_ocr
from edgert.ocr.config import CONFIG_SECTION, KEYS_SECTION, OcrConfig, parse_config, parse_keys
from ocr_pages import edit_distance, match_boxes, squash

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(ocr_bundle):
    pipe = load_ocr(ocr_bundle)
    yield pipe
    pipe.close()


@pytest.fixture(scope="module")
def results(pipeline, eval_pages):
    return [pipeline(img) for img, _ in eval_pages]


def _truth_quads(truth):
    return [[(t["box"][0], t["box"][1]), (t["box"][2], t["box"][3])] for t in truth]


def test_bundle_holds_three_graphs_keys_and_config(ocr_bundle):
    from edgert.package import read_package

    pkg = read_package(ocr_bundle)
    try:
        assert list(pkg.graphs) == ["det", "cls", "rec"]
        assert {CONFIG_SECTION, KEYS_SECTION} <= set(pkg.extra_names())
        assert parse_config(pkg.extra(CONFIG_SECTION)) == OcrConfig()
        keys = parse_keys(pkg.extra(KEYS_SECTION))
        assert len(keys) == 6623 and keys[0] == "'"          # PP-OCRv4 rec's `character` metadata
        assert pkg.manifest["producer"]["tool"] == "edgert convert-ocr"
        for name in ("det", "cls", "rec"):
            assert pkg.graphs[name].metadata["quantization"]["abits"] == 8
        assert is_ocr_package(pkg) and is_ocr_package(ocr_bundle)
    finally:
        pkg.close()


def test_text_equals_truth(results, eval_pages):
    errors = chars = exact = lines = 0
    for res, (_, truth) in zip(results, eval_pages):
        pairs = match_boxes([ln.box for ln in res.lines], _truth_quads(truth), min_iou=0.3)
        assert len(pairs) == len(truth) == len(res.lines), [ln.text for ln in res.lines]
        for i, j, _ in pairs:
            e = edit_distance(squash(res.lines[i].text), squash(truth[j]["text"]))
            errors, chars = errors + e, chars + len(squash(truth[j]["text"]))
            exact, lines = exact + (e == 0), lines + 1
        # reading order: top to bottom, as the truth lists them
        assert [j for _, j, _ in sorted(pairs)] == list(range(len(truth)))
    assert errors / chars <= 0.01 and exact >= 0.95 * lines, (errors / chars, exact, lines)


def test_boxes_match_rapidocr(results, rapidocr_results):
    deltas, same_text = [], []
    for res, ref in zip(results, rapidocr_results):
        assert len(res.lines) == len(ref)
        pairs = match_boxes([ln.box for ln in res.lines], [r[0] for r in ref], min_iou=0.7)
        assert len(pairs) == len(ref)
        for i, j, _ in pairs:
            deltas.append(np.abs(np.asarray(res.lines[i].box) - np.asarray(ref[j][0])).max())
            same_text.append(squash(res.lines[i].text) == squash(ref[j][1]))
    assert max(deltas) <= 4.0, deltas          # corners, pixels (measured: max 3, mean ~1)
    assert np.mean(same_text) >= 0.9           # W8A8 vs float: an odd character may differ


def test_result_json_and_timings(results):
    res = results[0]
    doc = json.loads(json.dumps(res.to_json()))
    assert set(doc) == {"lines", "timings_ms"}
    assert set(doc["timings_ms"]) == {"det", "cls", "rec", "total"}
    assert doc["timings_ms"]["total"] >= doc["timings_ms"]["det"] > 0
    line = doc["lines"][0]
    assert set(line) == {"text", "score", "box"} and len(line["box"]) == 4
    assert all(0.5 <= ln.score <= 1.0 for ln in res.lines)            # text_score 0.5 (RapidOCR)


def test_upside_down_page_is_read_by_cls(pipeline, eval_pages):
    img, truth = eval_pages[0]
    res = pipeline(np.ascontiguousarray(img[::-1, ::-1]))
    got = sorted(squash(ln.text) for ln in res.lines)
    assert got == sorted(squash(t["text"]) for t in truth)


def test_blank_and_bad_images(pipeline):
    res = pipeline(np.full((64, 64, 3), 255, np.uint8))
    assert res.lines == [] and res.timings_ms["total"] >= 0
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), "page.png",
                np.zeros((0, 10, 3), np.uint8)):
        with pytest.raises(InputError):
            pipeline(bad)


def test_keys_that_do_not_fit_rec_are_rejected_at_load(ocr_bundle, tmp_path):
    from converters.package_writer import WriteOptions, write_package
    from edgert.package import read_package

    pkg = read_package(ocr_bundle)
    try:
        extras = {n: bytes(pkg.extra(n)) for n in pkg.extra_names()}
        extras[KEYS_SECTION] = b"a\nb\nc\n"
        bad = tmp_path / "bad.pkg"
        write_package(bad, list(pkg.graphs.values()), WriteOptions(compress="none"), extras=extras)
    finally:
        pkg.close()
    with pytest.raises(PackageError, match="ocr/keys gives 5 classes .* graph 'rec' outputs 6625"):
        load_ocr(bad)
