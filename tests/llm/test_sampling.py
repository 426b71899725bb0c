"""Sampling: greedy, top-k, top-p, seeding, and that `sample` draws from `distribution`."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.errors import InputError
from edgert.llm.sampling import Sampler, SamplingOptions


def _logits(n: int = 50, seed: int = 0) -> np.ndarray:
    return (2.0 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def test_greedy_is_argmax():
    z = _logits()
    s = Sampler(SamplingOptions())
    assert s.sample(z) == int(np.argmax(z))
    p = s.distribution(z)
    assert p.dtype == np.float64 and p[np.argmax(z)] == 1.0 and p.sum() == 1.0


def test_top_k_1_is_greedy_at_any_temperature():
    z = _logits(seed=4)
    s = Sampler(SamplingOptions(temperature=1.5, top_k=1, seed=0))
    assert {s.sample(z) for _ in range(20)} == {int(np.argmax(z))}
    np.testing.assert_array_equal(s.distribution(z), Sampler().distribution(z))


def test_temperature_and_top_k():
    z = _logits()
    p = Sampler(SamplingOptions(temperature=0.7)).distribution(z)
    e = np.exp((z.astype(np.float64) - z.max()) / 0.7)
    np.testing.assert_allclose(p, e / e.sum(), rtol=1e-12)
    pk = Sampler(SamplingOptions(temperature=0.7, top_k=5)).distribution(z)
    top = np.argsort(-z)[:5]
    assert set(np.flatnonzero(pk)) == set(top.tolist())
    np.testing.assert_allclose(pk[top], e[top] / e[top].sum(), rtol=1e-12)


def test_top_p_keeps_smallest_set_reaching_p():
    probs = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
    z = np.log(probs)
    for top_p, kept in [(0.4, {1}), (0.41, {1, 3}), (0.7, {1, 3}), (0.71, {1, 3, 4}), (0.95, {1, 2, 3, 4}),
                        (0.96, {0, 1, 2, 3, 4}), (1.0, {0, 1, 2, 3, 4})]:
        p = Sampler(SamplingOptions(temperature=1.0, top_p=top_p)).distribution(z)
        assert set(np.flatnonzero(p)) == kept, top_p
        np.testing.assert_allclose(p[list(kept)], probs[list(kept)] / probs[list(kept)].sum())
        assert abs(p.sum() - 1.0) < 1e-12


def test_seeded_is_reproducible():
    z = _logits(200)
    o = SamplingOptions(temperature=1.0, top_p=0.9, seed=123)
    a = [Sampler(o).sample(z) for _ in range(3)]
    assert len(set(a)) == 1
    s1, s2 = Sampler(o), Sampler(o)
    assert [s1.sample(z) for _ in range(50)] == [s2.sample(z) for _ in range(50)]


@pytest.mark.parametrize("opts", [dict(temperature=1.0), dict(temperature=0.8, top_k=6),
                                  dict(temperature=1.3, top_p=0.8), dict(temperature=1.0, top_k=8, top_p=0.9)])
def test_frequencies_match_distribution(opts):
    z = _logits(12, seed=2)
    z[3] = -np.inf                                       # masked tokens are never drawn
    s = Sampler(SamplingOptions(seed=7, **opts))
    p = s.distribution(z)
    n = 20000
    counts = np.bincount([s.sample(z) for _ in range(n)], minlength=p.size)
    assert counts[p == 0].sum() == 0
    nz = p > 0
    chi2 = float((((counts[nz] - n * p[nz]) ** 2) / (n * p[nz])).sum())
    dof = int(nz.sum()) - 1
    # chi-square with dof degrees of freedom: mean dof, sd sqrt(2 dof); 6 sd is a safe bound
    assert chi2 < dof + 6 * np.sqrt(2 * max(dof, 1)), (chi2, dof)


@pytest.mark.parametrize("kw", [dict(temperature=-0.1), dict(temperature=float("nan")), dict(top_k=-1),
                                dict(top_k=1.5), dict(top_p=0.0), dict(top_p=1.2), dict(seed=-3),
                                dict(seed="x")])
def test_bad_options(kw):
    with pytest.raises(InputError):
        SamplingOptions(**kw)


def test_bad_logits():
    s = Sampler(SamplingOptions(temperature=1.0))
    for z in ([np.nan, 1.0], [np.inf, 0.0], [-np.inf, -np.inf], []):
        with pytest.raises(InputError):
            s.distribution(np.array(z))
