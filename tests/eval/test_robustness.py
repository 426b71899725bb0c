"""Corruptions (ImageNet-C tables) and system-noise variants (resize, decoder, JPEG chroma)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgert.errors import EvalError, InputError
from edgert.eval import robustness as R
from edgert.eval.dataset import read_image
from edgert.eval.synthetic import render_scene
from edgert.preprocess import INTERPOLATIONS, resize

pytest.importorskip("cv2")
pytest.importorskip("PIL")

NAMES = ("gaussian_noise", "impulse_noise", "glass_blur", "motion_blur", "brightness", "contrast", "jpeg")


@pytest.fixture(scope="module")
def img():
    return render_scene(np.random.default_rng(11), 128)[0]


def mad(a, b):
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()


def test_registered_corruptions():
    assert set(NAMES) == set(R.CORRUPTIONS)


@pytest.mark.parametrize("name", NAMES)
def test_corruption_preserves_type_changes_image_and_grows_with_severity(img, name):
    before = img.copy()
    diffs = []
    for s in (1, 3, 5):      # ImageNet-C's glass-blur table itself is not monotone from 1 to 2
        out = R.corrupt(img, name, s, np.random.default_rng(0))
        assert out.dtype == np.uint8 and out.shape == img.shape
        diffs.append(mad(out, img))
    assert (img == before).all()                       # pure: the input is untouched
    assert diffs[0] > 0.5
    assert diffs[0] < diffs[1] < diffs[2], diffs


@pytest.mark.parametrize("name", NAMES)
def test_corruption_is_deterministic_given_the_rng(img, name):
    a = R.corrupt(img, name, 3, np.random.default_rng(4))
    b = R.corrupt(img, name, 3, np.random.default_rng(4))
    assert (a == b).all()


def test_corruption_errors(img):
    with pytest.raises(EvalError, match=r"unknown corruption 'fog' \(known: brightness, contrast"):
        R.corrupt(img, "fog", 1)
    with pytest.raises(EvalError, match="severity must be 1..5"):
        R.corrupt(img, "contrast", 6)
    with pytest.raises(EvalError, match=r"\(H, W, 3\) uint8"):
        R.corrupt(img.astype(np.float32), "contrast", 1)


def test_motion_kernel_is_normalised_and_one_sided():
    k = R.motion_kernel(10, 3, 0.0)
    assert k.sum() == pytest.approx(1.0)
    c = k.shape[0] // 2
    assert k[c, c] == k.max() and k[c, :c].sum() == 0 and k[c, c + 1:].sum() > 0


def test_resize_variants_differ(img):
    outs = {i: resize(img, (45, 70), i) for i in INTERPOLATIONS}
    assert all(o.shape == (45, 70, 3) and o.dtype == np.uint8 for o in outs.values())
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert mad(outs[a], outs[b]) > 0.1, (a, b)
    assert resize(img, (128, 128)) is img                    # no-op at the same size
    assert [v.resize_interpolation for v in R.system_variants() if v.name.startswith("resize/")] == \
        [i for i in INTERPOLATIONS if i != "bilinear"]


def test_resize_labels_and_errors():
    lab = np.random.default_rng(0).integers(0, 5, (40, 40)).astype(np.uint8)
    small = resize(lab, (17, 23), "nearest")
    assert small.shape == (17, 23) and set(np.unique(small)) <= set(range(5))
    with pytest.raises(InputError, match=r"unknown interpolation 'lanczos' \(known: nearest, bilinear"):
        resize(lab, (10, 10), "lanczos")
    with pytest.raises(InputError, match="cannot resize to 0x10"):
        resize(lab, (0, 10))
    with pytest.raises(InputError, match=r"\(H, W, 3\) or \(H, W\) uint8"):
        resize(lab.astype(np.float32), (10, 10))


def test_jpeg_chroma_variants(img):
    v420, v444 = R.variant("jpeg_chroma/420"), R.variant("jpeg_chroma/444")
    a, b = v420.apply(img), v444.apply(img)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert mad(a, img) > 0 and mad(b, img) > 0 and mad(a, b) > 0
    assert mad(b, img) < mad(a, img)              # full-resolution chroma is closer to the original


def test_decoder_variant_changes_only_the_decoder(tmp_path, img):
    from PIL import Image
    v = R.variant("decoder/cv2")
    assert v.decoder == "cv2" and v.resize_interpolation is None and v.apply(img) is img
    p = tmp_path / "a.jpg"
    Image.fromarray(img).save(p, quality=80)
    a, b = read_image(p, "pil"), read_image(p, v.decoder)
    assert a.shape == b.shape and mad(a, b) < 2.0          # same picture; bits may differ


def test_suite_and_variant_names():
    vs = R.suite()
    names = [v.name for v in vs]
    assert len(names) == len(set(names)) == 7 * 3 + 6
    assert "gaussian_noise/3" in names and "resize/area" in names and "jpeg_chroma/444" in names
    assert "resize/bilinear" not in names and "decoder/pil" not in names      # the defaults
    assert {v.kind for v in vs} == {"corruption", "system"}
    assert all(v.severity in (1, 3, 5) for v in vs if v.kind == "corruption")
    assert all(v.severity is None for v in vs if v.kind == "system")
    assert len(R.suite((2,))) == 7 + 6
    json.dumps([v.to_json() for v in vs])
    assert R.variant("motion_blur/2") == R.Variant("motion_blur/2", "corruption", 2)
    assert R.variant("resize/bilinear").resize_interpolation == "bilinear"
    with pytest.raises(EvalError, match="severity must be 1..5"):
        R.suite((0, 1))
    with pytest.raises(EvalError, match=r"unknown variant 'resize/lanczos' \(known: "):
        R.variant("resize/lanczos")
    with pytest.raises(EvalError, match="severity must be 1..5"):
        R.variant("jpeg/9")
