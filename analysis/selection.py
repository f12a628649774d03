"""The selection-honest protocol (DESIGN §11a): seed bootstrap, and the choice of configuration in it.

Every interval over seeds in a report comes from one `SeedBootstrap`: B replicates, each resampling
the runs (seeds) of every configuration with replacement, within that configuration. A run's columns
(validation score, test score, reference score, costs) are resampled together, so paired quantities
stay paired, and every table of a report sees the same replicates.

A *choice* says which configuration an entry reports, on the observed runs and in each replicate:
    fixed       one configuration (an IMI arm, a baseline at its defaults).
    validation  the configuration with the highest validation statistic `stat` over its seeds
                (column "val/<metric>"); the entry reports that configuration's TEST statistic. In
                every replicate the choice is made again from the resampled validation scores, so
                the interval includes the luck of the selection.
    test        the same, selecting on the test scores themselves: the *oracle*, optimistic by
                construction. Used beside the validation choice (labelled "oracle"), and instead of
                it only when runs lack validation scores (older records), which a report must say.
Ties go to the first configuration in config_id order (the smallest β of a β grid).

Pure functions over DataFrames/arrays; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

STATS = ("mean", "median")
SELECTIONS = ("fixed", "validation", "test")


def validation_column(metric: str) -> str:
    """The validation-set name of a test metric: "gold_reward" -> "val/gold_reward"."""
    return f"val/{metric}"


def reduce(values: np.ndarray, stat: str, axis: int = -1) -> np.ndarray:
    """The configuration statistic over seeds: mean or median along `axis` (NaN propagates)."""
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
    return np.mean(values, axis=axis) if stat == "mean" else np.median(values, axis=axis)


@dataclass
class SeedBootstrap:
    """Resampled run positions per configuration, shared by every estimate of a report.

    rows[c]: the index labels of configuration c's runs in the runs frame it was built from;
    indices[c]: (n_boot, n_c) positions into rows[c], drawn with replacement.
    """

    n_boot: int
    rows: dict[int, pd.Index]
    indices: dict[int, np.ndarray]

    def n_runs(self, config_ids) -> np.ndarray:
        """Seeds per configuration, (N,)."""
        return np.array([len(self.rows[c]) for c in config_ids], dtype=int)

    def min_seeds(self, config_ids) -> int:
        """The n of an interval that depends on these configurations: their smallest seed count."""
        return int(self.n_runs(config_ids).min())

    def values(self, runs: pd.DataFrame, config_id: int, column: str) -> np.ndarray:
        """The observed values of one configuration's runs, (n_c,); NaN where a run lacks the column."""
        if column not in runs.columns:
            return np.full(len(self.rows[config_id]), np.nan)
        return pd.to_numeric(runs.loc[self.rows[config_id], column], errors="coerce").to_numpy(dtype=float)

    def resampled(self, runs: pd.DataFrame, config_id: int, column: str) -> np.ndarray:
        """The resampled values of one configuration's runs, (n_boot, n_c)."""
        return self.values(runs, config_id, column)[self.indices[config_id]]

    def stat(self, runs: pd.DataFrame, config_ids, column: str, stat: str) -> tuple[np.ndarray, np.ndarray]:
        """A configuration statistic of `column`: (observed (N,), replicates (n_boot, N))."""
        point = np.array([reduce(self.values(runs, c, column), stat) for c in config_ids])
        replicates = np.stack([reduce(self.resampled(runs, c, column), stat, axis=1) for c in config_ids], axis=1)
        return point, replicates


def seed_bootstrap(runs: pd.DataFrame, n_boot: int, seed: int = 0) -> SeedBootstrap:
    """Draw the replicates for every configuration of an annotated runs frame (column config_id)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    rows, indices = {}, {}
    for config_id, group in runs.groupby("config_id", sort=True):
        rows[int(config_id)] = group.index
        indices[int(config_id)] = rng.integers(0, len(group), size=(n_boot, len(group)))
    return SeedBootstrap(n_boot, rows, indices)


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
    """The chosen configuration's run values: observed (n,), and per replicate (n_boot, n_max) with
    a mask (n_boot, n_max) of the valid positions (configurations can differ in seed count)."""
    sizes = boot.n_runs(choice.config_ids)
    width = int(sizes.max())
    stacked = np.full((len(choice.config_ids), boot.n_boot, width), np.nan)
    for j, config_id in enumerate(choice.config_ids):
        stacked[j, :, :sizes[j]] = boot.resampled(runs, int(config_id), column)
    picked = stacked[choice.replicates, np.arange(boot.n_boot)]
    mask = np.arange(width)[None, :] < sizes[choice.replicates][:, None]
    return boot.values(runs, choice.config_id, column), picked, mask
