"""A small synthetic UAV-style segmentation set (and a class-folder classification set) for tests,
demos and smoke runs of the harness: no download, deterministic per seed.

Each class has a characteristic colour *and* texture (smooth noise of a given scale, oriented
stripes, a roof-tile grid, blocky speckle, warped flow lines). Pairs of classes have nearby palettes
that overlap once jittered per instance and per image (avalanche / ice jam, intact / damaged
buildings, debris flow / flood water, fire / lava, pyroclastic flow / road), so colour helps but
does not separate them: a per-class Gaussian colour model fitted on 16 scenes scores about 0.86
pixel accuracy but 0.39 mean Dice on others (at 128x128); a net has to use texture to do better.
Each image holds a random subset of the classes; persons and vehicles are small objects.

The class names are LPCVC 2023's 14 (lpcvai/23LPCVC_Segmentation_Track-Sample_Solution), written
as identifiers so they can name folders. OpenCV draws the shapes and writes the PNGs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgert.errors import EvalError

CLASS_NAMES: tuple[str, ...] = (
    "background", "avalanche", "building_undamaged", "building_damaged",
    "cracks_fissure_subsidence", "debris_mud_rock_flow", "fire_flare", "flood_water_river_sea",
    "ice_jam_flow", "lava_flow", "person", "pyroclastic_flow", "road_railway_bridge", "vehicle",
)
BACKGROUND, PERSON, VEHICLE = 0, 10, 13

# painting order of the area classes (later ones cover earlier ones); small objects go last
_AREA_ORDER = (7, 1, 5, 11, 9, 8, 12, 2, 3, 4, 6)
_SMALL = (PERSON, VEHICLE)
_P_AREA, _P_SMALL = 0.4, 0.5              # chance that a class appears in an image


# -- textures: (rng, h, w, period px) -> float32 field in [0, 1] ----------------------------------

def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise EvalError("the synthetic data set needs OpenCV: pip install 'edgert[camera]'") from e
    return cv2


def _smooth(rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """Value noise: a coarse random grid, bicubically upsampled; `period` = grid spacing."""
    gh, gw = int(h // period) + 2, int(w // period) + 2
    g = rng.random((gh, gw), dtype=np.float32)
    return np.clip(_cv2().resize(g, (w, h), interpolation=_cv2().INTER_CUBIC), 0.0, 1.0)


def _axis(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along and across a random direction."""
    t = rng.uniform(0.0, math.pi)
    c, s = np.float32(math.cos(t)), np.float32(math.sin(t))
    x, y = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    return x * c + y * s, y * c - x * s


def _stripes(rng, h, w, period):
    u, _ = _axis(rng, h, w)
    return 0.5 + 0.5 * np.sin(u * np.float32(2 * math.pi / period) + np.float32(rng.uniform(0, 6.3)))


def _grid(rng, h, w, period):
    u, v = _axis(rng, h, w)
    line = np.float32(period * 0.25)
    return (((u % period) < line) | ((v % period) < line)).astype(np.float32)


