from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the BEV model's training code needs the `train` extra (JAX)")

from edgert.errors import ConversionError  # noqa: E402
from zoo.bev import model as M  # noqa: E402
from zoo.bev.qat import QatOptions, Quantizer, qat, snap_weights  # noqa: E402


def test_weight_fake_quant_is_per_channel_w4_and_matches_snap():
    rng = np.random.default_rng(0)
    gains = np.array([1, 10, 0.1, 3, 0.5], np.float32)[:, None, None, None]
    w = rng.normal(size=(5, 3, 3, 3)).astype(np.float32) * gains
    q = np.asarray(Quantizer({}, 4, 6).weight(w))
    for o in range(5):
        assert len(np.unique(q[o])) <= 15                     # symmetric 4-bit: -7..7
        np.testing.assert_allclose(np.abs(q[o]).max(), np.abs(w[o]).max(), rtol=1e-6)
        step = np.abs(w[o]).max() / 7
        np.testing.assert_allclose(q[o] / step, np.round(q[o] / step), atol=1e-4)
    snapped = snap_weights({"s": [{"w": w, "b": np.zeros(5, np.float32)}]}, 4)["s"][0]["w"]
    np.testing.assert_allclose(snapped, q, rtol=1e-6, atol=1e-7)
    again = snap_weights({"s": [{"w": snapped, "b": np.zeros(5, np.float32)}]}, 4)["s"][0]["w"]
    np.testing.assert_allclose(again, snapped, rtol=1e-6, atol=1e-7)  # already on the grid


def test_act_fake_quant_levels_and_straight_through_gradient():
    fq = Quantizer({"u": (0.0, 6.3), "s": (-2.0, 1.0)}, 4, 6)
    x = np.linspace(-3, 8, 1001).astype(np.float32)
    u = np.asarray(fq.act("u", x))
    assert len(np.unique(u)) <= 64 and u.min() == 0 and np.isclose(u.max(), 6.3)
    s = np.asarray(fq.act("s", x))
    assert len(np.unique(s)) <= 63 and np.isclose(s.min(), -2.0)      # signed 6-bit: -31..31, scale 2/31
    g = np.asarray(jax.grad(lambda v: fq.act("u", v).sum())(x))
    np.testing.assert_array_equal(g, ((x >= 0) & (x <= 6.3)).astype(np.float32))
    with pytest.raises(ConversionError):
        Quantizer({}, 1, 6)


@pytest.mark.slow
def test_qat_steps_on_fake_data():
    from test_bev_train import FakeSource
    net = M.build(M.SMALL, FakeSource().rig)
    fp32 = {"small": M.init_params(net, 0)}
    o = QatOptions(steps=3, batch=1, pool_samples=4, calib_batches=2, eval_samples=0)
    out, rep = qat(fp32, o, sources=[FakeSource()])
    assert rep.steps == 3 and set(out) == {"small"}
    names = set(rep.ranges["small"])
    assert {"backbone/0", "fuse/0", "seg/1", "heat/0", "box/0"} <= names
    lo, hi = rep.ranges["small"]["backbone/0"]
    assert lo < 0 < hi                                          # normalised images are signed
    assert rep.ranges["small"]["fuse/1"][0] >= 0                # after a ReLU: unsigned
    w = out["small"]["backbone"][1]["w"]
    for o_ in range(w.shape[0]):
        assert len(np.unique(w[o_])) <= 15
    assert all(np.isfinite(v) for v in rep.losses["small"])
