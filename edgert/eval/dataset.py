"""Evaluation datasets on disk: the layouts, validated before anything is scored.

Segmentation::

    <root>/images/<stem>.png | .jpg | .jpeg      any image Pillow reads; scored as RGB
    <root>/labels/<stem>.png                     8-bit single-channel class-index map (mode L or P),
                                                 the image's height x width; 255 = ignore
    <root>/classes.txt                           optional: one class name per line, in index order

Classification, either::

    <root>/labels.csv                            header `file,label`; `file` relative to <root>/images
                                                 or <root>; `label` a class index, or a name from
                                                 classes.txt

or class folders::

    <root>/<class>/*.png | .jpg | .jpeg          <class> an index (0, 1, ...) or a name; names are
                                                 sorted into indices unless <root>/classes.txt
                                                 (one name per line) fixes the order

Every problem is an EvalError with one line that names the offending file. `check="full"` decodes
every image and label up front (sizes, label values); `check="quick"` checks only the structure
(files exist and pair up, labels.csv parses) and leaves the pixel checks to `read_sample`.

`Dataset.sha256` is over the sorted relative paths and contents of every file that is scored
(images, labels, labels.csv, classes.txt), so a result names exactly the data it was scored on.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgert.errors import EvalError, InputError
from edgert.eval.types import TASKS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IGNORE_INDEX = 255          # label value that is not scored (LPCVC 2023 masked labels >= 14)
CHECKS = ("full", "quick")
DECODERS = ("pil", "cv2")
LABEL_MODES = ("L", "P")    # 8-bit single channel; P is read as the palette indices


@dataclass(frozen=True)
class Sample:
    name: str               # image stem (segmentation) or path relative to root (classification)
    image: Path
    label: Path | int       # label map path (segmentation) or class index (classification)


@dataclass(frozen=True)
class Dataset:
    root: Path
    task: str
    classes: int
    samples: tuple[Sample, ...]
    sha256: str
    class_names: tuple[str, ...] = ()    # from classes.txt or the class folders; () when unknown

    def __len__(self) -> int:
        return len(self.samples)


# -- reading --------------------------------------------------------------------------------------

def read_image(path: Path, decoder: str = "pil") -> np.ndarray:
    """An (H, W, 3) uint8 RGB array. decoder "pil" (the default) or "cv2": the two differ in small
    ways (JPEG IDCT and chroma upsampling), which the system-noise variants measure."""
    path = Path(path)
    if decoder == "pil":            # exactly what `edgert run` decodes (edgert.preprocess.load_image)
        from edgert.preprocess import load_image
        try:
            return load_image(path)
        except InputError as e:
            raise EvalError(str(e)) from None
    if decoder == "cv2":
        try:
            import cv2
        except ImportError as e:  # pragma: no cover - depends on the install
            raise EvalError("the cv2 decoder needs OpenCV: pip install 'edgert[camera]'") from e
        try:
            buf = np.fromfile(path, dtype=np.uint8)      # imdecode: no trouble with non-ASCII paths
        except OSError as e:
            raise EvalError(f"{path}: cannot read image ({e.strerror or e})") from None
        # IGNORE_ORIENTATION: cv2 would otherwise apply EXIF rotation (Pillow does not) and the
        # image would no longer line up with its label map
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if buf.size else None
        if img is None:
            raise EvalError(f"{path}: cannot read image (OpenCV could not decode it)")
        return np.ascontiguousarray(img[:, :, ::-1])
    raise EvalError(f"unknown image decoder {decoder!r} (known: {', '.join(DECODERS)})")


def read_label(path: Path) -> np.ndarray:
    """An (H, W) uint8 class-index map from an 8-bit single-channel PNG (mode L or P)."""
    path = Path(path)
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:  # pragma: no cover - depends on the install
        raise EvalError("reading labels needs Pillow: pip install 'edgert[image]'") from e
    try:
        with Image.open(path) as im:
            if im.mode not in LABEL_MODES:
                raise EvalError(f"{path}: label must be 8-bit single-channel (mode L or P), "
                                f"got mode {im.mode}")
            return np.asarray(im, dtype=np.uint8)      # P: the palette indices, not the colours
    except FileNotFoundError:
        raise EvalError(f"{path}: label not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise EvalError(f"{path}: cannot read label ({e})") from None


def check_label(label: np.ndarray, image_hw: tuple[int, int], classes: int, path: Path) -> None:
    """A label map must match its image's size and hold only classes < `classes` or 255."""
    if label.shape != tuple(image_hw):
        raise EvalError(f"{path}: label is {label.shape[0]}x{label.shape[1]} but its image is "
                        f"{image_hw[0]}x{image_hw[1]}")
    counts = np.bincount(label.ravel(), minlength=256)
    bad = np.flatnonzero(counts[classes:IGNORE_INDEX])
    if bad.size:
        raise EvalError(f"{path}: label value {classes + int(bad[0])} is not a class "
                        f"(classes={classes}, {IGNORE_INDEX} = ignore)")


