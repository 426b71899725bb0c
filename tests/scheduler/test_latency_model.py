import numpy as np
import pytest

from edgert.errors import InputError
from scheduler.latency import LatencyModel, LatencyOptions


def test_learns_intercept_and_per_camera_cost_from_noisy_samples():
    rng = np.random.default_rng(0)
    model = LatencyModel(LatencyOptions(forgetting=0.99))
    for _ in range(300):
        k = int(rng.integers(1, 7))
        model.observe("backbone", "full", k, 5.0 + 12.0 * k + rng.normal(0, 1.0))
    a, b = model.coefficients("backbone", "full")
    assert a == pytest.approx(5.0, abs=1.0)
    assert b == pytest.approx(12.0, abs=0.4)
    assert model.predict_ms("backbone", "full", 3) == pytest.approx(41.0, abs=1.0)


def test_conservative_estimate_covers_about_the_quantile():
    rng = np.random.default_rng(1)
    model = LatencyModel(LatencyOptions(quantile=0.9, window=200, forgetting=1.0))
    for _ in range(400):
        model.observe("fuse", "full", 6, 20.0 * rng.lognormal(0, 0.2))
    mean, p90 = model.predict_ms("fuse", "full", 6), model.predict_ms("fuse", "full", 6, conservative=True)
    assert p90 > mean * 1.15
    fresh = 20.0 * rng.lognormal(0, 0.2, 2000)
    assert 0.04 < np.mean(fresh > p90) < 0.18


def test_forgetting_follows_a_slowdown():
    model = LatencyModel(LatencyOptions(forgetting=0.9))
    for _ in range(50):
        model.observe("heads", "full", 6, 10.0)
    for _ in range(60):
        model.observe("heads", "full", 6, 20.0)
    assert model.predict_ms("heads", "full", 6) == pytest.approx(20.0, rel=0.02)


def test_single_camera_count_splits_by_prior_and_unknown_keys_fall_back():
    model = LatencyModel(LatencyOptions(prior_intercept_share=0.25))
    assert model.predict_ms("backbone", "full", 6) is None
    for _ in range(5):
        model.observe("backbone", "full", 6, 60.0)
    assert model.predict_ms("backbone", "full", 6) == pytest.approx(60.0)
    assert model.predict_ms("backbone", "full", 3) == pytest.approx(15.0 + 45.0 / 2)
    assert not model.known("backbone", "small")
    assert model.predict_ms("backbone", "small", 6) == pytest.approx(60.0)    # another variant's fit
    assert model.predict_ms("fuse", "small", 6) is None


def test_rejects_nonsense():
    with pytest.raises(InputError, match="finite"):
        LatencyModel().observe("fuse", "full", 6, float("nan"))
    with pytest.raises(InputError, match="forgetting"):
        LatencyOptions(forgetting=1.5)


def test_first_measurement_is_warmup_and_replaced():
    # a session's first run pays one-off costs; the next measurement replaces it
    m = LatencyModel(LatencyOptions(warmup=1))
    m.observe("fuse", "full", 6, 100.0)
    assert m.predict_ms("fuse", "full", 6) == pytest.approx(100.0)
    m.observe("fuse", "full", 6, 40.0)
    assert m.predict_ms("fuse", "full", 6) == pytest.approx(40.0)
    assert m.predict_ms("fuse", "full", 6, conservative=True) == pytest.approx(40.0)
    m.observe("fuse", "full", 6, 40.0)
    assert m.samples("fuse", "full") == 3
    assert m.since("fuse", "full") == 0
    m.observe("heads", "full", 6, 5.0)
    assert m.since("fuse", "full") == 1 and m.since("fuse", "small") is None


def test_flat_fuse_cost_is_learnt_from_two_camera_counts():
    m = LatencyModel(LatencyOptions(warmup=0))
    for k in (6, 1, 6, 1, 3):
        m.observe("fuse", "full", k, 17.0)
    a, b = m.coefficients("fuse", "full")
    assert b == pytest.approx(0.0, abs=1e-6) and a == pytest.approx(17.0)
