"""`edgert run` on an OCR bundle: one page (--input, JSON lines with text, score, box) and a
rendered video (--video ... --out annotated.mp4), through the same pipeline as every package."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgert.cli import main as cli
from ocr_pages import render_page, squash

cv2 = pytest.importorskip("cv2")
pytestmark = pytest.mark.slow


def test_run_input_page_json(ocr_bundle, tmp_path):
    from PIL import Image
    img, truth = render_page(200)
    page = tmp_path / "page.png"
    Image.fromarray(img).save(page)
    r = CliRunner().invoke(cli, ["run", str(ocr_bundle), "--input", str(page), "--json",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.splitlines()[-1])
    assert set(res) == {"lines", "timings_ms"} and set(res["timings_ms"]) >= {"det", "cls", "rec", "total"}
    got = squash("".join(ln["text"] for ln in res["lines"]))
    want = squash("".join(t["text"] for t in truth))
    assert got == want
    assert all(len(ln["box"]) == 4 and 0 <= ln["score"] <= 1 for ln in res["lines"])
    assert (tmp_path / "out" / "page.ocr.png").is_file()


def test_run_video_writes_annotated_mp4(ocr_bundle, tmp_path):
    clip = tmp_path / "pages.avi"
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (640, 480))
    texts = []
    for seed in (201, 202, 203):
        img, truth = render_page(seed)
        texts.append(squash("".join(t["text"] for t in truth)))
        vw.write(np.ascontiguousarray(img[:, :, ::-1]))
    vw.release()
    out = tmp_path / "annotated.mp4"
    r = CliRunner().invoke(cli, ["run", str(ocr_bundle), "--video", str(clip), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    frames = [json.loads(ln) for ln in r.output.splitlines() if ln.startswith('{"source"')]
    assert len(frames) == 3
    # MJPG frames are lossy: allow a character or two per page
    for f, want in zip(frames, texts):
        got = squash("".join(ln["text"] for ln in f["lines"]))
        assert sum(a != b for a, b in zip(got, want)) + abs(len(got) - len(want)) <= 3, (got, want)
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 3
