"""Interval estimates, bootstrap resampling, IQM and probability of improvement (docs/design.md §11, §11a).

The numerics behind every interval and aggregate a report gives; the formulas, why the interval over seeds is
a union of two, and its measured coverage are in docs/design.md §11 "Intervals over seeds" and "Across
settings". Owns only numerics over numpy arrays; knows nothing of runs, methods or files.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import norm, t as student_t

# Fewer seeds than this and a report says it is not citable (docs/design.md §11a).
CITABLE_SEEDS = 5
# Replicates that resolve the expanded interval's tail quantile at n = 5 (≈ 4 replicates beyond it).
RECOMMENDED_REPLICATES = 4000


# ---------------------------------------------------------------------------------------------
# Intervals


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def expanded_tail(n_seeds: int, confidence: float = 0.95) -> float:
    """α'/2 = Φ(−sqrt(n/(n−1))·t_{1−α/2, n−1}) for n seeds (docs/design.md §11, "Intervals over seeds").

    n = 1 gives 0 (the interval is the range of the replicates, which one seed makes a point).
    E.g. n = 5, 95%: 0.00095; n = 10: 0.0086; n → ∞: α/2.
    """
    _check_confidence(confidence)
    if n_seeds < 2:
        return 0.0
    alpha = 1.0 - confidence
    return float(norm.cdf(-math.sqrt(n_seeds / (n_seeds - 1)) * student_t.ppf(1 - alpha / 2, n_seeds - 1)))


def _quantiles(samples: np.ndarray, low_q: float, axis: int) -> tuple[np.ndarray, np.ndarray]:
    # ±inf replicates (a cost when a target is missed) need a quantile that is a replicate value:
    # linear interpolation between −inf and a number gives NaN
    method = "linear" if np.all(np.isfinite(samples)) else "inverted_cdf"
    low, high = np.quantile(samples, [low_q, 1.0 - low_q], axis=axis, method=method)
    return low, high


def percentile_interval(samples: np.ndarray, confidence: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Plain percentile bootstrap interval (quantiles α/2, 1 − α/2 of the replicates along `axis`).

    Kept for comparison: it under-covers over few seeds; the report uses `seed_interval`.
    """
    _check_confidence(confidence)
    return _quantiles(np.asarray(samples, dtype=float), (1.0 - confidence) / 2, axis)


