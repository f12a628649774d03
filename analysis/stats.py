"""Bootstrap resampling, interval estimates, IQM and probability of improvement (DESIGN §11).

The aggregate definitions follow rliable (Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice", NeurIPS 2021), implemented here from the paper's definitions:
- IQM: the interquartile mean, the mean of the middle 50% of all scores pooled over runs and settings
  (a 25% trimmed mean: int(0.25·n) scores cut from each end, as scipy.stats.trim_mean does).
- Probability of improvement P(X > Y): the average over settings m of
  (1 / (N_x·N_y)) Σ_i Σ_j S(x_{m,i}, y_{m,j}), with S(x, y) = 1 if x > y, ½ if x = y, 0 otherwise
  (the Mann–Whitney U statistic divided by N_x·N_y).
- Stratified bootstrap: runs are resampled with replacement within each setting (stratum), so every
  replicate has the same settings and run counts; intervals are percentile intervals.

Owns only numerics over numpy arrays; knows nothing of runs, methods or files.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def iqm(scores: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: the 25%-trimmed mean of `scores` along `axis` (None = all pooled).

    Shapes: (..., n) with axis=-1 -> (...); axis=None -> float. Cuts int(0.25·n) values from each
    end after sorting, so for n = 4 it is the mean of the 2nd and 3rd values, for n = 5 of the middle 3.
    """
    values = np.asarray(scores, dtype=float)
    if axis is None:
        values, axis = values.ravel(), 0
    values = np.sort(values, axis=axis)
    n = values.shape[axis]
    if n == 0:
        raise ValueError("iqm of an empty array")
    cut = int(0.25 * n)
    middle = np.take(values, np.arange(cut, n - cut), axis=axis)
    result = middle.mean(axis=axis)
    return float(result) if np.ndim(result) == 0 else result


def probability_of_improvement(x_by_setting: Sequence[np.ndarray], y_by_setting: Sequence[np.ndarray]) -> float:
    """P(X > Y) averaged over settings (rliable's definition; see the module docstring).

    x_by_setting[m], y_by_setting[m]: 1-D arrays of run scores of X and Y on setting m (any lengths).
    """
    return float(np.mean(_poi_batched([np.asarray(x, float)[None] for x in x_by_setting],
                                      [np.asarray(y, float)[None] for y in y_by_setting])))


def _poi_batched(x_by_setting: Sequence[np.ndarray], y_by_setting: Sequence[np.ndarray]) -> np.ndarray:
    """P(X > Y) per bootstrap replicate: x[m] has shape (B, N_x,m), y[m] (B, N_y,m) -> (B,)."""
    if len(x_by_setting) != len(y_by_setting) or not x_by_setting:
        raise ValueError("probability_of_improvement needs the same, non-zero number of settings for X and Y")
    per_setting = []
    for x, y in zip(x_by_setting, y_by_setting):
        if x.shape[-1] == 0 or y.shape[-1] == 0:
            raise ValueError("probability_of_improvement: a setting has no runs for X or Y")
        diff = x[:, :, None] - y[:, None, :]
        per_setting.append(((diff > 0) + 0.5 * (diff == 0)).mean(axis=(1, 2)))
    return np.mean(per_setting, axis=0)


def percentile_interval(samples: np.ndarray, confidence: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of `samples` (bootstrap replicates along `axis`).

    Replicates may be ±inf (e.g. a cost that is infinite when a target is never reached): then the
    empirical quantile without interpolation is used, so an interval end is a replicate value, never NaN.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    samples = np.asarray(samples, dtype=float)
    alpha = 1.0 - confidence
    method = "linear" if np.all(np.isfinite(samples)) else "inverted_cdf"
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2], axis=axis, method=method)
    return low, high


def bootstrap_indices(sizes: Sequence[int], n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """For groups of the given sizes, indices resampled with replacement within each group.

    Returns one int array of shape (n_boot, size) per group. Index the group's arrays with it to get
    paired resamples (e.g. a run's score and its cost stay together).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    out = []
    for size in sizes:
        if size < 1:
            raise ValueError("bootstrap_indices: a group has no members")
        out.append(rng.integers(0, size, size=(n_boot, size)))
    return out


def stratified_bootstrap(strata: Sequence[np.ndarray], statistic: Callable[[np.ndarray], np.ndarray],
                         n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of `statistic` over the pooled scores, resampling runs within each stratum.

    strata[m]: 1-D scores of stratum m. statistic maps pooled scores (B, total) -> (B,), e.g.
    `lambda s: iqm(s, axis=-1)`. Returns (n_boot,).
    """
    arrays = [np.asarray(s, dtype=float) for s in strata]
    indices = bootstrap_indices([len(a) for a in arrays], n_boot, rng)
    pooled = np.concatenate([a[idx] for a, idx in zip(arrays, indices)], axis=1)
    return np.asarray(statistic(pooled), dtype=float)


def probability_of_improvement_bootstrap(x_by_setting: Sequence[np.ndarray], y_by_setting: Sequence[np.ndarray],
                                         n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of P(X > Y): X's and Y's runs resampled independently within each setting. (n_boot,)"""
    xs = [np.asarray(x, float) for x in x_by_setting]
    ys = [np.asarray(y, float) for y in y_by_setting]
    x_idx = bootstrap_indices([len(x) for x in xs], n_boot, rng)
    y_idx = bootstrap_indices([len(y) for y in ys], n_boot, rng)
    return _poi_batched([x[i] for x, i in zip(xs, x_idx)], [y[i] for y, i in zip(ys, y_idx)])


def interval(point: float, replicates: np.ndarray, confidence: float) -> dict[str, float]:
    """{"estimate", "ci_low", "ci_high"}: a point estimate with its percentile bootstrap interval."""
    low, high = percentile_interval(replicates, confidence)
    return {"estimate": float(point), "ci_low": float(low), "ci_high": float(high)}