def read_sample(ds: Dataset, sample: Sample, decoder: str = "pil") -> tuple[np.ndarray, np.ndarray | int]:
    """The image and its label, checked against each other (what `check="quick"` left out)."""
    img = read_image(sample.image, decoder)
    if ds.task != "segmentation":
        return img, int(sample.label)          # type: ignore[arg-type]
    lab = read_label(sample.label)             # type: ignore[arg-type]
    check_label(lab, img.shape[:2], ds.classes, sample.label)     # type: ignore[arg-type]
    return img, lab


# -- opening --------------------------------------------------------------------------------------

def open_dataset(root: str | Path, task: str = "segmentation", classes: int | None = None,
                 check: str = "full") -> Dataset:
    """Find, pair and validate the samples under `root`. classes=None infers the count: from
    classes.txt when present, else the largest label value + 1 (segmentation) or the number of
    classes (classification)."""
    root = Path(root)
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    if check not in CHECKS:
        raise EvalError(f"unknown dataset check {check!r} (known: {', '.join(CHECKS)})")
    if classes is not None and classes < 1:
        raise EvalError(f"classes must be >= 1, got {classes}")
    if not root.is_dir():
        raise EvalError(f"{root}: dataset folder not found")
    names = _read_classes_txt(root)
    if classes is not None and names and len(names) != classes:
        raise EvalError(f"{root / 'classes.txt'}: lists {len(names)} classes but classes={classes}")
    if task == "segmentation":
        samples, classes = _open_segmentation(root, classes if classes is not None else
                                              (len(names) or None), check)
        extra = [root / "classes.txt"] if names else []
    else:
        samples, classes, names, extra = _open_classification(root, classes, names, check)
    files = [s.image for s in samples] + [s.label for s in samples if isinstance(s.label, Path)] + extra
    return Dataset(root=root, task=task, classes=classes, samples=tuple(samples),
                   sha256=_hash_files(root, files), class_names=tuple(names))


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _read_classes_txt(root: Path) -> list[str]:
    p = root / "classes.txt"
    if not p.is_file():
        return []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"{p}: cannot read ({e})") from None
    names = [ln.strip() for ln in lines if ln.strip()]
    if not names:
        raise EvalError(f"{p}: lists no classes")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EvalError(f"{p}: class {dup[0]!r} listed twice")
    return names


