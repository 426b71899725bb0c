from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax", reason="the BEV model's training code needs the `train` extra (JAX)")

from edgert.bev.rig import nuscenes_like_rig  # noqa: E402
from edgert.bev.schema import CLASSES, Pose, RigSample  # noqa: E402
from edgert.errors import ConversionError  # noqa: E402
from zoo.bev import model as M  # noqa: E402
from zoo.bev import train as T  # noqa: E402


class FakeSource:
    """Random frames with a ground truth of the right shapes: a road band, one car, poses moving 1 m
    forward per sample (a stand-in for the synthetic world where only shapes matter)."""

    def __init__(self, seed: int = 0, n: int = 64):
        self.rig = nuscenes_like_rig()
        self.rate_hz = 12.0
        self.seed, self.n = seed, n

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int) -> RigSample:
        rng = np.random.default_rng((self.seed, i))
        frames = [rng.integers(0, 256, (96, 160, 3), dtype=np.uint8) for _ in range(6)]
        grid = np.zeros((100, 100), np.uint8)
        grid[:, 40:60] = CLASSES.index("road")
        grid[30:39, 45:49] = CLASSES.index("car")
        boxes = np.array([[CLASSES.index("car"), 8.5, 1.5, 0.8, 4.5, 1.9, 1.6, 0.0, 5.0, 0.0]], np.float32)
        return RigSample(index=i, t_us=int(i * 1e6 / 12), frames=frames, frame_t_us=[0] * 6,
                         pose=Pose(float(i), 0.0, 0.0), gt_grid=grid, gt_boxes=boxes)


def test_options_are_validated():
    with pytest.raises(ConversionError):
        T.TrainOptions(clip_len=3).validate()
    with pytest.raises(ValueError, match="known"):
        T.TrainOptions(variants=("tiny",)).validate()
    assert T.TrainOptions(minutes=2).pool_size() % 12 == 0


def test_slots_walk_clips_and_reset_at_their_start():
    pool = T.render_pool([FakeSource()], 8, 4, seed=0)
    assert pool.frames.shape == (8, 6, 96, 160, 3) and pool.n_clips == 2
    slots = T.Slots(pool, 3, np.random.default_rng(0))
    o = T.TrainOptions(reset_p=0.0, drop_cam_p=0.0, clip_len=4)
    grid = M.SMALL.model_grid
    seen = []
    for _ in range(4):
        b = slots.batch(o, grid)
        assert b["a"]["frames"].shape == (3, 6, 96, 160, 3)
        # the carried state is kept exactly when the slot is past its clip's first sample
        np.testing.assert_array_equal(b["keep_state"], (slots.pos > 0).astype(np.float32))
        seen.append(slots.pos.copy())
        slots.advance()
    assert all(set(p.tolist()) <= {0, 2} for p in seen)
    # pose moves +1 m in x per sample: a -> b is 1 m forward, so the warp reads one cell (1 m) ahead
    b = slots.batch(o, grid)
    idx, w = b["warp_idx"][0], b["warp_w"][0]
    p = 10 * 50 + 20                                      # cell (10, 20) reads (9, 20) of the old map
    assert idx[p, np.argmax(w[p])] == 9 * 50 + 20


def test_steps_reduce_the_loss_on_a_fixed_batch():
    import jax.numpy as jnp
    src = FakeSource()
    pool = T.render_pool([src], 4, 4, seed=0)
    o = T.TrainOptions(variants=("small",), batch=2, lr=3e-3, clip_len=4, drop_cam_p=0.0)
    net = M.build(M.SMALL, src.rig)
    grid = net.tables.grid
    slots = T.Slots(pool, 2, np.random.default_rng(0))
    batch = slots.batch(o, grid)
    cw = T.class_weights(pool.grids)
    init, step = T.make_step({"small": net}, cw, o)
    params = {"small": M.to_jax(M.init_params(net, 0))}
    opt_state = init(params)
    states = {"small": jnp.zeros((2, net.cfg.bev_ch, 50, 50))}
    losses = []
    for _ in range(6):
        params, opt_state, parts, new_states = step(params, opt_state, batch, states, 3e-3)
        losses.append(float(parts["small"][0]))
        assert new_states["small"].shape == states["small"].shape
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
def test_train_end_to_end_on_the_world():
    """A couple of steps on the synthetic world, then the held-out evaluation as the runtime runs."""
    world = pytest.importorskip("edgert.bev.world")
    o = T.TrainOptions(variants=("small",), steps=2, batch=1, pool_samples=4, clip_len=2, eval_samples=3)
    params, rep = T.train(o, sources=[world.World(None, world.WorldOptions(seed=1))],
                          eval_source=world.World(None, world.WorldOptions(seed=2)))
    assert rep.steps == 2 and rep.pool_samples == 4 and rep.step_ms > 0
    assert set(params) == {"small"} and params["small"]["backbone"][0]["w"].dtype == np.float32
    ev = rep.heldout["small"]
    assert ev.samples == 3 and 0.0 <= ev.miou <= 1.0 and 0.0 <= ev.det_recall <= 1.0
    assert set(ev.iou) == set(CLASSES)
    assert rep.to_json()["heldout"]["small"]["samples"] == 3