def expanded_percentile_interval(samples: np.ndarray, n_seeds: int, confidence: float = 0.95,
                                 axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Expanded percentile interval: quantiles α'/2 and 1 − α'/2 (`expanded_tail`) of the replicates.

    Shapes: samples (..., B, ...) with the B replicates along `axis` -> (low, high), each without it.
    """
    return _quantiles(np.asarray(samples, dtype=float), expanded_tail(n_seeds, confidence), axis)


def seed_interval(point, replicates: np.ndarray, n_seeds: int, confidence: float = 0.95,
                  axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The report's interval over seeds (docs/design.md §11): the expanded percentile interval,
    widened to at least point ± sqrt(n/(n−1))·t_{1−α/2,n−1}·SD(replicates) where the replicates are finite.

    Shapes: point (...), replicates with the B replicates along `axis` -> (low, high), each (...).
    """
    samples = np.asarray(replicates, dtype=float)
    low, high = expanded_percentile_interval(samples, n_seeds, confidence, axis)
    if n_seeds < 2:
        return low, high
    finite = np.all(np.isfinite(samples), axis=axis)
    spread = np.where(finite, np.std(np.where(np.isfinite(samples), samples, 0.0), axis=axis, ddof=1), 0.0)
    half = math.sqrt(n_seeds / (n_seeds - 1)) * student_t.ppf(1 - (1 - confidence) / 2, n_seeds - 1) * spread
    point = np.asarray(point, dtype=float)
    return np.minimum(low, np.where(finite, point - half, low)), np.maximum(high, np.where(finite, point + half, high))


def wilson_interval(point, n_seeds: int, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of a proportion `point` over n_seeds seeds (Wilson 1927):
    (p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n), z = Φ⁻¹(1 − α/2). Shapes: point (...) -> (...)."""
    _check_confidence(confidence)
    p = np.clip(np.asarray(point, dtype=float), 0.0, 1.0)
    z = norm.ppf(1 - (1 - confidence) / 2)
    n = max(int(n_seeds), 1)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def probability_interval(point, replicates: np.ndarray, n_seeds: int, confidence: float = 0.95,
                         axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The report's interval for a probability over seeds (P(reach τ)): `seed_interval` clipped to [0, 1],
    widened to at least the Wilson score interval of the estimate at n = n_seeds (docs/design.md §11:
    with five seeds that all reach τ every replicate does too, and the bootstrap interval
    collapses to [1, 1]). Shapes as `seed_interval`."""
    low, high = seed_interval(point, replicates, n_seeds, confidence, axis)
    w_low, w_high = wilson_interval(point, n_seeds, confidence)
    return np.clip(np.minimum(low, w_low), 0.0, 1.0), np.clip(np.maximum(high, w_high), 0.0, 1.0)


def interval(point: float, replicates: np.ndarray, n_seeds: int, confidence: float) -> dict[str, float]:
    """{"estimate", "ci_low", "ci_high"}: a point estimate with its `seed_interval`."""
    low, high = seed_interval(point, replicates, n_seeds, confidence)
    return {"estimate": float(point), "ci_low": float(low), "ci_high": float(high)}


# ---------------------------------------------------------------------------------------------
# IQM


def iqm_shares(scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Each score's share of the IQM: the mass of its weight inside the middle 50%, divided by 0.5.

    Shapes: scores (..., M), weights broadcastable to it (None = equal). A weight of 0 (padding) takes
    no share; its score may be NaN. Shares are ≥ 0, sum to 1 over the last axis, and are in the
    scores' own order, so `(shares * scores).sum(-1)` is the IQM and a zero share means trimmed away.
    """
    x = np.asarray(scores, dtype=float)
    w = np.ones_like(x) if weights is None else np.broadcast_to(np.asarray(weights, dtype=float), x.shape).copy()
    w = np.where(w > 0, w, 0.0)
    total = w.sum(axis=-1, keepdims=True)
    if x.shape[-1] == 0 or np.any(total <= 0):
        raise ValueError("iqm of an empty array (or of weights that are all 0)")
    w = w / total
    order = np.argsort(np.where(w > 0, x, np.inf), axis=-1, kind="stable")
    sorted_w = np.take_along_axis(w, order, axis=-1)
    upper = np.cumsum(sorted_w, axis=-1)
    lower = upper - sorted_w
    overlap = np.clip(np.minimum(upper, 0.75) - np.maximum(lower, 0.25), 0.0, None)
    overlap = overlap / overlap.sum(axis=-1, keepdims=True)  # = /0.5 up to rounding of the cumsum
    shares = np.empty_like(overlap)
    np.put_along_axis(shares, order, overlap, axis=-1)
    return shares


def iqm(scores: np.ndarray, weights: np.ndarray | None = None, axis: int | None = -1) -> np.ndarray | float:
    """Interquartile mean of `scores` (weighted: docs/design.md §11, "Across settings").

    Shapes: (..., M) with axis=-1 -> (...); axis=None pools everything -> float. Equal weights:
    n = 4 -> mean of the 2nd and 3rd values; n = 8 -> mean of the middle 4 (= scipy's trim_mean).
    """
    x = np.asarray(scores, dtype=float)
    if axis is None:
        x = x.ravel()
        weights = None if weights is None else np.asarray(weights, dtype=float).ravel()
    elif axis not in (-1, x.ndim - 1):
        raise ValueError("iqm reduces the last axis (axis=-1) or everything (axis=None)")
    shares = iqm_shares(x, weights)
    with np.errstate(invalid="ignore"):  # padding (weight 0) may be NaN or ±inf; it takes no share
        result = np.sum(np.where(shares > 0, shares * x, 0.0), axis=-1)
    return float(result) if np.ndim(result) == 0 else result


# ---------------------------------------------------------------------------------------------
# Probability of improvement


def _poi_setting(x: np.ndarray, y: np.ndarray, x_weights: np.ndarray | None, y_weights: np.ndarray | None) -> np.ndarray:
    """P(X > Y) on one setting per replicate: x (B, N_x), y (B, N_y), weights of the entries (how often
    each run is drawn; 0 = padding, whose value is ignored; None = 1 each) -> (B,)."""
    wx = np.ones(x.shape) if x_weights is None else np.asarray(x_weights, dtype=float)
    wy = np.ones(y.shape) if y_weights is None else np.asarray(y_weights, dtype=float)
    x, y = np.where(wx > 0, x, 0.0), np.where(wy > 0, y, 0.0)
    diff = x[:, :, None] - y[:, None, :]
    score = (diff > 0) + 0.5 * (diff == 0)
    pair = wx[:, :, None] * wy[:, None, :]
    total = pair.sum(axis=(1, 2))
    if np.any(total <= 0):
        raise ValueError("probability_of_improvement: a setting has no runs for X or Y")
    return (pair * score).sum(axis=(1, 2)) / total


def probability_of_improvement_batched(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray],
                                       x_weights: Sequence[np.ndarray | None] | None = None,
                                       y_weights: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """P(X > Y) averaged over settings, per replicate: xs[m] (B, N_x,m), ys[m] (B, N_y,m) -> (B,).

    Weights (same shapes) count each run as often as a bootstrap replicate drew it: a pair (i, j) counts
    w_i·w_j times, so the result is P(X > Y) over the drawn runs with repeats; 0 marks padding (bool
    masks work as weights).
    """
    if len(xs) != len(ys) or not xs:
        raise ValueError("probability_of_improvement needs the same, non-zero number of settings for X and Y")
    x_weights = x_weights or [None] * len(xs)
    y_weights = y_weights or [None] * len(ys)
    return np.mean([_poi_setting(np.asarray(x, float), np.asarray(y, float), xw, yw)
                    for x, y, xw, yw in zip(xs, ys, x_weights, y_weights)], axis=0)


def probability_of_improvement(x_by_setting: Sequence[np.ndarray], y_by_setting: Sequence[np.ndarray]) -> float:
    """P(X > Y) averaged over settings; x_by_setting[m], y_by_setting[m]: 1-D run scores on setting m."""
    return float(probability_of_improvement_batched([np.asarray(x, float)[None] for x in x_by_setting],
                                                    [np.asarray(y, float)[None] for y in y_by_setting])[0])
