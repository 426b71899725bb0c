import numpy as np
import pytest

from converters.observers import (StreamingHistogram, get_observer, known_observers,
                                  make_observer, qparams_from_range)
from converters.observers.base import ObserverConfig
from edgert.errors import ConversionError


def test_registry_lists_known_and_rejects_unknown():
    assert {"minmax", "percentile", "mse"} <= set(known_observers())
    with pytest.raises(ConversionError, match="minmax"):
        get_observer("nope")


def test_minmax_exact_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(i, 1 + i, (4, 7)).astype(np.float32) for i in range(5)]
    obs = make_observer("minmax")
    for b in batches:
        obs.update(b)
    allv = np.concatenate([b.ravel() for b in batches])
    assert obs.range() == (min(float(allv.min()), 0.0), float(allv.max()))


def test_ranges_always_contain_zero():
    for name in known_observers():
        obs = make_observer(name)
        obs.update(np.linspace(2.0, 5.0, 1000, dtype=np.float32))
        lo, hi = obs.range()
        assert lo <= 0.0 <= hi


def test_streaming_histogram_merges_exactly():
    rng = np.random.default_rng(1)
    h = StreamingHistogram(256)
    data = [rng.normal(0, s, 5000) for s in (0.1, 1.0, 30.0)]   # range grows twice
    for d in data:
        h.update(d)
    assert h.total == sum(d.size for d in data)
    assert h.counts.size <= 256
    allv = np.concatenate(data)
    edges = h.edges()
    assert edges[0] <= allv.min() and edges[-1] >= allv.max()
    np.testing.assert_array_equal(np.histogram(allv, edges)[0], h.counts)


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_close_to_numpy(p):
    rng = np.random.default_rng(2)
    obs = make_observer("percentile", ObserverConfig(percentile=p))
    chunks = [rng.standard_t(3, 20000).astype(np.float32) for _ in range(5)]
    for c in chunks:
        obs.update(c)
    allv = np.concatenate(chunks)
    lo, hi = obs.range()
    span = allv.max() - allv.min()
    tol = 2e-3 * float(span)
    assert hi == pytest.approx(float(np.percentile(allv, p)), abs=tol)
    assert lo == pytest.approx(float(np.percentile(allv, 100 - p)), abs=tol)


def _qdq_mse(x, lo, hi, qmin=-8, qmax=7):
    s, z = qparams_from_range(lo, hi, qmin, qmax)
    q = np.clip(np.rint(x / s) + int(z), qmin, qmax)
    return float(np.mean((x - (q - int(z)) * s) ** 2))


def test_mse_clips_heavy_tails_and_lowers_error():
    rng = np.random.default_rng(3)
    x = rng.laplace(0, 1, 200000).astype(np.float32)  # heavy tails, 4-bit grid
    mm, ms = make_observer("minmax"), make_observer("mse")
    for c in np.split(x, 4):
        mm.update(c)
        ms.update(c)
    (alo, ahi), (blo, bhi) = mm.range(-8, 7), ms.range(-8, 7)
    assert bhi - blo < 0.5 * (ahi - alo)
    assert _qdq_mse(x, blo, bhi) < _qdq_mse(x, alo, ahi)


def test_mse_keeps_range_on_uniform_data():
    x = np.random.default_rng(4).uniform(-1, 1, 100000).astype(np.float32)
    obs = make_observer("mse")
    obs.update(x)
    lo, hi = obs.range()
    assert lo < -0.9 and hi > 0.9


def test_qparams_hold_zero_exactly_and_narrow_bits():
    s, z = qparams_from_range(-1.0, 3.0)
    assert s.dtype == np.float32 and z.dtype == np.int8
    assert -128 <= int(z) <= 127
    assert float(s) * (-128 - int(z)) == pytest.approx(-1.0, abs=float(s))
    assert float(s) * (127 - int(z)) == pytest.approx(3.0, abs=float(s))
    s4, z4 = qparams_from_range(0.0, 3.0, -8, 7)
    assert int(z4) == -8 and float(s4) == pytest.approx(3.0 / 15)
    s0, _ = qparams_from_range(0.0, 0.0)
    assert float(s0) > 0
