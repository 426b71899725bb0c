"""The camera -> BEV view transform, precomputed from the rig in numpy.

Sampling at projected pillar points (the "sampling" family of view transforms: BEVFormer's spatial
cross-attention reference points without the learned offsets, Simple-BEV's bilinear lifting): every
cell of the model's BEV grid is a vertical pillar sampled at a few heights; each pillar point is
projected with `Camera.project` into every camera, and the cameras that see it (depth > 0.5 m, inside
the image) contribute a bilinear sample of their feature map.  All of that depends only on the rig, so
it becomes two constant tables with a fixed K samples per cell (padding has weight 0):

    bev[c, p] = sum_k weight[p, k] * feat_flat[c, idx[p, k]]
    feat_flat = feats [n_cams, C, h, w] transposed to [C, n_cams * h * w]

which ONNX expresses as Gather + Mul + ReduceSum.  The weights of one cell sum to 1 over its samples
(or 0 for a cell no camera sees).

Dropping cameras: the model multiplies each camera's features by its entry of a camera mask and
gathers the mask itself as one extra channel; that channel is the weight that survived in each cell,
and the BEV features are divided by it (clamped at `MASK_EPS`).  A cell seen by a dropped and a kept
camera thus takes the kept camera's features at full strength; a cell seen only by dropped cameras
becomes 0, like a cell no camera sees.  With every camera kept the division is by exactly 1 (or 0 ->
the clamp, where the features are 0 too).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.bev.rig import BevGrid, Rig

MIN_DEPTH_M = 0.5          # pillar points closer to a camera than this are not sampled
MASK_EPS = 1e-4            # the clamp of the surviving weight when renormalising after a camera drop


@dataclass(frozen=True)
class ViewTables:
    idx: np.ndarray          # [P, K] int32 into the flattened [n_cams * h * w] feature positions
    weight: np.ndarray       # [P, K] float32; each row sums to 1 (seen cell) or 0 (unseen)
    cam: np.ndarray          # [P, K] int8 camera of each sample, -1 for padding (for tests and tools)
    grid: BevGrid            # the model's BEV grid; P = grid.size ** 2, row-major like BevGrid
    n_cams: int
    feat_hw: tuple[int, int]
    heights_m: tuple[float, ...]

    @property
    def k(self) -> int:
        return int(self.idx.shape[1])


def view_tables(rig: Rig, grid: BevGrid, feat_hw: tuple[int, int], heights_m: tuple[float, ...] = (0.25, 1.0),
                min_depth_m: float = MIN_DEPTH_M) -> ViewTables:
    """Index/weight tables for a feature map of `feat_hw` (h, w) per camera (every camera of the rig
    must have the same image size; the feature map covers the image with stride W / w, H / h)."""
    h, w = feat_hw
    sizes = {(c.width, c.height) for c in rig.cameras}
    if len(sizes) != 1:
        raise ValueError(f"the view transform needs one image size for every camera, got {sorted(sizes)}")
    (img_w, img_h), = sizes
    cells = grid.cell_centres().reshape(-1, 2)
    p_n = len(cells)
    rows, flats, wts, cams = [], [], [], []
    count = np.zeros(p_n, np.int64)
    for n, cam in enumerate(rig.cameras):
        for z in heights_m:
            pts = np.concatenate([cells, np.full((p_n, 1), z)], 1)
            uv, depth = cam.project(pts)
            ok = (depth > min_depth_m) & (uv[:, 0] >= 0) & (uv[:, 0] < img_w) & (uv[:, 1] >= 0) & (uv[:, 1] < img_h)
            count += ok
            p = np.nonzero(ok)[0]
            # feature pixel j covers image [j*s, (j+1)*s): its centre is at (j + 0.5) * s
            fx = uv[p, 0] * w / img_w - 0.5
            fy = uv[p, 1] * h / img_h - 0.5
            x0, y0 = np.floor(fx), np.floor(fy)
            ax, ay = fx - x0, fy - y0
            for dx, dy, bw in ((0, 0, (1 - ax) * (1 - ay)), (1, 0, ax * (1 - ay)),
                               (0, 1, (1 - ax) * ay), (1, 1, ax * ay)):
                xi = np.clip(x0 + dx, 0, w - 1).astype(np.int64)   # border taps clamp (edge padding)
                yi = np.clip(y0 + dy, 0, h - 1).astype(np.int64)
                rows.append(p)
                flats.append(n * h * w + yi * w + xi)
                wts.append(bw)
                cams.append(np.full(len(p), n))
    row = np.concatenate(rows)
    flat, wt, cam_of = np.concatenate(flats), np.concatenate(wts), np.concatenate(cams)
    wt = wt / np.maximum(count[row], 1)
    order = np.argsort(row, kind="stable")
    row, flat, wt, cam_of = row[order], flat[order], wt[order], cam_of[order]
    per_cell = np.bincount(row, minlength=p_n)
    k = max(int(per_cell.max()), 1)
    slot = np.arange(len(row)) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    idx = np.zeros((p_n, k), np.int32)
    weight = np.zeros((p_n, k), np.float32)
    cam_t = np.full((p_n, k), -1, np.int8)
    idx[row, slot], weight[row, slot], cam_t[row, slot] = flat, wt, cam_of
    return ViewTables(idx, weight, cam_t, grid, len(rig.cameras), (h, w), tuple(float(z) for z in heights_m))


def apply_numpy(t: ViewTables, feats: np.ndarray, cam_mask: np.ndarray | None = None) -> np.ndarray:
    """The reference: feats [n_cams, C, h, w] -> BEV [C, S, S], with the camera-drop renormalisation."""
    n, c, h, w = feats.shape
    mask = np.ones(n, np.float32) if cam_mask is None else np.asarray(cam_mask, np.float32)
    aug = np.concatenate([feats * mask[:, None, None, None],
                          np.broadcast_to(mask[:, None, None, None], (n, 1, h, w))], 1)
    flat = aug.transpose(1, 0, 2, 3).reshape(c + 1, -1)
    g = (flat[:, t.idx] * t.weight).sum(-1)
    bev = g[:c] / np.maximum(g[c:], MASK_EPS)
    return bev.reshape(c, t.grid.size, t.grid.size)
