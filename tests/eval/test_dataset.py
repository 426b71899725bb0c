"""Dataset layouts: pairing, validation errors that name the file, and the content hash."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgert.errors import EvalError
from edgert.eval.dataset import open_dataset, read_image, read_label, read_sample

Image = pytest.importorskip("PIL.Image")


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def rgb(h=8, w=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def seg_set(root: Path, n=3, h=8, w=8, classes=4) -> Path:
    for i in range(n):
        save(root / "images" / f"s{i}.png", rgb(h, w, i))
        lab = np.random.default_rng(i).integers(0, classes, (h, w)).astype(np.uint8)
        lab[0, 0] = 255
        save(root / "labels" / f"s{i}.png", lab)
    return root


# -- segmentation ---------------------------------------------------------------------------------

def test_segmentation_pairs_and_infers_classes(tmp_path):
    root = seg_set(tmp_path / "d")
    ds = open_dataset(root)
    assert ds.task == "segmentation" and len(ds) == 3
    assert [s.name for s in ds.samples] == ["s0", "s1", "s2"]
    assert ds.samples[0].label == root / "labels" / "s0.png"
    assert ds.classes == 4                                      # max label value + 1, 255 ignored
    assert len(ds.sha256) == 64 and ds.class_names == ()
    img, lab = read_sample(ds, ds.samples[1])
    assert img.shape == (8, 8, 3) and lab.shape == (8, 8) and lab.dtype == np.uint8


def test_classes_txt_fixes_the_class_count(tmp_path):
    root = seg_set(tmp_path / "d", classes=3)
    (root / "classes.txt").write_text("bg\na\nb\nc\nd\n")
    ds = open_dataset(root)
    assert ds.classes == 5 and ds.class_names == ("bg", "a", "b", "c", "d")
    with pytest.raises(EvalError, match="classes.txt: lists 5 classes but classes=14"):
        open_dataset(root, classes=14)


def test_jpeg_images_and_palette_labels(tmp_path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    Image.fromarray(rgb(16, 16)).save(root / "images" / "a.jpg", quality=90)
    lab = Image.fromarray(np.array([[0, 1] * 8] * 16, np.uint8), "L").convert("P")
    save_dir = root / "labels"
    save_dir.mkdir()
    lab.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    lab.save(save_dir / "a.png")
    assert read_label(save_dir / "a.png").tolist()[0][:2] == [0, 1]    # indices, not colours
    assert open_dataset(root, classes=2).classes == 2


def test_missing_label_names_the_file(tmp_path):
    root = seg_set(tmp_path / "d")
    (root / "labels" / "s1.png").unlink()
    with pytest.raises(EvalError, match=r"s1\.png: no label \(expected .*labels/s1\.png\)"):
        open_dataset(root)


def test_orphan_label_is_an_error(tmp_path):
    root = seg_set(tmp_path / "d")
    (root / "images" / "s2.png").unlink()
    with pytest.raises(EvalError, match=r"labels/s2\.png: label has no image"):
        open_dataset(root)


def test_size_mismatch_names_the_label(tmp_path):
    root = seg_set(tmp_path / "d")
    save(root / "labels" / "s1.png", np.zeros((8, 6), np.uint8))
    with pytest.raises(EvalError, match=r"labels/s1\.png: label is 8x6 but its image is 8x8"):
        open_dataset(root)
    ds = open_dataset(root, check="quick")                  # structure only ...
    with pytest.raises(EvalError, match=r"labels/s1\.png"):  # ... the sample check catches it
        read_sample(ds, ds.samples[1])


def test_label_value_not_a_class(tmp_path):
    root = seg_set(tmp_path / "d")
    lab = np.zeros((8, 8), np.uint8)
    lab[2, 3] = 9
    save(root / "labels" / "s2.png", lab)
    with pytest.raises(EvalError, match=r"labels/s2\.png: label value 9 is not a class \(classes=4"):
        open_dataset(root, classes=4)
    assert open_dataset(root).classes == 10                 # inferred: max + 1


def test_label_must_be_single_channel(tmp_path):
    root = seg_set(tmp_path / "d")
    save(root / "labels" / "s0.png", rgb())
    with pytest.raises(EvalError, match=r"labels/s0\.png: label must be 8-bit single-channel .* mode RGB"):
        open_dataset(root)


def test_unreadable_image_names_the_file(tmp_path):
    root = seg_set(tmp_path / "d")
    (root / "images" / "s1.png").write_bytes(b"not a png at all")
    with pytest.raises(EvalError, match=r"images/s1\.png: cannot read image"):
        open_dataset(root)
    ds = open_dataset(root, check="quick")                  # the pixels are not read
    with pytest.raises(EvalError, match=r"images/s1\.png: cannot read image"):
        read_sample(ds, ds.samples[1])
    with pytest.raises(EvalError, match=r"images/s1\.png: cannot read image"):
        read_image(ds.samples[1].image, decoder="cv2")


@pytest.mark.parametrize("setup, msg", [
    (lambda r: None, "dataset folder not found"),
    (lambda r: r.mkdir(), r"images: not found"),
    (lambda r: ((r / "images").mkdir(parents=True), (r / "labels").mkdir()), r"images: no images"),
    (lambda r: ((r / "images").mkdir(parents=True), (r / "images" / "x.txt").write_text("")),
     r"labels: not found"),
])
def test_empty_or_missing_folders(tmp_path, setup, msg):
    root = tmp_path / "d"
    setup(root)
    with pytest.raises(EvalError, match=msg):
        open_dataset(root)


def test_bad_arguments(tmp_path):
    root = seg_set(tmp_path / "d")
    with pytest.raises(EvalError, match="unknown task 'detection'"):
        open_dataset(root, task="detection")
    with pytest.raises(EvalError, match="unknown dataset check 'some'"):
        open_dataset(root, check="some")
    with pytest.raises(EvalError, match="unknown image decoder 'magick'"):
        read_image(root / "images" / "s0.png", decoder="magick")


def test_decoders_agree_on_png(tmp_path):
    p = save(tmp_path / "a.png", rgb(5, 7))
    a, b = read_image(p, "pil"), read_image(p, "cv2")
    assert a.shape == (5, 7, 3) and a.dtype == np.uint8
    assert (a == b).all()                                   # RGB order from both
    gray = save(tmp_path / "g.png", np.arange(35, dtype=np.uint8).reshape(5, 7))
    assert read_image(gray).shape == (5, 7, 3)


# -- the hash -------------------------------------------------------------------------------------

def test_sha256_changes_with_one_pixel_and_only_with_content(tmp_path):
    root = seg_set(tmp_path / "d")
    h0 = open_dataset(root).sha256
    seg_set(tmp_path / "copy")
    assert open_dataset(tmp_path / "copy").sha256 == h0      # relative paths: the root does not count
    (root / "README.txt").write_text("not scored")
    assert open_dataset(root).sha256 == h0

    img = np.asarray(Image.open(root / "images" / "s2.png")).copy()
    img[4, 4, 1] ^= 1
    save(root / "images" / "s2.png", img)
    h1 = open_dataset(root).sha256
    assert h1 != h0

    lab = read_label(root / "labels" / "s0.png").copy()
    lab[5, 5] = (lab[5, 5] + 1) % 4
    save(root / "labels" / "s0.png", lab)
    assert open_dataset(root).sha256 not in (h0, h1)


# -- classification -------------------------------------------------------------------------------

def csv_set(root: Path, rows: str) -> Path:
    for name in ("a.png", "b.png", "c.jpg"):
        save(root / "images" / name, rgb(4, 4))
    (root / "labels.csv").write_text(rows)
    return root


def test_labels_csv(tmp_path):
    root = csv_set(tmp_path / "d", "file,label\na.png,2\nb.png,0\n\nc.jpg,1\n")
    ds = open_dataset(root, "classification")
    assert ds.classes == 3
    assert [(s.name, s.label) for s in ds.samples] == [("images/a.png", 2), ("images/b.png", 0),
                                                       ("images/c.jpg", 1)]
    assert open_dataset(root, "classification", classes=10).classes == 10


def test_labels_csv_relative_to_root_and_class_names(tmp_path):
    root = tmp_path / "d"
    save(root / "pics" / "x.png", rgb(4, 4))
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "labels.csv").write_text("file,label\npics/x.png,dog\n")
    ds = open_dataset(root, "classification")
    assert ds.samples[0].label == 1 and ds.classes == 2 and ds.class_names == ("cat", "dog")


@pytest.mark.parametrize("rows, msg", [
    ("name,class\na.png,0\n", r"labels\.csv:1: header must be 'file,label'"),
    ("file,label\na.png,0\nb.png,1,extra\n", r"labels\.csv:3: expected 2 columns"),
    ("file,label\na.png,zero\n", r"labels\.csv:2: label 'zero' is not a class index"),
    ("file,label\na.png,-1\n", r"labels\.csv:2: label -1 is not a class"),
    ("file,label\nmissing.png,0\n", r"labels\.csv:2: image 'missing.png' not found"),
    ("file,label\na.png,0\na.png,1\n", r"labels\.csv:3: 'a.png' listed twice"),
    ("file,label\n", r"no images"),
])
def test_bad_labels_csv(tmp_path, rows, msg):
    root = csv_set(tmp_path / "d", rows)
    with pytest.raises(EvalError, match=msg):
        open_dataset(root, "classification")


def test_labels_csv_label_beyond_classes(tmp_path):
    root = csv_set(tmp_path / "d", "file,label\na.png,0\nb.png,7\n")
    with pytest.raises(EvalError, match=r"labels\.csv:3: label 7 is not a class \(0\.\.4\)"):
        open_dataset(root, "classification", classes=5)


def test_class_folders_sorted_by_name_or_classes_txt(tmp_path):
    root = tmp_path / "d"
    for cls in ("zebra", "ant", "moth"):
        save(root / cls / "1.png", rgb(4, 4))
    (root / "ant" / "notes.txt").write_text("ignored")
    ds = open_dataset(root, "classification")
    assert ds.class_names == ("ant", "moth", "zebra") and ds.classes == 3
    assert {s.name: s.label for s in ds.samples} == {"ant/1.png": 0, "moth/1.png": 1, "zebra/1.png": 2}
    (root / "classes.txt").write_text("zebra\nmoth\nant\nbee\n")
    ds = open_dataset(root, "classification")
    assert ds.classes == 4
    assert {s.name: s.label for s in ds.samples} == {"ant/1.png": 2, "moth/1.png": 1, "zebra/1.png": 0}
    (root / "classes.txt").write_text("zebra\nmoth\n")
    with pytest.raises(EvalError, match=r"d/ant: class folder not listed in .*classes\.txt"):
        open_dataset(root, "classification")


def test_class_folders_by_index(tmp_path):
    root = tmp_path / "d"
    for cls in ("0", "2", "10"):
        save(root / cls / "x.png", rgb(4, 4))
    ds = open_dataset(root, "classification")
    assert ds.classes == 11 and {s.label for s in ds.samples} == {0, 2, 10}
    with pytest.raises(EvalError, match=r"10/x\.png: class 10 but classes=5"):
        open_dataset(root, "classification", classes=5)


def test_classification_errors(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    with pytest.raises(EvalError, match="no labels.csv and no class folders"):
        open_dataset(root, "classification")
    (root / "images").mkdir()
    with pytest.raises(EvalError, match=r"labels\.csv: not found"):
        open_dataset(root, "classification")
    (root / "images").rmdir()
    (root / "cat").mkdir()
    with pytest.raises(EvalError, match="no images"):
        open_dataset(root, "classification")
    (root / "cat" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(EvalError, match=r"cat/bad\.png: cannot read image"):
        open_dataset(root, "classification")
    assert len(open_dataset(root, "classification", check="quick")) == 1
