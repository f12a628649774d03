"""The β-matters check (docs/design.md §11a) against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.grid import annotate
from analysis.sensitivity import MATTERS_RATIO, grid_spread, paired_seed_sd


def test_paired_seed_sd_by_hand():
    # a seed effect (+1 on seed 1) and config effects leave no residual; one cell off by +0.4 does
    exact = np.array([[0.0, 1.0], [0.5, 1.5], [0.2, 1.2]])
    assert paired_seed_sd(exact) == pytest.approx(0.0, abs=1e-12)
    noisy = exact.copy()
    noisy[0, 0] += 0.4
    # residual of a 3×2 table with one cell +0.4: ±0.4·(1 − 1/3)(1 − 1/2) = ±0.1333 in row 0, ∓0.0667 elsewhere
    r = np.array([[0.4 * 2 / 3 / 2, -0.4 * 2 / 3 / 2], [-0.4 / 3 / 2, 0.4 / 3 / 2], [-0.4 / 3 / 2, 0.4 / 3 / 2]])
    assert paired_seed_sd(noisy) == pytest.approx(math.sqrt((r ** 2).sum() / 2))
    assert math.isnan(paired_seed_sd(np.zeros((1, 5))))


def _runs(means: dict[float, float], seed_effects: list[float], noise: np.ndarray) -> pd.DataFrame:
    rows = [{"dataset.name": "constraints", "model.name": "smollm2", "hardware.name": "cpu", "method.name": "dpo",
             "method.beta": beta, "method_info.imi": False, "seed": s,
             "gold_reward": mean + seed_effects[s] + noise[i, s]}
            for i, (beta, mean) in enumerate(means.items()) for s in range(len(seed_effects))]
    return annotate(pd.DataFrame(rows), ["dataset.name", "model.name", "hardware.name", "method.name", "method.beta"])


def test_grid_spread_against_brute_force_and_the_verdict():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, size=(5, 5))
    means = {0.03: 0.10, 0.1: 0.20, 0.3: 0.25, 1.0: 0.15, 3.0: 0.05}
    runs = _runs(means, [0.0, 0.3, -0.2, 0.1, 0.05], noise)
    row = grid_spread(runs, "dpo", "gold_reward").iloc[0]
    table = np.array(list(means.values()))[:, None] + np.array([0.0, 0.3, -0.2, 0.1, 0.05])[None, :] + noise
    config_means = table.mean(axis=1)
    assert row["spread"] == pytest.approx(config_means.max() - config_means.min())
    assert row["paired_sd"] == pytest.approx(paired_seed_sd(table))
    assert (row["best"], row["worst"], row["n_configs"], row["n_seeds"]) == ("β=0.3", "β=3", 5, 5)
    assert row["matters"] and row["ratio"] > MATTERS_RATIO  # seed effects are removed: they are not noise here
    flat = _runs({b: 0.2 for b in means}, [0.0] * 5, rng.normal(0, 0.05, size=(5, 5)))
    assert not grid_spread(flat, "dpo", "gold_reward").iloc[0]["matters"]


def test_only_seeds_every_configuration_has_are_paired():
    runs = _runs({0.1: 0.1, 1.0: 0.3}, [0.0, 0.0, 0.0], np.zeros((2, 3)))
    runs = runs[~((runs["method.beta"] == 1.0) & (runs["seed"] == 2))]
    assert grid_spread(runs, "dpo", "gold_reward").iloc[0]["n_seeds"] == 2
