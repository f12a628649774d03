"""The selection-honest protocol (docs/design.md §11, §11a): the paired seed bootstrap, and the choice of
configuration in it.

The seed is the experimental unit, so every interval of a report comes from one `SeedBootstrap` whose
replicates draw a setting's seeds jointly for all its configurations; a tuned entry's choice is made again in
every replicate. The rules are in docs/design.md §11 "The seed is the unit". Pure functions; no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.stats import seed_interval

STATS = ("mean", "median")
SELECTIONS = ("fixed", "validation", "test")
# rounds of redrawing the replicates that leave a configuration without runs before giving up
MAX_REDRAWS = 1000


def validation_column(metric: str) -> str:
    """The validation-set name of a test metric: "gold_reward" -> "val/gold_reward"."""
    return f"val/{metric}"


def reduce(values: np.ndarray, stat: str, axis: int = -1) -> np.ndarray:
    """The configuration statistic over seeds: mean or median along `axis` (NaN propagates)."""
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
    return np.mean(values, axis=axis) if stat == "mean" else np.median(values, axis=axis)


def weighted_reduce(values: np.ndarray, weights: np.ndarray, stat: str) -> np.ndarray:
    """`stat` over the last axis of `values`, each value counted `weights` times (integer counts).

    Shapes: values and weights broadcast to (..., S) -> (...). Equals `reduce` of the values repeated
    by their counts: the mean Σ w·v / Σ w; the median of that multiset (the mean of its two middle
    values when Σ w is even). A value with weight 0 takes no part (it may be NaN: a missing run); a
    NaN with positive weight makes the result NaN, as in `reduce`; Σ w = 0 gives NaN.
    """
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
    values, weights = np.broadcast_arrays(np.asarray(values, dtype=float), np.asarray(weights, dtype=float))
    used = weights > 0
    total = weights.sum(axis=-1)
    poisoned = (np.isnan(values) & used).any(axis=-1)
    if stat == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(used, values * weights, 0.0).sum(axis=-1) / total
    else:
        order = np.argsort(np.where(used, values, np.inf), axis=-1, kind="stable")
        sorted_values = np.take_along_axis(values, order, axis=-1)
        cumulative = np.cumsum(np.take_along_axis(weights, order, axis=-1), axis=-1)
        # 0-based positions of the two middle values of the multiset of Σ w values
        low = np.floor((total - 1) / 2)[..., None]
        high = np.floor(total / 2)[..., None]
        pick_low = np.argmax(cumulative > low, axis=-1)[..., None]
        pick_high = np.argmax(cumulative > high, axis=-1)[..., None]
        out = 0.5 * (np.take_along_axis(sorted_values, pick_low, axis=-1)
                     + np.take_along_axis(sorted_values, pick_high, axis=-1))[..., 0]
    return np.where(poisoned | (total <= 0), np.nan, out)


def seed_stat(values: np.ndarray, present: np.ndarray, counts: np.ndarray | None, stat: str) -> np.ndarray:
    """`stat` of each configuration over its seeds under seed counts.

    Shapes: values, present (N, S): configuration × seed (present False where a configuration has no run
    at that seed); counts (R, S) per replicate (None: each seed once, the observed runs) -> (R, N)
    (None: (N,)).
    """
    present = np.asarray(present, dtype=bool)
    if counts is None:
        return weighted_reduce(values, present.astype(float), stat)
    return weighted_reduce(np.asarray(values, dtype=float)[None], np.asarray(counts, float)[:, None, :] * present[None], stat)


def draw_counts(present: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each seed is drawn in each replicate: S draws with replacement, (n_boot, S) ints.

    present (N, S): which configuration has a run at which seed. Replicates that leave a configuration
    without a drawn seed, or draw none of the complete seeds (where there are any), are drawn again
    (docs/design.md §11, "The seed is the unit"); with every seed present nothing is redrawn and the
    draws are those of `rng.multinomial(S, uniform, n_boot)`.
    """
    present = np.asarray(present, dtype=bool)
    n_seeds = present.shape[1]
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not present.any(axis=1).all():
        raise ValueError("draw_counts: a configuration has no run at any seed")
    complete = present.all(axis=0)  # the seeds every configuration ran

    def invalid(counts: np.ndarray) -> np.ndarray:
        bad = ((counts[:, None, :] * present[None]).sum(axis=2) == 0).any(axis=1)
        return bad | ((counts[:, complete].sum(axis=1) == 0) if complete.any() else False)

    uniform = np.full(n_seeds, 1.0 / n_seeds)
    counts = rng.multinomial(n_seeds, uniform, size=n_boot)
    for _ in range(MAX_REDRAWS):
        bad = invalid(counts)
        if not bad.any():
            return counts
        counts[bad] = rng.multinomial(n_seeds, uniform, size=int(bad.sum()))
    raise ValueError(f"draw_counts: after {MAX_REDRAWS} redraws some replicate still leaves a configuration "
                     "without any of its seeds (too few seeds shared between configurations)")


