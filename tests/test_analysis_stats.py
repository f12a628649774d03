"""Intervals, IQM and probability of improvement (analysis.stats): hand-computed cases, scipy and
brute force as second opinions, and a coverage simulation of the report's interval for one mean over
seeds (the report's own statistics are simulated in tests/test_analysis_coverage.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm, t as student_t, trim_mean

from analysis.selection import draw_counts
from analysis.stats import (expanded_percentile_interval, expanded_tail, iqm, iqm_shares, percentile_interval,
                            probability_interval, probability_of_improvement, probability_of_improvement_batched,
                            seed_interval, wilson_interval)


def test_expanded_tail_by_hand():
    # n = 5, 95%: t_{0.975, 4} = 2.7764; × sqrt(5/4) = 3.1041; Φ(−3.1041) = 0.000954
    assert expanded_tail(5, 0.95) == pytest.approx(norm.cdf(-math.sqrt(5 / 4) * 2.776445105), rel=1e-6)
    assert expanded_tail(5, 0.95) == pytest.approx(0.000954, abs=2e-6)
    assert expanded_tail(10, 0.95) == pytest.approx(norm.cdf(-math.sqrt(10 / 9) * student_t.ppf(0.975, 9)))
    # many seeds: the correction vanishes and the interval is the plain percentile one
    assert expanded_tail(100_000, 0.95) == pytest.approx(0.025, abs=1e-4)
    assert expanded_tail(1, 0.95) == 0.0  # one seed: the range of the (identical) replicates
    assert expanded_tail(3, 0.9) > expanded_tail(3, 0.95)
    with pytest.raises(ValueError, match="confidence"):
        expanded_tail(5, 1.0)


def test_expanded_interval_is_wider_than_the_percentile_interval_and_uses_its_tail():
    replicates = np.linspace(0.0, 1.0, 100_001)  # quantile q is q itself
    low, high = expanded_percentile_interval(replicates, 5, 0.95)
    assert low == pytest.approx(expanded_tail(5, 0.95)) and high == pytest.approx(1 - expanded_tail(5, 0.95))
    plain = percentile_interval(replicates, 0.95)
    assert plain[0] == pytest.approx(0.025) and low < plain[0] and high > plain[1]
    # batched along an axis
    batch = np.stack([replicates, 2 * replicates])
    low, high = expanded_percentile_interval(batch, 5, 0.95, axis=1)
    np.testing.assert_allclose(high / low, [high[0] / low[0]] * 2)


def test_intervals_with_infinite_replicates_never_give_nan():
    samples = np.array([-np.inf] * 10 + list(np.linspace(0, 1, 90)))
    low, high = percentile_interval(samples, 0.95)
    assert low == -np.inf and 0.9 < high <= 1.0
    low, high = expanded_percentile_interval(samples, 5, 0.95)
    assert low == -np.inf and high == 1.0


def test_seed_interval_by_hand():
    # replicates ±1 around 0 (SD 1.0005): the t-type half-width √(5/4)·t_{0.975,4}·SD = 3.105 exceeds the
    # replicates' range, so the interval is the t-type one
    replicates = np.tile([-1.0, 1.0], 2000)
    half = math.sqrt(5 / 4) * student_t.ppf(0.975, 4) * np.std(replicates, ddof=1)
    low, high = seed_interval(0.0, replicates, 5)
    assert (low, high) == pytest.approx((-half, half))
    # skewed replicates: the percentile end reaches further than the t-type one and is kept
    skewed = np.concatenate([np.zeros(3990), np.full(10, 100.0)])
    low, high = seed_interval(0.25, skewed, 5)
    assert high == 100.0 and low == pytest.approx(0.25 - math.sqrt(5 / 4) * student_t.ppf(0.975, 4) * np.std(skewed, ddof=1))
    # an infinite replicate (a missed target): the expanded percentile interval alone
    with_inf = np.concatenate([np.full(10, -np.inf), np.linspace(0, 1, 3990)])
    assert seed_interval(0.5, with_inf, 5) == expanded_percentile_interval(with_inf, 5)
    # batched: one interval per column
    low, high = seed_interval(np.zeros(2), np.stack([replicates, 2 * replicates], axis=1), 5)
    np.testing.assert_allclose(high, [half, 2 * half])


def _coverage(draw, truth: float, n: int, interval, datasets: int, rng: np.random.Generator, n_boot: int = 4000) -> float:
    """Share of `datasets` synthetic data sets of n seeds whose interval of the mean covers `truth`;
    interval(point (D,), replicates (D, B)) -> (low, high). The replicates are the report's seed draws
    (`selection.draw_counts`), vectorised in chunks of 100 data sets."""
    covered = 0
    for start in range(0, datasets, 100):
        data = draw(rng, (min(100, datasets - start), n))
        counts = draw_counts(np.ones((1, n), dtype=bool), len(data) * n_boot, rng).reshape(len(data), n_boot, n)
        means = (counts * data[:, None, :]).sum(axis=2) / n                          # (D, B)
        low, high = interval(data.mean(axis=1), means)
        covered += int(((low <= truth) & (truth <= high)).sum())
    return covered / datasets


def test_seed_interval_covers_the_mean_at_five_seeds():
    """The interval the report builds on, for one mean over seeds (docs/design.md §11a: ≥ 0.9 at nominal 0.95).

    2000 synthetic data sets per case, 4000 replicates each (the binomial SE of a coverage near 0.93 is
    0.006). Measured here: normal, n = 5: seed_interval 0.96 (expanded percentile alone 0.93, plain
    percentile 0.86); gamma(shape 4, skewness 1), n = 5: seed_interval 0.93; normal, n = 3: plain
    percentile 0.76 — the under-coverage the expansion fixes at 5 seeds.
    """
    rng = np.random.default_rng(20261130)
    report = lambda p, m: seed_interval(p, m, 5, 0.95, axis=1)  # noqa: E731
    expanded = lambda p, m: expanded_percentile_interval(m, 5, 0.95, axis=1)  # noqa: E731
    plain = lambda p, m: percentile_interval(m, 0.95, axis=1)  # noqa: E731
    normal = lambda r, shape: r.normal(0.0, 1.0, shape)  # noqa: E731
    skewed = lambda r, shape: r.gamma(4.0, 1.0, shape)  # noqa: E731 — mean 4, skewness 1
    coverage = {
        "normal": _coverage(normal, 0.0, 5, report, 2000, rng),
        "skewed": _coverage(skewed, 4.0, 5, report, 2000, rng),
        "normal, expanded percentile only": _coverage(normal, 0.0, 5, expanded, 1000, rng),
        "normal, plain percentile": _coverage(normal, 0.0, 5, plain, 1000, rng),
        "normal, n = 3, plain percentile": _coverage(normal, 0.0, 3, plain, 1000, rng),
    }
    print(coverage)
    assert coverage["normal"] >= 0.9 and coverage["skewed"] >= 0.9, coverage
    assert coverage["normal"] > coverage["normal, plain percentile"] + 0.05, coverage
    assert coverage["normal, plain percentile"] < 0.88, coverage        # the plain interval under-covers at 5 seeds
    assert coverage["normal, n = 3, plain percentile"] < 0.8, coverage  # and badly at 3


def test_iqm_hand_computed():
    assert iqm([4.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)            # mean of 2, 3
    assert iqm([10, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(4.5)     # mean of 3, 4, 5, 6: outliers ignored
    # n = 5: the middle 50% of the mass is ¾ of 2, all of 3, ¾ of 4 -> (0.15·2 + 0.2·3 + 0.15·4) / 0.5
    assert iqm([5.0, 1.0, 3.0, 2.0, 10.0]) == pytest.approx((0.15 * 2 + 0.2 * 3 + 0.15 * 5) / 0.5)
    assert iqm([7.0]) == 7.0
    # weights: [0, 10] with weights ¾, ¼ -> the middle half of the mass is all at 0
    assert iqm([0.0, 10.0], weights=[3.0, 1.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="empty"):
        iqm([])


def test_iqm_agrees_with_scipy_when_the_count_is_a_multiple_of_four_and_batches():
    rng = np.random.default_rng(0)
    for n in (4, 8, 12, 36):
        x = rng.standard_normal(n)
        assert iqm(x) == pytest.approx(trim_mean(x, 0.25))
    batch = rng.standard_normal((5, 12))
    np.testing.assert_allclose(iqm(batch, axis=-1), [trim_mean(row, 0.25) for row in batch])


def test_weighted_iqm_equals_the_iqm_of_runs_tiled_to_equal_counts():
    """Brute force: weights 1/(S·n_s) are the same as repeating each setting's runs to a common count."""
    rng = np.random.default_rng(1)
    for sizes in ((3, 5), (2, 3, 4), (1, 6)):
        settings = [rng.standard_normal(n) + i for i, n in enumerate(sizes)]
        weights = np.concatenate([np.full(n, 1 / (len(sizes) * n)) for n in sizes])
        common = 4 * math.lcm(*sizes)  # a multiple of 4: the tiled trimmed mean is exact
        tiled = np.concatenate([np.tile(s, common // len(s)) for s in settings])
        assert iqm(np.concatenate(settings), weights) == pytest.approx(trim_mean(tiled, 0.25))


def test_iqm_shares_name_what_is_trimmed_and_padding_takes_nothing():
    shares = iqm_shares(np.array([0.0, 1.0, 2.0, 3.0, -50.0, -60.0, 4.0, 5.0]))
    assert shares.sum() == pytest.approx(1.0)
    assert shares[4] == 0 and shares[5] == 0 and shares[7] == 0  # the two lowest and the highest are trimmed
    padded = iqm(np.array([[1.0, 2.0, 3.0, 4.0, np.nan]]), np.array([[1, 1, 1, 1, 0]]))
    assert padded[0] == pytest.approx(2.5)


def test_probability_of_improvement_hand_computed():
    # X=[1,3] vs Y=[2,2]: of 4 pairs, 2 have X higher -> 0.5
    assert probability_of_improvement([[1.0, 3.0]], [[2.0, 2.0]]) == pytest.approx(0.5)
    assert probability_of_improvement([[2.0]], [[2.0]]) == pytest.approx(0.5)  # ties count ½
    # two settings, averaged: 0.5 and (1 + 0.5 + 0 + 1)/4 = 0.625
    assert probability_of_improvement([[1.0, 3.0], [4.0]], [[2.0, 2.0], [1.0, 4.0, 9.0, 2.0]]) == pytest.approx(0.5625)
    with pytest.raises(ValueError, match="same, non-zero number of settings"):
        probability_of_improvement([[1.0]], [[1.0], [2.0]])


def test_probability_of_improvement_masks_padded_runs():
    x = np.array([[1.0, 3.0, 99.0]])          # the 99 is padding
    y = np.array([[2.0, 2.0]])
    masked = probability_of_improvement_batched([x], [y], [np.array([[True, True, False]])], [None])
    assert masked[0] == pytest.approx(0.5)
    assert probability_of_improvement_batched([x], [y])[0] == pytest.approx(4 / 6)


def test_draw_counts_draw_n_seeds_with_replacement():
    rng = np.random.default_rng(0)
    counts = draw_counts(np.ones((2, 5), dtype=bool), 20_000, rng)
    assert counts.shape == (20_000, 5) and (counts.sum(axis=1) == 5).all()
    # each seed's count is Binomial(5, 1/5): P(0) = 0.8^5 = 0.328, mean 1
    assert abs((counts[:, 0] == 0).mean() - 0.8 ** 5) < 0.01 and abs(counts.mean() - 1.0) < 0.01
    with pytest.raises(ValueError, match="n_boot"):
        draw_counts(np.ones((1, 2), dtype=bool), 0, rng)


def test_wilson_interval_by_hand():
    # p = 1, n = 5, z = 1.96: centre (1 + z²/10)/(1 + z²/5), half z/(1 + z²/5)·sqrt(z²/100) = (z²/10)/(1 + z²/5)
    z = norm.ppf(0.975)
    low, high = wilson_interval(1.0, 5)
    assert low == pytest.approx(1 / (1 + z * z / 5)) and high == pytest.approx(1.0)
    assert low == pytest.approx(0.5655, abs=1e-4)
    low, high = wilson_interval(0.4, 5)
    half = z / (1 + z * z / 5) * math.sqrt(0.24 / 5 + z * z / 100)
    assert (low, high) == pytest.approx(((0.4 + z * z / 10) / (1 + z * z / 5) - half, (0.4 + z * z / 10) / (1 + z * z / 5) + half))
    assert (low, high) == pytest.approx((0.1176, 0.7693), abs=1e-4)


def test_probability_interval_never_collapses_to_a_point_at_five_seeds():
    # every seed reached τ, so every replicate did: the bootstrap alone says [1, 1]
    low, high = probability_interval(1.0, np.ones(4000), 5)
    assert (low, high) == pytest.approx((0.5655, 1.0), abs=1e-4)
    # a spread of replicates wider than Wilson's is kept, inside [0, 1]
    spread = np.tile([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 500)
    low, high = probability_interval(0.5, spread, 5)
    assert low == 0.0 and high == 1.0