def _speckle(rng, h, w, period):
    """Blocky rubble: random cells of `period` px, plus some per-pixel noise."""
    cells = rng.random((int(h // period) + 1, int(w // period) + 1), dtype=np.float32)
    blocks = _cv2().resize(cells, (w, h), interpolation=_cv2().INTER_NEAREST)
    return 0.7 * (blocks > 0.55) + 0.3 * rng.random((h, w), dtype=np.float32)


def _flow(rng, h, w, period):
    """Stripes whose phase is warped by smooth noise: streaks of a flow."""
    u, _ = _axis(rng, h, w)
    warp = _smooth(rng, h, w, period * 4) * np.float32(4 * math.pi)
    return 0.5 + 0.5 * np.sin(u * np.float32(2 * math.pi / period) + warp)


def _grain(rng, h, w, period):
    return rng.random((h, w), dtype=np.float32)


def _flat(rng, h, w, period):
    return np.zeros((h, w), np.float32)


_TEXTURES: dict[str, Callable[..., np.ndarray]] = {
    "smooth": _smooth, "stripes": _stripes, "grid": _grid, "speckle": _speckle, "flow": _flow,
    "grain": _grain, "flat": _flat,
}


# -- shapes: (rng, size, scale) -> list of instance masks -----------------------------------------

def _mask(size: int) -> np.ndarray:
    return np.zeros((size, size), np.uint8)


def _blob_polygon(rng, cx, cy, r, n=24) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    rad = np.ones(n)
    for k in (1, 2, 3):
        rad += rng.uniform(0.05, 0.25) / k * np.sin(k * t + rng.uniform(0, 6.3))
    rad *= r
    return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1).round().astype(np.int32)


def _blobs(rmin: float, rmax: float, most: int = 2):
    def draw(rng, size, scale):
        out = []
        for _ in range(rng.integers(1, most + 1)):
            m = _mask(size)
            c = rng.uniform(0, size, 2)
            _cv2().fillPoly(m, [_blob_polygon(rng, c[0], c[1], rng.uniform(rmin, rmax) * size)], 1)
            out.append(m)
        return out
    return draw


def _path(rng, size, points: int, wiggle: float) -> np.ndarray:
    """A polyline from one image edge to the opposite one, wiggling sideways."""
    a, b = rng.uniform(0, size, 2)
    if rng.random() < 0.5:
        p0, p1 = np.array([0.0, a]), np.array([size - 1.0, b])
    else:
        p0, p1 = np.array([a, 0.0]), np.array([b, size - 1.0])
    t = np.linspace(0, 1, points)[:, None]
    pts = p0 + t * (p1 - p0)
    normal = np.array([-(p1 - p0)[1], (p1 - p0)[0]]) / (np.linalg.norm(p1 - p0) + 1e-9)
    offs = rng.normal(0, wiggle * size, points)
    offs[0] = offs[-1] = 0
    return (pts + offs[:, None] * normal).round().astype(np.int32)


def _strips(wmin: float, wmax: float, most: int = 1, wiggle: float = 0.08):
    def draw(rng, size, scale):
        out = []
        for _ in range(rng.integers(1, most + 1)):
            m = _mask(size)
            thick = max(2, int(rng.uniform(wmin, wmax) * size))
            _cv2().polylines(m, [_path(rng, size, 6, wiggle)], False, 1, thickness=thick)
            out.append(m)
        return out
    return draw


def _rects(side_min: float, side_max: float, most: int):
    """A cluster of rotated rectangles (a block of buildings)."""
    def draw(rng, size, scale):
        cx, cy = rng.uniform(0.15, 0.85, 2) * size
        spread = rng.uniform(0.08, 0.2) * size
        out = []
        for _ in range(rng.integers(2, most + 1)):
            m = _mask(size)
            box = ((cx + rng.normal(0, spread), cy + rng.normal(0, spread)),
                   tuple(rng.uniform(side_min, side_max, 2) * size), rng.uniform(0, 90))
            _cv2().fillPoly(m, [_cv2().boxPoints(box).round().astype(np.int32)], 1)
            out.append(m)
        return out
    return draw


def _cracks(rng, size, scale):
    out = []
    for _ in range(rng.integers(1, 4)):
        m = _mask(size)
        n = int(rng.integers(8, 15))
        start = rng.uniform(0.1, 0.9, 2) * size
        steps = rng.normal(0, 0.03 * size, (n, 2)) + rng.normal(0, 0.03 * size, 2)
        pts = (start + np.cumsum(steps, 0)).round().astype(np.int32)
        _cv2().polylines(m, [pts], False, 1, thickness=max(1, int(round(0.01 * size))))
        out.append(m)
    return out


def _persons(rng, size, scale):
    out = []
    cx, cy = rng.uniform(0.05, 0.95, 2) * size
    for _ in range(rng.integers(1, 9)):
        m = _mask(size)
        c = (int(cx + rng.normal(0, 0.06 * size)), int(cy + rng.normal(0, 0.06 * size)))
        axes = (max(1, int(round(rng.uniform(5, 8) * scale))), max(1, int(round(rng.uniform(3, 5) * scale))))
        _cv2().ellipse(m, c, axes, rng.uniform(0, 180), 0, 360, 1, thickness=-1)
        out.append(m)
    return out


def _vehicles(rng, size, scale):
    out = []
    for _ in range(rng.integers(1, 7)):
        m = _mask(size)
        box = (tuple(rng.uniform(0.03, 0.97, 2) * size),
               (max(2.0, rng.uniform(10, 14) * scale), max(3.0, rng.uniform(20, 28) * scale)),
               rng.uniform(0, 180))
        _cv2().fillPoly(m, [_cv2().boxPoints(box).round().astype(np.int32)], 1)
        out.append(m)
    return out


def _water(rng, size, scale):
    """Flooded ground (a large blob) or a river (a wide winding strip)."""
    return (_blobs(0.18, 0.35) if rng.random() < 0.5 else _strips(0.08, 0.16, wiggle=0.12))(rng, size, scale)


# -- the class table -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Style:
    a: tuple[int, int, int]                # RGB at texture value 0
    b: tuple[int, int, int]                # RGB at texture value 1
    texture: str
    period: float                          # texture scale in px at 512x512
    shape: Callable | None                 # None: the whole image (background)
    palette: tuple[tuple[int, int, int], ...] = ()    # per-instance base colours (small objects)


_PEOPLE = ((200, 40, 40), (40, 60, 180), (230, 200, 40), (240, 240, 240), (30, 30, 30), (40, 140, 60))
_CARS = ((220, 220, 225), (30, 30, 35), (150, 20, 25), (30, 50, 120), (160, 160, 165), (200, 160, 30))

_STYLES: dict[int, _Style] = {
    0: _Style((86, 112, 58), (128, 108, 72), "smooth", 64, None),
    1: _Style((236, 238, 244), (196, 202, 214), "flow", 14, _blobs(0.12, 0.3)),
    2: _Style((184, 170, 150), (120, 110, 100), "grid", 16, _rects(0.05, 0.12, 8)),
    3: _Style((150, 128, 110), (84, 76, 70), "speckle", 6, _rects(0.05, 0.12, 8)),
    4: _Style((40, 34, 30), (70, 60, 52), "grain", 1, _cracks),
    5: _Style((132, 100, 64), (88, 70, 48), "flow", 20, _strips(0.06, 0.12)),
    6: _Style((255, 200, 70), (220, 80, 20), "smooth", 10, _blobs(0.05, 0.12, 3)),
    7: _Style((84, 100, 120), (110, 100, 80), "smooth", 40, _water),
    8: _Style((190, 208, 228), (120, 140, 170), "speckle", 8, _strips(0.06, 0.12)),
    9: _Style((60, 36, 32), (230, 90, 30), "flow", 20, _strips(0.06, 0.14)),
    10: _Style((0, 0, 0), (0, 0, 0), "flat", 1, _persons, _PEOPLE),
    11: _Style((160, 152, 146), (104, 98, 96), "smooth", 24, _blobs(0.12, 0.3)),
    12: _Style((96, 96, 104), (60, 60, 68), "stripes", 20, _strips(0.03, 0.06, most=2, wiggle=0.03)),
    13: _Style((0, 0, 0), (0, 0, 0), "grain", 1, _vehicles, _CARS),
}
assert len(_STYLES) == len(CLASS_NAMES)


def _texture(k: int, rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """(h, w, 3) float32 RGB of class k: jittered palette blended by the class's texture."""
    st = _STYLES[k]
    if st.palette:
        base = np.array(st.palette[rng.integers(len(st.palette))], np.float32)
        a, b = base, base * np.float32(0.75)        # small objects: own colour, slight shading
    else:
        a = np.array(st.a, np.float32) + rng.normal(0, 6, 3).astype(np.float32)
        b = np.array(st.b, np.float32) + rng.normal(0, 6, 3).astype(np.float32)
    t = _TEXTURES[st.texture](rng, h, w, max(1.0, st.period * scale))
    return a + (b - a) * t[:, :, None]


def _paint(img: np.ndarray, lab: np.ndarray, k: int, mask: np.ndarray, rng, scale: float) -> None:
    x, y, w, h = _cv2().boundingRect(mask)
    if w == 0 or h == 0:
        return
    m = mask[y:y + h, x:x + w] > 0
    img[y:y + h, x:x + w][m] = _texture(k, rng, h, w, scale)[m]
    lab[y:y + h, x:x + w][m] = k


def _check_classes(classes: int) -> None:
    if not 2 <= classes <= len(CLASS_NAMES):
        raise EvalError(f"synthetic data has 2..{len(CLASS_NAMES)} classes, got {classes}")


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-image lighting (gain, colour cast) and sensor grain, then uint8."""
    gain = np.float32(rng.uniform(0.9, 1.1))
    cast = rng.normal(0, 4, 3).astype(np.float32)
    img = img * gain + cast + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(4.0)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def render_scene(rng: np.random.Generator, size: int = 512, classes: int = 14,
                 force: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, 3) uint8 RGB image and its (size, size) uint8 label map. Classes in
    `force` are always drawn (after the other area classes, so they stay visible)."""
    _check_classes(classes)
    force = [k for k in force if 0 < k < classes]
    scale = size / 512
    img = _texture(BACKGROUND, rng, size, size, scale)
    lab = np.zeros((size, size), np.uint8)
    area = [k for k in _AREA_ORDER if k < classes and k not in force and rng.random() < _P_AREA]
    area += [k for k in force if k not in _SMALL]
    small = [k for k in _SMALL if k < classes and (k in force or rng.random() < _P_SMALL)]
    for k in area + small:
        for m in _STYLES[k].shape(rng, size, scale):       # type: ignore[misc]
            _paint(img, lab, k, m, rng, scale)
    return _finish(img, rng), lab


# -- writing -------------------------------------------------------------------------------------

def _write_png(path: Path, arr: np.ndarray) -> None:
    cv2 = _cv2()
    data = arr[:, :, ::-1] if arr.ndim == 3 else arr     # RGB -> OpenCV's BGR
    # level 1: these noisy images barely compress anyway, and level 1 is ~5x faster than the default
    if not cv2.imwrite(str(path), np.ascontiguousarray(data), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise EvalError(f"{path}: cannot write")


def write_synthetic_segmentation(root: Path, n: int, size: int = 512, classes: int = 14,
                                 seed: int = 0) -> Path:
    """Write n images in the segmentation layout of edgert.eval.dataset; returns root.
    Image i depends only on (seed, i), and image i is forced to show class 1 + i mod (classes-1),
    so any n >= classes - 1 covers every class."""
    _check_classes(classes)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n - 1)))
    for i in range(n):
        img, lab = render_scene(np.random.default_rng([seed, i]), size, classes,
                                force=(1 + i % (classes - 1),))
        name = f"img_{i:0{width}d}.png"
        _write_png(root / "images" / name, img)
        _write_png(root / "labels" / name, lab)
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES[:classes]) + "\n")
    (root / "README.txt").write_text(
        f"Synthetic UAV-style segmentation set written by edgert.eval.synthetic "
        f"(n={n}, size={size}, classes={classes}, seed={seed}).\n\n"
        "images/<name>.png   RGB image\n"
        "labels/<name>.png   8-bit single-channel class-index map of the same size "
        "(0..classes-1; 255 = ignore, unused here)\n"
        "classes.txt         class names, one per line, in index order\n\n"
        "Open it with edgert.eval.dataset.open_dataset(root, 'segmentation').\n")
    return root


def write_synthetic_classification(root: Path, n_per_class: int, size: int = 64, classes: int = 5,
                                   seed: int = 0) -> Path:
    """Write the class-folder layout: root/<class name>/img_NNN.png + classes.txt; returns root.
    Class 0 is plain background; class k > 0 is background with class k's regions on it."""
    _check_classes(classes)
    root = Path(root)
    for k in range(classes):
        d = root / CLASS_NAMES[k]
        d.mkdir(parents=True, exist_ok=True)
        for j in range(n_per_class):
            rng = np.random.default_rng([seed, k, j])
            # scale 1: textures and small objects keep their 512-px pixel sizes (a crop of a
            # scene, not a shrunk one), so they stay recognisable in a small image
            img = _texture(BACKGROUND, rng, size, size, 1.0)
            lab = np.zeros((size, size), np.uint8)
            if k:
                for m in _STYLES[k].shape(rng, size, 1.0):       # type: ignore[misc]
                    _paint(img, lab, k, m, rng, 1.0)
            _write_png(d / f"img_{j:03d}.png", _finish(img, rng))
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES[:classes]) + "\n")
    return root
