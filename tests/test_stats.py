"""Bootstrap intervals: right point estimates, honest coverage, paired beats unpaired."""

import numpy as np
import pytest

from raysweep.evaluate import stats


def test_point_estimates_match_numpy():
    x = np.random.default_rng(1).gamma(2.0, 2.0, 300)
    s = stats.summarize(x, n_boot=200, seed=0)
    assert s["n"] == 300
    assert s["mean"] == pytest.approx(x.mean())
    assert s["median"] == pytest.approx(np.median(x))
    assert s["p95"] == pytest.approx(np.percentile(x, 95))
    for k in ("mean", "median", "p95"):
        assert s[f"{k}_lo"] < s[k] < s[f"{k}_hi"]


def test_seeded_and_deterministic():
    x = np.random.default_rng(2).normal(size=100)
    assert stats.bootstrap_ci(x, seed=5) == stats.bootstrap_ci(x, seed=5)
    assert stats.bootstrap_ci(x, seed=5) != stats.bootstrap_ci(x, seed=6)


def test_interval_width_matches_standard_error():
    # for the mean, the percentile interval is about +/- 1.96 sd / sqrt(n)
    x = np.random.default_rng(3).normal(0, 2.0, 400)
    _, lo, hi = stats.bootstrap_ci(x, "mean", n_boot=4000, seed=0)
    expected = 2 * 1.96 * x.std() / np.sqrt(x.size)
    assert (hi - lo) == pytest.approx(expected, rel=0.1)


def test_coverage_close_to_nominal():
    rng = np.random.default_rng(4)
    hits = 0
    trials = 200
    for i in range(trials):
        x = rng.exponential(1.0, 60)  # skewed like dE00; true mean 1
        _, lo, hi = stats.bootstrap_ci(x, "mean", n_boot=500, seed=i)
        hits += lo <= 1.0 <= hi
    assert 0.86 <= hits / trials <= 0.99


def test_chunking_gives_same_answer(monkeypatch):
    x = np.random.default_rng(5).normal(size=50)
    full = stats.bootstrap_ci(x, "median", n_boot=300, seed=1)
    monkeypatch.setattr(stats, "_CHUNK_ELEMS", 50 * 7)  # 7 replicates per chunk
    assert stats.bootstrap_ci(x, "median", n_boot=300, seed=1) == full


def test_paired_detects_small_shift_that_unpaired_misses():
    rng = np.random.default_rng(6)
    hard = rng.exponential(5.0, 200)  # photo difficulty dominates the spread
    a = hard + 0.3 + rng.normal(0, 0.1, 200)
    b = hard
    d = stats.paired_bootstrap(a, b, "mean", n_boot=2000, seed=0)
    assert d["diff"] == pytest.approx(a.mean() - b.mean())
    assert 0 < d["lo"] < d["diff"] < d["hi"]
    assert d["p_value"] < 0.01
    # resampled independently, the same shift is buried in the photo-to-photo spread
    _, alo, ahi = stats.bootstrap_ci(a, seed=1)
    _, blo, bhi = stats.bootstrap_ci(b, seed=2)
    assert alo < bhi  # intervals overlap


def test_paired_no_difference():
    x = np.random.default_rng(7).exponential(2.0, 100)
    d = stats.paired_bootstrap(x, x.copy(), "median")
    assert d["diff"] == 0 and d["lo"] == 0 and d["hi"] == 0 and d["p_value"] == 1.0


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        stats.bootstrap_ci([1.0, np.nan])
    with pytest.raises(ValueError, match="aligned"):
        stats.paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(Exception, match="p95"):
        stats.bootstrap_ci([1.0, 2.0], stat="p99")
