"""`text-detection`: the DB (Differentiable Binarization) post-process of PP-OCR, with RapidOCR's
defaults and steps (rapidocr-onnxruntime 1.4.4, ch_ppocr_det/utils.py DBPostProcess, text_detect.py
filter_tag_det_res and main.py sorted_boxes; /work/shared/ANCHORS.md "OCR pipeline anchor"):

1. binarise the probability map at `thresh` (prob > 0.3), dilate with a 2×2 kernel (use_dilation);
2. cv2.findContours (RETR_LIST, CHAIN_APPROX_SIMPLE); for the first `max_candidates` contours the
   minimum-area rectangle, skipped when its short side < `min_size`;
3. score (score_mode "fast"): the mean probability over the rectangle's bounding box masked by the
   rectangle (cv2.fillPoly of the corner points truncated to integers); "slow": masked by the contour;
   kept when ≥ `box_thresh`;
4. unclip: grow by distance = area × unclip_ratio / perimeter.  RapidOCR offsets the polygon with
   pyclipper (JT_ROUND) and takes the minimum-area rectangle of the result; the polygon is always a
   rectangle here (its corners truncated to integers by pyclipper), so the result has a closed form:
   the rectangle with every side pushed out by the distance (`unclip_rects`; no pyclipper needed);
5. short side ≥ min_size + 2, scale to the source frame (x / map_w × image_w, rounded), corners
   ordered clockwise from the top-left, clipped to [0, W-1] × [0, H-1], boxes whose sides are ≤ 3 px
   dropped, sorted top-to-bottom then left-to-right (same line when |Δy| of the top-left corners < 10).

Everything except the per-contour OpenCV calls (minAreaRect, the score fillPoly) is vectorised over
the candidates."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.errors import InputError
from edgert.tasks._draw import check_image, cv2
from edgert.tasks.base import FrameMeta, Task, first_output, param, register

SAME_LINE_PX = 10           # RapidOCR main.py sorted_boxes: same line when |dy| < 10
MIN_SIDE_PX = 3             # RapidOCR text_detect.py filter_tag_det_res: drop sides <= 3 px


@register
class TextDetection(Task):
    name = "text-detection"

    @dataclass(frozen=True)
    class Params:
        thresh: float = param(0.3, "float", 0.0, 1.0)
        box_thresh: float = param(0.5, "float", 0.0, 1.0)
        unclip_ratio: float = param(1.6, "float", 0.0, 100.0)
        max_candidates: int = param(1000, "int", 1, 100000)
        min_size: float = param(3.0, "float", 0.0, 10000.0)
        use_dilation: bool = param(True, "bool")
        score_mode: str = param("fast", "choice", choices=("fast", "slow"))

    def postprocess(self, outputs: dict[str, np.ndarray], meta: FrameMeta) -> dict:
        boxes, scores = db_boxes(prob_map(first_output(outputs, self.name)), meta.image_hw, self.params)
        return {"boxes": [{"box": b.tolist(), "score": float(s)} for b, s in zip(boxes, scores)]}

    def render(self, image_rgb: np.ndarray, result: dict) -> np.ndarray:
        img = check_image(image_rgb)
        polys = [np.rint(np.asarray(b["box"], np.float64)).astype(np.int32).reshape(-1, 1, 2)
                 for b in result.get("boxes", [])]
        if polys:
            c = cv2()
            c.polylines(img, polys, True, (0, 255, 0), max(1, round(min(img.shape[:2]) / 400)))
        return img


def prob_map(x: np.ndarray) -> np.ndarray:
    """[1, 1, H, W] / [1, H, W] / [H, W] -> (H, W) float32."""
    a = np.asarray(x)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0 or a.dtype.kind not in "fiub":
        raise InputError(f"text-detection wants a [1, 1, H, W] probability map, got "
                         f"{tuple(np.shape(x))} {np.asarray(x).dtype}")
    return a.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- rectangle geometry
def _take(pts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(pts, idx[:, :, None], axis=1)


def mini_box_order(pts: np.ndarray) -> np.ndarray:
    """RapidOCR get_mini_boxes' corner order: by x, then of the two left points the upper first and
    of the two right points the upper second: [tl, tr, br, bl] for boxes that are not diagonal."""
    s = _take(pts, np.argsort(pts[:, :, 0], axis=1, kind="stable"))
    up_left = (s[:, 1, 1] > s[:, 0, 1])[:, None]
    up_right = (s[:, 3, 1] > s[:, 2, 1])[:, None]
    tl = np.where(up_left, s[:, 0], s[:, 1])
    bl = np.where(up_left, s[:, 1], s[:, 0])
    tr = np.where(up_right, s[:, 2], s[:, 3])
    br = np.where(up_right, s[:, 3], s[:, 2])
    return np.stack([tl, tr, br, bl], axis=1)


def order_points_clockwise(pts: np.ndarray) -> np.ndarray:
    """(K, 4, 2) -> [top-left, top-right, bottom-right, bottom-left] per box: the two left-most points
    (by x) ordered by y give tl, bl; the two right-most, tr, br (RapidOCR's order_points_clockwise,
    after imutils.perspective.order_points)."""
    s = _take(pts, np.argsort(pts[:, :, 0], axis=1, kind="stable"))
    left, right = s[:, :2], s[:, 2:]
    left = _take(left, np.argsort(left[:, :, 1], axis=1, kind="stable"))
    right = _take(right, np.argsort(right[:, :, 1], axis=1, kind="stable"))
    return np.stack([left[:, 0], right[:, 0], right[:, 1], left[:, 1]], axis=1)


def unclip_rects(pts: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """DB's unclip of rectangles (K, 4, 2), corners in cycle order: distance d = area × ratio /
    perimeter, then the minimum-area rectangle of the round-joined offset polygon.  -> (grown, d).

    RapidOCR hands the float corners to pyclipper, which truncates them to integers; the offset of
    that (nearly rectangular) quad is the quad with every side pushed out by d and rounded corners,
    whose minimum-area rectangle is the quad's bounding rectangle along one of its own edge
    directions, grown by d on every side: the smallest of the four is taken, vectorised."""
    p = pts.astype(np.float64)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 3] - p[:, 0]
    l1, l2 = np.linalg.norm(e1, axis=1), np.linalg.norm(e2, axis=1)
    perimeter = 2 * (l1 + l2)
    d = np.divide(l1 * l2 * ratio, perimeter, out=np.zeros_like(l1), where=perimeter > 0)
    q = np.trunc(p)                                        # pyclipper's integer coordinates
    edges = np.roll(q, -1, axis=1) - q                     # (K, 4 edges, 2)
    ln = np.linalg.norm(edges, axis=2)
    u = np.divide(edges, ln[..., None], out=np.zeros_like(edges), where=ln[..., None] > 0)
    v = np.stack([-u[..., 1], u[..., 0]], axis=-1)
    pu = np.einsum("kpj,kej->kep", q, u)                   # (K, edge direction, corner)
    pv = np.einsum("kpj,kej->kep", q, v)
    u0, u1 = pu.min(axis=2) - d[:, None], pu.max(axis=2) + d[:, None]
    v0, v1 = pv.min(axis=2) - d[:, None], pv.max(axis=2) + d[:, None]
    area = np.where(ln > 0, (u1 - u0) * (v1 - v0), np.inf)
    k = np.arange(len(p))
    best = np.argmin(area, axis=1) if len(p) else np.zeros(0, np.int64)
    U, V = u[k, best], v[k, best]
    a0, a1, b0, b1 = (t[k, best][:, None] for t in (u0, u1, v0, v1))
    grown = np.stack([a0 * U + b0 * V, a1 * U + b0 * V, a1 * U + b1 * V, a0 * U + b1 * V], axis=1)
    return grown, d


def sort_boxes(boxes: np.ndarray) -> np.ndarray:
    """Reading order of (K, 4, 2) boxes, as RapidOCR's sorted_boxes: by the top-left corner's (y, x),
    then one insertion pass that moves a box before its predecessors while they lie on the same line
    (|Δy| < 10 px) and start further right.  -> permutation indices."""
    y, x = boxes[:, 0, 1].astype(np.float64), boxes[:, 0, 0].astype(np.float64)
    order = [int(i) for i in np.lexsort((x, y))]
    for i in range(len(order) - 1):          # over boxes, order-dependent by definition
        for j in range(i, -1, -1):
            a, b = order[j], order[j + 1]
            if abs(y[b] - y[a]) < SAME_LINE_PX and x[b] < x[a]:
                order[j], order[j + 1] = b, a
            else:
                break
    return np.asarray(order, np.int64)


# --------------------------------------------------------------------------- the DB post-process
def _scores(prob: np.ndarray, polys: list[np.ndarray]) -> np.ndarray:
    """Mean of `prob` inside each polygon, over the polygon's bounding box clipped to the map, the
    polygon's coordinates relative to that box truncated to integers (RapidOCR box_score_fast /
    box_score_slow); 0 where the mask is empty (cv2.mean)."""
    c = cv2()
    h, w = prob.shape
    out = np.zeros(len(polys), np.float64)
    for k, poly in enumerate(polys):          # one fillPoly per candidate box
        x0 = int(np.clip(np.floor(poly[:, 0].min()), 0, w - 1))
        x1 = int(np.clip(np.ceil(poly[:, 0].max()), 0, w - 1))
        y0 = int(np.clip(np.floor(poly[:, 1].min()), 0, h - 1))
        y1 = int(np.clip(np.ceil(poly[:, 1].max()), 0, h - 1))
        mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        rel = (poly - np.array([x0, y0], poly.dtype)).astype(np.int32)
        c.fillPoly(mask, rel.reshape(1, -1, 2), 1)
        sel = mask.view(bool)
        if sel.any():
            out[k] = prob[y0:y1 + 1, x0:x1 + 1][sel].mean(dtype=np.float64)
    return out


def db_boxes(prob: np.ndarray, image_hw: tuple[int, int], params=None) -> tuple[np.ndarray, np.ndarray]:
    """DB text boxes of an (H, W) probability map, in the (image_h, image_w) source frame.
    -> (boxes float32 (K, 4, 2) [tl, tr, br, bl] (x, y), integer-valued; scores float32 (K,)), in
    reading order.  `params` is TextDetection.Params (RapidOCR's defaults when None)."""
    p = TextDetection.Params() if params is None else params
    c = cv2()
    prob = prob_map(prob)
    if not np.isfinite(prob).all():          # a broken model: NaN never passes a threshold
        prob = np.nan_to_num(prob, nan=0.0, posinf=1.0, neginf=0.0)
    h, w = prob.shape
    ih, iw = int(image_hw[0]), int(image_hw[1])
    if ih < 1 or iw < 1:
        raise InputError(f"text-detection: bad source image size {ih}x{iw}")
    empty = np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32)
    bitmap = (prob > p.thresh).astype(np.uint8)
    if p.use_dilation:
        bitmap = c.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours = c.findContours(bitmap * np.uint8(255), c.RETR_LIST, c.CHAIN_APPROX_SIMPLE)[-2]
    contours = contours[:p.max_candidates]
    if not contours:
        return empty
    rects = [c.minAreaRect(ct) for ct in contours]    # OpenCV calls per contour, not per pixel
    sizes = np.array([r[1] for r in rects], np.float32)
    # cv2.boxPoints itself, not its formula in numpy: its float32 rounding (23 -> 22.999996) decides
    # which integer pyclipper truncates a corner to in RapidOCR, so parity needs its exact values
    pts = mini_box_order(np.stack([c.boxPoints(r) for r in rects]))
    idx = np.flatnonzero(sizes.min(axis=1) >= p.min_size)
    polys = [pts[k] for k in idx] if p.score_mode == "fast" else \
        [contours[k].reshape(-1, 2).astype(np.float32) for k in idx]
    scores = _scores(prob, polys)
    good = scores >= p.box_thresh
    idx, scores = idx[good], scores[good]
    grown, _ = unclip_rects(pts[idx], p.unclip_ratio)
    e = grown[:, [1, 3]] - grown[:, [0, 0]]
    sside = np.linalg.norm(e, axis=2).min(axis=1)
    big = sside >= p.min_size + 2
    grown, scores = mini_box_order(grown[big]), scores[big]
    if not len(grown):
        return empty
    # to the source frame (RapidOCR: round, clip to [0, W], order, clip to [0, W - 1])
    src = np.round(grown / np.array([w, h], np.float64) * np.array([iw, ih], np.float64))
    src = np.clip(src, 0, np.array([iw, ih], np.float64))
    src = order_points_clockwise(src)
    src = np.clip(src, 0, np.array([iw - 1, ih - 1], np.float64))
    width = np.linalg.norm(src[:, 0] - src[:, 1], axis=1).astype(np.int64)
    height = np.linalg.norm(src[:, 0] - src[:, 3], axis=1).astype(np.int64)
    ok = (width > MIN_SIDE_PX) & (height > MIN_SIDE_PX)
    src, scores = src[ok], scores[ok]
    order = sort_boxes(src)
    return src[order].astype(np.float32), scores[order].astype(np.float32)
