"""IQM, probability of improvement and the bootstrap (analysis.stats, analysis.aggregate): hand-computed
cases, scipy's trimmed mean as a second opinion, and interval coverage on synthetic data."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, trim_mean

from analysis.aggregate import improvement_table, iqm_table, normalize_scores
from analysis.stats import (bootstrap_indices, iqm, percentile_interval, probability_of_improvement,
                            probability_of_improvement_bootstrap, stratified_bootstrap)


def test_iqm_hand_computed():
    assert iqm([4.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)            # mean of 2, 3
    assert iqm([5.0, 1.0, 3.0, 2.0, 4.0]) == pytest.approx(3.0)       # int(1.25) = 1 cut per end: mean of 2, 3, 4
    assert iqm([10, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(4.5)     # mean of 3, 4, 5, 6: outliers ignored
    assert iqm([7.0]) == 7.0


def test_iqm_agrees_with_scipy_trim_mean_and_batches():
    rng = np.random.default_rng(0)
    for n in (3, 4, 7, 10, 33):
        x = rng.standard_normal(n)
        assert iqm(x) == pytest.approx(trim_mean(x, 0.25))
    batch = rng.standard_normal((5, 12))
    np.testing.assert_allclose(iqm(batch, axis=-1), [trim_mean(row, 0.25) for row in batch])


def test_probability_of_improvement_hand_computed():
    # X=[1,3] vs Y=[2,2]: of 4 pairs, 2 have X higher -> 0.5
    assert probability_of_improvement([[1.0, 3.0]], [[2.0, 2.0]]) == pytest.approx(0.5)
    # ties count 1/2
    assert probability_of_improvement([[2.0]], [[2.0]]) == pytest.approx(0.5)
    # two settings, averaged: 0.5 and (1 + 0.5 + 0 + 1)/4 = 0.625
    assert probability_of_improvement([[1.0, 3.0], [4.0]], [[2.0, 2.0], [1.0, 4.0, 9.0, 2.0]]) == pytest.approx(0.5625)
    assert probability_of_improvement([[5.0, 6.0]], [[1.0]]) == 1.0
    with pytest.raises(ValueError, match="same, non-zero number of settings"):
        probability_of_improvement([[1.0]], [[1.0], [2.0]])


def test_bootstrap_indices_stay_within_their_group():
    rng = np.random.default_rng(0)
    indices = bootstrap_indices([1, 3, 5], 50, rng)
    assert [i.shape for i in indices] == [(50, 1), (50, 3), (50, 5)]
    assert all(i.min() >= 0 and i.max() < size for i, size in zip(indices, [1, 3, 5]))
    assert (indices[0] == 0).all()


def test_stratified_bootstrap_keeps_strata_apart():
    # each stratum is constant, so every replicate pools exactly [0, 0, 10] (sizes kept): mean is always 10/3
    replicates = stratified_bootstrap([np.zeros(2), np.full(1, 10.0)], lambda s: s.mean(axis=-1), 100,
                                      np.random.default_rng(0))
    np.testing.assert_allclose(replicates, 10 / 3)


def test_percentile_interval_with_infinite_replicates_never_gives_nan():
    samples = np.array([-np.inf] * 10 + list(np.linspace(0, 1, 90)))
    low, high = percentile_interval(samples, 0.95)
    assert low == -np.inf and 0.9 < high <= 1.0
    with pytest.raises(ValueError, match="confidence"):
        percentile_interval(samples, 1.5)


def test_bootstrap_intervals_cover_the_truth_at_about_the_nominal_rate():
    """200 synthetic experiments, 95% intervals: coverage must fall in [0.89, 0.99].

    The binomial standard error of a 95% coverage over 200 repetitions is 0.015, and percentile
    intervals run slightly below nominal at these sample sizes, so the band is about ±3 SE around 0.94.
    Truths: three settings N(−1,1), N(0,1), N(1,1) with 20 runs each: mean 0, and IQM 0 (the mixture
    is symmetric about 0); P(X > Y) for X ~ N(0.5, 1), Y ~ N(0, 1) is Φ(0.5/√2).
    """
    rng = np.random.default_rng(2026)
    covered = {"mean": 0, "iqm": 0, "poi": 0}
    truth_poi = norm.cdf(0.5 / math.sqrt(2))
    repetitions = 200
    for _ in range(repetitions):
        strata = [rng.normal(mu, 1.0, 20) for mu in (-1.0, 0.0, 1.0)]
        low, high = percentile_interval(stratified_bootstrap(strata, lambda s: s.mean(axis=-1), 1000, rng))
        covered["mean"] += low <= 0.0 <= high
        low, high = percentile_interval(stratified_bootstrap(strata, lambda s: iqm(s, axis=-1), 1000, rng))
        covered["iqm"] += low <= 0.0 <= high
        xs = [rng.normal(0.5, 1.0, 10) for _ in range(3)]
        ys = [rng.normal(0.0, 1.0, 10) for _ in range(3)]
        low, high = percentile_interval(probability_of_improvement_bootstrap(xs, ys, 1000, rng))
        covered["poi"] += low <= truth_poi <= high
    for name, count in covered.items():
        assert 0.89 <= count / repetitions <= 0.99, f"{name}: coverage {count / repetitions:.3f}"


def _entries():
    rows = []
    for setting, shift in (("a", 0.0), ("b", 10.0)):
        for entry, kind, values in (("dpo (tuned)", "tuned", [1.0, 2.0, 3.0]), ("rmipo", "fixed", [2.0, 3.0, 4.0])):
            rows += [{"setting": setting, "entry": entry, "entry_kind": kind, "method.name": entry.split()[0],
                      "config_label": "", "score": v + shift, "collapsed": 0.0} for v in values]
    return pd.DataFrame(rows)


def test_normalized_iqm_table_by_hand():
    entries = _entries()
    # the dpo grid spans 1..3 on setting a and 11..13 on b: normalised = (v - worst) / 2
    summary = pd.DataFrame({"setting": ["a", "a", "b", "b"], "method.name": "dpo", "arm_kind": "grid",
                            "mean": [1.0, 3.0, 11.0, 13.0]})
    normalized = normalize_scores(entries, summary, "dpo")
    rmipo = normalized[normalized["entry"] == "rmipo"]["normalized"]
    np.testing.assert_allclose(sorted(rmipo), [0.5, 0.5, 1.0, 1.0, 1.5, 1.5])
    table = iqm_table(normalized, "normalized", n_boot=200, seed=0).set_index("entry")
    # pooled rmipo scores 0.5, 0.5, 1, 1, 1.5, 1.5: cut 1 per end -> mean of 0.5, 1, 1, 1.5 = 1.0
    assert table.loc["rmipo", "iqm"] == pytest.approx(1.0)
    assert table.loc["dpo (tuned)", "iqm"] == pytest.approx(0.5)
    assert table.loc["rmipo", "n_settings"] == 2 and table.loc["rmipo", "n_runs"] == 6
    assert table.loc["rmipo", "iqm_ci_low"] <= 1.0 <= table.loc["rmipo", "iqm_ci_high"]
    assert list(table.index) == ["rmipo", "dpo (tuned)"]  # best first


def test_improvement_table_by_hand():
    # per setting X=[2,3,4] vs Y=[1,2,3]: pairs X>Y = 3+2+1... = 6, ties = 2 -> (6 + 1)/9 = 7/9
    table = improvement_table(_entries(), "dpo (tuned)", n_boot=200, seed=0)
    assert list(table["entry"]) == ["rmipo"]
    assert table.iloc[0]["probability"] == pytest.approx(7 / 9)
    assert table.iloc[0]["n_settings"] == 2
    assert table.iloc[0]["ci_low"] <= 7 / 9 <= table.iloc[0]["ci_high"]
