"""The synthetic UAV-style set: deterministic, every class present, varied, and valid on disk."""
from __future__ import annotations


import numpy as np
import pytest

from edgert.errors import EvalError
from edgert.eval.dataset import open_dataset, read_label, read_sample
from edgert.eval.synthetic import (CLASS_NAMES, PERSON, VEHICLE, render_scene,
                                   write_synthetic_classification, write_synthetic_segmentation)

pytest.importorskip("cv2")


def test_class_table():
    assert len(CLASS_NAMES) == 14 and len(set(CLASS_NAMES)) == 14
    assert CLASS_NAMES[0] == "background"
    assert all(n.isidentifier() for n in CLASS_NAMES)           # usable as folder names


def test_render_is_deterministic_per_seed():
    a_img, a_lab = render_scene(np.random.default_rng(5), 128)
    b_img, b_lab = render_scene(np.random.default_rng(5), 128)
    c_img, _ = render_scene(np.random.default_rng(6), 128)
    assert a_img.shape == (128, 128, 3) and a_img.dtype == np.uint8
    assert a_lab.shape == (128, 128) and a_lab.dtype == np.uint8
    assert (a_img == b_img).all() and (a_lab == b_lab).all()
    assert not (a_img == c_img).all()


def test_forced_class_is_drawn_and_classes_limit_the_labels():
    for k in range(1, 6):
        _, lab = render_scene(np.random.default_rng(k), 96, classes=6, force=(k,))
        assert k in lab and lab.max() < 6


@pytest.fixture(scope="module")
def seg_root(tmp_path_factory):
    return write_synthetic_segmentation(tmp_path_factory.mktemp("syn") / "seg", n=16, size=128, seed=3)


def test_written_set_opens_with_every_class_and_varies(seg_root):
    ds = open_dataset(seg_root)
    assert len(ds) == 16 and ds.classes == 14 and ds.class_names == CLASS_NAMES
    assert (seg_root / "README.txt").is_file()
    present = [set(np.unique(read_label(s.label)).tolist()) for s in ds.samples]
    assert set().union(*present) == set(range(14))              # 14 classes overall
    assert len({frozenset(p) for p in present}) > 10             # varied per image
    assert all(len(p) < 14 for p in present)                     # some classes absent from each
    assert max(len(p) for p in present) >= 5


def test_small_objects_are_small(seg_root):
    ds = open_dataset(seg_root, check="quick")
    for s in ds.samples:
        _, lab = read_sample(ds, s)
        for k in (PERSON, VEHICLE):
            assert (lab == k).mean() < 0.02


def test_same_seed_same_bytes_and_image_i_independent_of_n(tmp_path, seg_root):
    again = write_synthetic_segmentation(tmp_path / "again", n=16, size=128, seed=3)
    assert open_dataset(again).sha256 == open_dataset(seg_root).sha256
    other = write_synthetic_segmentation(tmp_path / "other", n=16, size=128, seed=4)
    assert open_dataset(other).sha256 != open_dataset(seg_root).sha256
    short = write_synthetic_segmentation(tmp_path / "short", n=3, size=128, seed=3)
    for name in ("img_0000.png", "img_0002.png"):
        assert (short / "images" / name).read_bytes() == (seg_root / "images" / name).read_bytes()


def test_colour_alone_does_not_separate_the_classes(seg_root):
    """A per-pixel nearest-mean-colour classifier, fitted on the very images it is scored on,
    stays far from perfect: texture is needed."""
    ds = open_dataset(seg_root, check="quick")
    pairs = [read_sample(ds, s) for s in ds.samples[:8]]
    x = np.concatenate([img.reshape(-1, 3) for img, _ in pairs]).astype(np.float32)
    y = np.concatenate([lab.ravel() for _, lab in pairs])
    ks = np.unique(y)
    means = np.stack([x[y == k].mean(0) for k in ks])
    pred = ks[((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    per_class = [(pred[y == k] == k).mean() for k in ks]
    assert np.mean(per_class) < 0.75


def test_classification_set(tmp_path):
    root = write_synthetic_classification(tmp_path / "cls", n_per_class=3, size=48, classes=5, seed=1)
    ds = open_dataset(root, "classification")
    assert ds.classes == 5 and len(ds) == 15
    assert ds.class_names == CLASS_NAMES[:5]
    for s in ds.samples:
        assert s.name.split("/")[0] == CLASS_NAMES[s.label]
        img, label = read_sample(ds, s)
        assert img.shape == (48, 48, 3) and label == s.label
    again = write_synthetic_classification(tmp_path / "again", n_per_class=3, size=48, classes=5, seed=1)
    assert open_dataset(again, "classification").sha256 == ds.sha256


@pytest.mark.parametrize("classes", [1, 15])
def test_class_count_out_of_range(tmp_path, classes):
    with pytest.raises(EvalError, match="2..14 classes"):
        write_synthetic_segmentation(tmp_path, n=1, size=32, classes=classes)
