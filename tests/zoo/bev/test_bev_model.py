from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the BEV model's training code needs the `train` extra (JAX)")

from edgert.bev.rig import BevGrid, nuscenes_like_rig  # noqa: E402
from edgert.bev.schema import CLASSES, OBJECT_CLASSES  # noqa: E402
from zoo.bev import model as M  # noqa: E402
from zoo.bev.decode import BOX_REG, warp_bev, warp_tables  # noqa: E402


@pytest.fixture(scope="module")
def rig():
    return nuscenes_like_rig()


@pytest.mark.parametrize("name", ["full", "small"])
def test_forward_shapes(rig, name):
    net = M.build(M.variant(name), rig)
    params = M.to_jax(M.init_params(net, 0))
    b, s = 2, net.cfg.model_grid.size
    rng = np.random.default_rng(0)
    images = rng.normal(size=(b, 6, 3, 96, 160)).astype(np.float32)
    fwd = jax.jit(lambda p, i, m, pb: M.forward(p, net, i, m, pb))
    out = fwd(params, images, np.ones((b, 6), np.float32), np.zeros((b, net.cfg.bev_ch, s, s), np.float32))
    h, w = net.feat_hw
    assert (h, w) == ((12, 20) if name == "full" else (6, 10))
    assert out["feat"].shape == (b, 6, net.cfg.feat_ch, h, w)
    assert out["bev"].shape == (b, net.cfg.bev_ch, s, s)
    assert out["seg"].shape == (b, len(CLASSES), rig.grid.size, rig.grid.size)
    assert out["heatmap"].shape == (b, len(OBJECT_CLASSES), s, s)
    assert out["boxreg"].shape == (b, len(BOX_REG), s, s)
    heat = np.asarray(out["heatmap"])
    assert heat.min() >= 0 and heat.max() <= 1
    # the two samples of the batch do not mix
    one = fwd(params, images[1:], np.ones((1, 6), np.float32), np.zeros((1, net.cfg.bev_ch, s, s), np.float32))
    np.testing.assert_allclose(np.asarray(one["seg"])[0], np.asarray(out["seg"])[1], rtol=1e-4, atol=1e-4)


def test_unknown_variant_lists_known():
    with pytest.raises(ValueError, match="full, small"):
        M.variant("huge")


def test_upsample2x_is_half_pixel_bilinear():
    x = np.random.default_rng(0).normal(size=(1, 2, 5, 7)).astype(np.float32)
    y = np.asarray(M.upsample2x(x))
    # reference: sample at (i + 0.5) / 2 - 0.5 with coordinates clamped into the input
    def ref_axis(a, axis):
        n = a.shape[axis]
        src = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        f = (src - i0).reshape([-1 if k == axis else 1 for k in range(a.ndim)])
        return np.take(a, i0, axis) * (1 - f) + np.take(a, i1, axis) * f
    np.testing.assert_allclose(y, ref_axis(ref_axis(x, 2), 3), rtol=1e-6, atol=1e-6)


def test_warp_identity_shift_and_jax_agree():
    g = BevGrid(20, 1.0)
    rng = np.random.default_rng(0)
    bev = rng.normal(size=(1, 3, 20, 20)).astype(np.float32)
    np.testing.assert_allclose(warp_bev(bev, g, (0.0, 0.0, 0.0)), bev, atol=1e-6)
    # the ego drove 2 m forward: what was 2 cells ahead (2 rows up) is now at the same cell
    moved = warp_bev(bev, g, (2.0, 0.0, 0.0))
    np.testing.assert_allclose(moved[:, :, 2:], bev[:, :, :-2], atol=1e-6)
    assert (moved[:, :, :2] == 0).all()                       # new area ahead: zero padded
    # 1 m to the left: columns shift right by one
    left = warp_bev(bev, g, (0.0, 1.0, 0.0))
    np.testing.assert_allclose(left[:, :, :, 1:], bev[:, :, :, :-1], atol=1e-6)
    # a turn by 90 degrees: the previous map's left becomes the new map's front
    rot = warp_bev(bev, g, (0.0, 0.0, np.pi / 2))
    np.testing.assert_allclose(rot[0, 0], np.rot90(bev[0, 0], k=-1), atol=1e-5)
    assert np.all(warp_bev(bev, g, None) == 0)
    motion = (0.7, -0.3, 0.05)
    idx, w = warp_tables(g, motion)
    jw = np.asarray(M.warp(bev, idx[None], w[None]))
    np.testing.assert_allclose(jw, warp_bev(bev, g, motion), rtol=1e-5, atol=1e-5)


def test_warp_follows_poses():
    """A world-fixed landmark lands where the new pose sees it."""
    from edgert.bev.schema import Pose
    g = BevGrid(50, 1.0)
    p0, p1 = Pose(10.0, 5.0, 0.3), Pose(11.2, 5.6, 0.38)
    landmark = p0.to_world(np.array([[8.0, -3.0]]))           # 8 m ahead, 3 m right of the old ego
    bev = np.zeros((1, 1, 50, 50), np.float32)
    r, c = np.floor(g.to_cell(np.array([[8.0, -3.0]]))[0]).astype(int)
    bev[0, 0, r, c] = 1.0
    moved = warp_bev(bev, g, p1.relative_to(p0))
    peak = np.unravel_index(np.argmax(moved[0, 0]), (50, 50))
    exp = g.to_cell(p1.to_ego(landmark))[0]
    assert abs(peak[0] + 0.5 - exp[0]) <= 1.0 and abs(peak[1] + 0.5 - exp[1]) <= 1.0
    np.testing.assert_allclose(moved.sum(), 1.0, atol=1e-3)  # a rigid move keeps the mass


def test_params_save_load_round_trip(rig, tmp_path):
    params = {v: M.init_params(M.build(M.variant(v), rig), 3) for v in ("full", "small")}
    M.save_params(tmp_path / "p.npz", params)
    back = M.load_params(tmp_path / "p.npz")
    for v in params:
        for stage, layers in params[v].items():
            for a, b in zip(layers, back[v][stage], strict=True):
                np.testing.assert_array_equal(a["w"], b["w"])
                np.testing.assert_array_equal(a["b"], b["b"])