def _open_segmentation(root: Path, classes: int | None, check: str) -> tuple[list[Sample], int]:
    img_dir, lab_dir = root / "images", root / "labels"
    if not img_dir.is_dir():
        raise EvalError(f"{img_dir}: not found (segmentation needs <root>/images/ and <root>/labels/)")
    if not lab_dir.is_dir():
        raise EvalError(f"{lab_dir}: not found (segmentation needs <root>/images/ and <root>/labels/)")
    images: dict[str, Path] = {}
    for p in sorted(img_dir.iterdir()):
        if _is_image(p):
            if p.stem in images:
                raise EvalError(f"{p}: two images named {p.stem!r} ({images[p.stem].name} too)")
            images[p.stem] = p
    if not images:
        raise EvalError(f"{img_dir}: no images (.png, .jpg, .jpeg)")
    labels = {p.stem: p for p in lab_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
    for stem, p in images.items():
        if stem not in labels:
            raise EvalError(f"{p}: no label (expected {lab_dir / (stem + '.png')})")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise EvalError(f"{labels[orphans[0]]}: label has no image in {img_dir}")
    samples = [Sample(stem, images[stem], labels[stem]) for stem in sorted(images)]

    if check == "full" or classes is None:
        # decode everything: sizes, label values, and (for classes=None) the largest label value
        limit = classes if classes is not None else IGNORE_INDEX
        top = -1
        for s in samples:
            lab = read_label(s.label)                       # type: ignore[arg-type]
            if check == "full":
                img = read_image(s.image)
                check_label(lab, img.shape[:2], limit, s.label)   # type: ignore[arg-type]
            else:
                check_label(lab, lab.shape, limit, s.label)       # type: ignore[arg-type]
            vals = np.flatnonzero(np.bincount(lab.ravel(), minlength=256)[:IGNORE_INDEX])
            if vals.size:
                top = max(top, int(vals[-1]))
        if classes is None:
            if top < 0:
                raise EvalError(f"{lab_dir}: every label pixel is {IGNORE_INDEX} (ignore); "
                                "cannot infer the number of classes")
            classes = top + 1
    return samples, classes


def _open_classification(root: Path, classes: int | None, names: list[str], check: str
                         ) -> tuple[list[Sample], int, list[str], list[Path]]:
    csv_path = root / "labels.csv"
    extra = [root / "classes.txt"] if names else []
    if csv_path.is_file():
        samples, top = _read_labels_csv(root, csv_path, names, classes)
        extra.append(csv_path)
        n = classes if classes is not None else (len(names) or top + 1)
    else:
        if (root / "images").is_dir():
            raise EvalError(f"{csv_path}: not found (an images/ folder needs labels.csv; "
                            "or use class folders <root>/<class>/*.png)")
        samples, n, names = _read_class_folders(root, classes, names)
    if not samples:
        raise EvalError(f"{root}: no images (.png, .jpg, .jpeg) in labels.csv or class folders")
    for s in samples:
        if int(s.label) >= n:      # type: ignore[arg-type]
            raise EvalError(f"{s.image}: class {s.label} but classes={n}")
    if check == "full":
        for s in samples:
            read_image(s.image)
    return samples, n, names, extra


def _read_labels_csv(root: Path, path: Path, names: list[str], classes: int | None
                     ) -> tuple[list[Sample], int]:
    index = {n: i for i, n in enumerate(names)}
    bound = classes if classes is not None else (len(names) or None)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"{path}: cannot read ({e})") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header] != ["file", "label"]:
        raise EvalError(f"{path}:1: header must be 'file,label', got {','.join(header or [])!r}")
    samples: list[Sample] = []
    seen: set[str] = set()
    top = -1
    for lineno, row in enumerate(rows, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != 2:
            raise EvalError(f"{path}:{lineno}: expected 2 columns (file,label), got {len(row)}")
        file, lab = row[0].strip(), row[1].strip()
        if not file:
            raise EvalError(f"{path}:{lineno}: empty file name")
        if lab in index:
            k = index[lab]
        else:
            try:
                k = int(lab)
            except ValueError:
                known = " or a name from classes.txt" if names else ""
                raise EvalError(f"{path}:{lineno}: label {lab!r} is not a class index{known}") from None
            if k < 0 or (bound is not None and k >= bound):
                raise EvalError(f"{path}:{lineno}: label {k} is not a class"
                                + (f" (0..{bound - 1})" if bound is not None else ""))
        img = root / "images" / file
        if not img.is_file():
            img = root / file
        if not img.is_file():
            raise EvalError(f"{path}:{lineno}: image {file!r} not found in {root / 'images'} or {root}")
        if img.suffix.lower() not in IMAGE_SUFFIXES:
            raise EvalError(f"{path}:{lineno}: {file!r} is not a .png, .jpg or .jpeg image")
        rel = img.relative_to(root).as_posix()
        if rel in seen:
            raise EvalError(f"{path}:{lineno}: {file!r} listed twice")
        seen.add(rel)
        samples.append(Sample(rel, img, k))
        top = max(top, k)
    samples.sort(key=lambda s: s.name)
    return samples, top


def _read_class_folders(root: Path, classes: int | None, names: list[str]
                        ) -> tuple[list[Sample], int, list[str]]:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise EvalError(f"{root}: no labels.csv and no class folders")
    if names:
        unknown = [f for f in folders if f not in names]
        if unknown:
            raise EvalError(f"{root / unknown[0]}: class folder not listed in {root / 'classes.txt'}")
        index = {n: i for i, n in enumerate(names)}
    elif all(f.isdigit() for f in folders):
        index = {f: int(f) for f in folders}
        if len(set(index.values())) != len(index):
            raise EvalError(f"{root}: class folders name the same index twice ({', '.join(folders)})")
    else:
        names = folders
        index = {n: i for i, n in enumerate(names)}
    n = classes if classes is not None else (len(names) or max(index.values()) + 1)
    samples = [Sample(p.relative_to(root).as_posix(), p, index[f])
               for f in folders for p in sorted((root / f).iterdir()) if _is_image(p)]
    return samples, n, names


def _hash_files(root: Path, files: list[Path]) -> str:
    """sha256 over (relative path, size, content) of each file, in sorted path order; streamed."""
    h = hashlib.sha256()
    for rel, p in sorted((p.relative_to(root).as_posix(), p) for p in set(files)):
        try:
            with open(p, "rb") as f:
                size = f.seek(0, 2)
                f.seek(0)
                h.update(rel.encode() + b"\0" + size.to_bytes(8, "little"))
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as e:
            raise EvalError(f"{p}: cannot read ({e.strerror or e})") from None
    return h.hexdigest()