def with_observed(counts: np.ndarray) -> np.ndarray:
    """Replicate seed counts (B, S) -> (1 + B, S) weights: row 0 counts every seed once (the observed
    runs), rows 1.. the replicates, so one call computes an estimate and its replicates."""
    return np.concatenate([np.ones((1, counts.shape[1])), counts], axis=0)


@dataclass
class SeedBootstrap:
    """The paired seed bootstrap of every setting of a runs frame, shared by every estimate of a report.

    seeds[setting]: its seed values, sorted (S,); counts[setting]: (n_boot, S) how often each seed is
    drawn per replicate. rows[c]: the index labels of configuration c's runs in the runs frame it was
    built from, in seed order; positions[c]: each of those runs' seed as a position in its setting's
    seeds; setting_of[c]: its setting.
    """

    n_boot: int
    seeds: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    rows: dict[int, pd.Index]
    positions: dict[int, np.ndarray]
    setting_of: dict[int, str]

    def n_runs(self, config_ids) -> np.ndarray:
        """Seeds per configuration, (N,)."""
        return np.array([len(self.rows[int(c)]) for c in config_ids], dtype=int)

    def min_seeds(self, config_ids) -> int:
        """The n of an interval that depends on these configurations: their smallest seed count."""
        return int(self.n_runs(config_ids).min())

    def setting(self, config_ids) -> str:
        """The one setting these configurations belong to (a ValueError names them otherwise)."""
        settings = {self.setting_of[int(c)] for c in config_ids}
        if len(settings) != 1:
            raise ValueError(f"configurations {sorted(int(c) for c in config_ids)} span settings {sorted(settings)}: "
                             "a paired statistic is taken within one setting")
        return settings.pop()

    def seed_weights(self, setting: str) -> np.ndarray:
        """(1 + n_boot, S): row 0 counts every seed once (the observed runs), rows 1.. the replicates."""
        return with_observed(self.counts[setting])

    def values(self, runs: pd.DataFrame, config_id: int, column: str) -> np.ndarray:
        """The observed values of one configuration's runs, in seed order (n_c,); NaN where a run lacks
        the column."""
        if column not in runs.columns:
            return np.full(len(self.rows[int(config_id)]), np.nan)
        return pd.to_numeric(runs.loc[self.rows[int(config_id)], column], errors="coerce").to_numpy(dtype=float)

    def matrix(self, runs: pd.DataFrame, config_ids, column: str) -> tuple[np.ndarray, np.ndarray]:
        """Configuration × seed: (values (N, S), NaN where there is no run; present (N, S) bool)."""
        setting = self.setting(config_ids)
        n_seeds = len(self.seeds[setting])
        values = np.full((len(config_ids), n_seeds), np.nan)
        present = np.zeros((len(config_ids), n_seeds), dtype=bool)
        for j, config_id in enumerate(config_ids):
            values[j, self.positions[int(config_id)]] = self.values(runs, config_id, column)
            present[j, self.positions[int(config_id)]] = True
        return values, present

    def weights(self, config_id: int) -> np.ndarray:
        """How often each of a configuration's runs is drawn per replicate, (n_boot, n_c)."""
        return self.counts[self.setting_of[int(config_id)]][:, self.positions[int(config_id)]]

    def stat(self, runs: pd.DataFrame, config_ids, column: str, stat: str) -> tuple[np.ndarray, np.ndarray]:
        """A configuration statistic of `column`: (observed (N,), replicates (n_boot, N))."""
        values, present = self.matrix(runs, config_ids, column)
        counts = self.counts[self.setting(config_ids)]
        return seed_stat(values, present, None, stat), seed_stat(values, present, counts, stat)

    def paired_difference(self, runs: pd.DataFrame, a: int, b: int, column: str,
                          confidence: float) -> tuple[float, float, float, float, float, int]:
        """Configuration a − configuration b in the mean of `column` over the seeds both have, paired by seed:
        (mean a, mean b, delta, low, high, n_seeds), the interval the report's (`seed_interval`) over the
        paired replicates; NaN bounds with fewer than 2 shared seeds or when a replicate is undefined."""
        values, present = self.matrix(runs, [a, b], column)
        both = present.all(axis=0)[None, :].repeat(2, axis=0)  # pairs need both runs of a seed
        counts = self.counts[self.setting([a, b])]
        observed, replicates = seed_stat(values, both, None, "mean"), seed_stat(values, both, counts, "mean")
        n = int(both[0].sum())
        delta, delta_replicates = observed[0] - observed[1], replicates[:, 0] - replicates[:, 1]
        low, high = (seed_interval(delta, delta_replicates, n, confidence)
                     if n >= 2 and np.isfinite(delta_replicates).all() else (math.nan, math.nan))
        return float(observed[0]), float(observed[1]), float(delta), float(low), float(high), n


