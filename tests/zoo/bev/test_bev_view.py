from __future__ import annotations

import numpy as np
import pytest

from edgert.bev.rig import BevGrid, nuscenes_like_rig
from zoo.bev.view import MIN_DEPTH_M, apply_numpy, view_tables

GRID = BevGrid(50, 1.0)
FEAT_HW = (12, 20)
HEIGHTS = (0.25, 1.0)


@pytest.fixture(scope="module")
def rig():
    return nuscenes_like_rig()


@pytest.fixture(scope="module")
def tables(rig):
    return view_tables(rig, GRID, FEAT_HW, HEIGHTS)


def _expected_samples(rig, cell_xy):
    """(camera, fx, fy) of every pillar point of a cell that some camera sees, from Camera.project."""
    h, w = FEAT_HW
    out = []
    for n, cam in enumerate(rig.cameras):
        for z in HEIGHTS:
            uv, d = cam.project(np.array([[cell_xy[0], cell_xy[1], z]]))
            u, v = uv[0]
            if d[0] > MIN_DEPTH_M and 0 <= u < cam.width and 0 <= v < cam.height:
                out.append((n, u * w / cam.width - 0.5, v * h / cam.height - 0.5))
    return out


def test_tables_shape_and_normalisation(tables):
    p = GRID.size ** 2
    assert tables.idx.shape == tables.weight.shape == tables.cam.shape == (p, tables.k)
    assert tables.idx.dtype == np.int32 and tables.weight.dtype == np.float32
    n_cams, (h, w) = 6, FEAT_HW
    assert tables.idx.min() >= 0 and tables.idx.max() < n_cams * h * w
    s = tables.weight.sum(1)
    seen = s > 0
    np.testing.assert_allclose(s[seen], 1.0, atol=1e-5)
    assert seen.mean() > 0.95                     # six cameras cover nearly all of a 50 m square
    assert (tables.weight[tables.cam < 0] == 0).all()
    # the tap's camera agrees with the flat index's camera block
    used = tables.weight > 0
    assert (tables.idx[used] // (h * w) == tables.cam[used]).all()


def test_taps_agree_with_camera_project(rig, tables):
    rng = np.random.default_rng(0)
    cells = GRID.cell_centres().reshape(-1, 2)
    h, w = FEAT_HW
    for p in rng.choice(len(cells), 60, replace=False):
        exp = _expected_samples(rig, cells[p])
        used = tables.weight[p] > 0
        assert set(tables.cam[p][used].tolist()) == {n for n, _, _ in exp}
        taps = set(tables.idx[p][used].tolist())
        for n, fx, fy in exp:
            # the nearest feature pixel to the projected point is one of the bilinear taps
            xi = int(np.clip(np.round(fx), 0, w - 1))
            yi = int(np.clip(np.round(fy), 0, h - 1))
            assert n * h * w + yi * w + xi in taps


def test_apply_samples_bilinearly_at_projected_points(rig, tables):
    """Features that are the feature-map coordinates themselves come back as the mean projected
    coordinate over the cameras and heights that see the cell (bilinear is exact on linear maps)."""
    h, w = FEAT_HW
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    feats = np.zeros((6, 3, h, w), np.float32)
    feats[:, 0], feats[:, 1] = xx, yy
    feats[:, 2] = np.arange(6)[:, None, None]
    bev = apply_numpy(tables, feats).reshape(3, -1)
    cells = GRID.cell_centres().reshape(-1, 2)
    rng = np.random.default_rng(1)
    checked = 0
    for p in rng.choice(len(cells), 80, replace=False):
        exp = _expected_samples(rig, cells[p])
        if not exp:
            assert (bev[:, p] == 0).all()
            continue
        e = np.array(exp)
        np.testing.assert_allclose(bev[0, p], np.clip(e[:, 1], 0, w - 1).mean(), atol=1e-4)
        np.testing.assert_allclose(bev[1, p], np.clip(e[:, 2], 0, h - 1).mean(), atol=1e-4)
        np.testing.assert_allclose(bev[2, p], e[:, 0].mean(), atol=1e-4)
        checked += 1
    assert checked > 60


def test_camera_mask_renormalises(tables):
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(6, 4) + FEAT_HW).astype(np.float32)
    full = apply_numpy(tables, feats).reshape(4, -1)
    drop = 3
    mask = np.ones(6, np.float32)
    mask[drop] = 0
    part = apply_numpy(tables, feats, mask).reshape(4, -1)
    cams = [set(tables.cam[p][tables.weight[p] > 0].tolist()) for p in range(len(tables.idx))]
    only_other = [p for p, c in enumerate(cams) if c and drop not in c]
    only_drop = [p for p, c in enumerate(cams) if c == {drop}]
    both = [p for p, c in enumerate(cams) if drop in c and len(c) > 1]
    assert only_other and only_drop and both
    np.testing.assert_allclose(part[:, only_other], full[:, only_other], atol=1e-5)
    assert (part[:, only_drop] == 0).all()
    # a shared cell takes the kept cameras' features alone: the same as zeroing the dropped camera's
    # features and dividing by the weight that survived
    p = both[0]
    keep = (tables.cam[p] != drop) & (tables.weight[p] > 0)
    flat = feats.transpose(1, 0, 2, 3).reshape(4, -1)
    exp = (flat[:, tables.idx[p][keep]] * tables.weight[p][keep]).sum(-1) / tables.weight[p][keep].sum()
    np.testing.assert_allclose(part[:, p], exp, rtol=1e-5, atol=1e-5)


def test_cameras_of_different_sizes_are_refused():
    from edgert.bev.rig import Camera, Rig
    rig = Rig((Camera("a", 64, 32, 70, 0, 0, 0, 1.5), Camera("b", 32, 32, 70, 90, 0, 0, 1.5)))
    with pytest.raises(ValueError, match="one image size"):
        view_tables(rig, GRID, (4, 8))