def seed_bootstrap(runs: pd.DataFrame, n_boot: int, seed: int = 0) -> SeedBootstrap:
    """Draw the paired replicates of every setting of an annotated runs frame (columns setting,
    config_id, seed); settings in sorted order from one generator seeded with `seed`.

    Raises ValueError naming the configuration, seed and runs where one configuration has two runs with
    the same seed, or where a run has no seed.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    seeds, counts, rows, positions, setting_of = {}, {}, {}, {}, {}
    for setting, group in runs.groupby("setting", sort=True):
        if group["seed"].isna().any():
            missing = group.index[group["seed"].isna()].tolist()
            raise ValueError(f"setting {setting!r}: runs {missing} have no seed; the paired bootstrap aligns runs by seed")
        setting_seeds = np.sort(group["seed"].unique())
        present = np.zeros((group["config_id"].nunique(), len(setting_seeds)), dtype=bool)
        for j, (config_id, config_runs) in enumerate(group.groupby("config_id", sort=True)):
            config_runs = config_runs.sort_values("seed", kind="stable")
            repeated = config_runs["seed"].duplicated(keep=False)
            if repeated.any():
                ids = config_runs.loc[repeated, "run_id"].tolist() if "run_id" in config_runs else config_runs.index[repeated].tolist()
                raise ValueError(f"setting {setting!r}, configuration {config_id}: runs {ids} share seed "
                                 f"{config_runs.loc[repeated, 'seed'].iloc[0]}; the seed is the unit of the bootstrap, "
                                 "so each configuration may have one run per seed")
            rows[int(config_id)] = config_runs.index
            positions[int(config_id)] = np.searchsorted(setting_seeds, config_runs["seed"].to_numpy())
            setting_of[int(config_id)] = setting
            present[j, positions[int(config_id)]] = True
        seeds[setting] = setting_seeds
        counts[setting] = draw_counts(present, n_boot, rng)
    return SeedBootstrap(n_boot, seeds, counts, rows, positions, setting_of)


def first_argmax(scores: np.ndarray) -> np.ndarray:
    """Position of the largest score along the last axis, the first one on ties; NaN never wins
    unless all are NaN (then 0). Shapes: (..., N) -> (...)."""
    scores = np.asarray(scores, dtype=float)
    return np.argmax(np.where(np.isnan(scores), -np.inf, scores), axis=-1)


@dataclass
class Choice:
    """Which configuration an entry reports: config_ids (N,) candidates in config_id order, the
    position chosen on the observed runs, the positions chosen per replicate (n_boot,), and how."""

    config_ids: np.ndarray
    point: int
    replicates: np.ndarray
    selected_on: str

    @property
    def config_id(self) -> int:
        return int(self.config_ids[self.point])

    def stability(self) -> float:
        """Share of replicates that choose the configuration chosen on the observed runs."""
        return float(np.mean(self.replicates == self.point))


def has_validation(boot: SeedBootstrap, runs: pd.DataFrame, config_ids, metric: str) -> bool:
    """True when every run of these configurations has the validation score of `metric`."""
    column = validation_column(metric)
    return all(np.isfinite(boot.values(runs, c, column)).all() for c in config_ids)


def choose(boot: SeedBootstrap, runs: pd.DataFrame, config_ids, metric: str, stat: str, on: str) -> Choice:
    """The configuration among `config_ids` with the best `stat` of the selection score, observed and
    per replicate. on: "validation" (scores "val/<metric>"), "test" (the oracle) or "fixed" (one id)."""
    config_ids = np.asarray(sorted(int(c) for c in config_ids))
    if on == "fixed" or len(config_ids) == 1:
        if len(config_ids) != 1:
            raise ValueError("a fixed choice needs exactly one configuration")
        return Choice(config_ids, 0, np.zeros(boot.n_boot, dtype=int), "fixed")
    if on not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {on!r}")
    column = validation_column(metric) if on == "validation" else metric
    point, replicates = boot.stat(runs, config_ids, column, stat)
    return Choice(config_ids, int(first_argmax(point)), first_argmax(replicates), on)


def chosen_stat(boot: SeedBootstrap, runs: pd.DataFrame, choice: Choice, column: str,
                stat: str) -> tuple[float, np.ndarray]:
    """`stat` of `column` over the chosen configuration's runs: (observed, replicates (n_boot,)).

    In replicate b the configuration is the one chosen in replicate b, with its resampled runs.
    """
    point, replicates = boot.stat(runs, choice.config_ids, column, stat)
    return float(point[choice.point]), replicates[np.arange(boot.n_boot), choice.replicates]


def chosen_runs(boot: SeedBootstrap, runs: pd.DataFrame, choice: Choice,
                column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chosen configuration's run values: observed (n,) in seed order, and per replicate the
    configuration chosen in it as seed-aligned values (n_boot, S) with their counts (n_boot, S) (0 where
    that configuration has no run at a seed, whose value is then 0: padding to weigh out)."""
    values, present = boot.matrix(runs, choice.config_ids, column)
    counts = boot.counts[boot.setting(choice.config_ids)]
    picked = np.where(present, values, 0.0)[choice.replicates]
    weights = counts * present[choice.replicates]
    return boot.values(runs, choice.config_id, column), picked, weights.astype(float)
