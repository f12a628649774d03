"""Optuna's samplers and pruners replayed against recorded runs: a tabular benchmark of tuners
(docs/design.md §11, "Tuners replayed with Optuna").

A replicate is one tuning procedure as a practitioner runs it: Optuna proposes β by ask-and-tell, and every
trial is answered from the recorded run of that β at the replicate's ONE seed — intermediate values from
the run's validation curve (so a pruner can stop it), the final value its validation score. Owns the
replay and the exact expectation of random search with replacement that the replay must match; the
bootstrap and the tables are in `analysis.tuner_benchmark`. No I/O.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from analysis.selection import first_argmax

SAMPLERS = ("random", "qmc", "tpe", "gp")
PRUNERS = ("successive_halving", "hyperband")
SPACES = ("categorical", "ordinal")
# Optuna's own defaults, except min_resource: the unit of resource here is one curve point, and a
# pruner may already decide at the first (`analysis.tuner_benchmark` reports at the points before the end)
SUCCESSIVE_HALVING_REDUCTION = 4
HYPERBAND_REDUCTION = 3


@dataclass(frozen=True)
class TunerSpec:
    """One Optuna tuner: `sampler` (one of SAMPLERS, Optuna's defaults but the seed; QMC scrambled so that
    its sampler seed draws a randomised Sobol sequence), `pruner` (one of PRUNERS, or None: every trial
    trains to the end), `space`: "categorical" (β a categorical over the recorded grid, as the grid is all
    the records can answer) or "ordinal" (β's position on the grid, an integer: on a log-spaced grid,
    log β up to scale, so a sampler can use the order)."""

    name: str
    sampler: str
    pruner: str | None = None
    space: str = "categorical"

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"tuner {self.name!r}: sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise ValueError(f"tuner {self.name!r}: pruner must be one of {PRUNERS} or None, got {self.pruner!r}")
        if self.space not in SPACES:
            raise ValueError(f"tuner {self.name!r}: space must be one of {SPACES}, got {self.space!r}")
        if self.sampler == "qmc" and self.space == "categorical":
            # Optuna's QMCSampler draws a categorical parameter with RandomSampler: it would be random search
            raise ValueError(f"tuner {self.name!r}: QMC needs space='ordinal' (QMCSampler samples a categorical "
                             "parameter with RandomSampler)")


DEFAULT_TUNERS = (
    TunerSpec("Optuna random", "random"),
    TunerSpec("Optuna QMC (ordinal β)", "qmc", space="ordinal"),
    TunerSpec("Optuna TPE", "tpe"),
    TunerSpec("Optuna TPE (ordinal β)", "tpe", space="ordinal"),
    TunerSpec("Optuna GP", "gp"),
    TunerSpec("Optuna TPE + successive halving", "tpe", "successive_halving"),
    TunerSpec("Optuna TPE + Hyperband", "tpe", "hyperband"),
    TunerSpec("Optuna random + Hyperband", "random", "hyperband"),
)


def gp_available() -> bool:
    """Optuna's GPSampler needs torch and scipy, which it imports only when it first samples."""
    try:
        import scipy  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class SeedGrid:
    """A grid's recorded runs at one seed, configurations in the grid's order (β ascending).

    choices (N,): what Optuna is offered (β values); val, test (N,): the final validation and test scores;
    cost (N, C): what a finished trial costs; curve_val (N, Q): the validation curve at its Q points before
    the end (Q may be 0); curve_cost (N, Q, C): the cumulative cost up to each point (what a trial stopped
    there costs).
    """

    choices: tuple
    val: np.ndarray
    test: np.ndarray
    cost: np.ndarray
    curve_val: np.ndarray
    curve_cost: np.ndarray

    def __post_init__(self):
        n = len(self.choices)
        if n < 1 or len(set(self.choices)) != n:
            raise ValueError(f"a replay grid needs distinct choices, got {list(self.choices)}")
        expected = {"val": (n,), "test": (n,), "cost": (n, None), "curve_val": (n, None),
                    "curve_cost": (n, self.curve_val.shape[1] if self.curve_val.ndim == 2 else None, None)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
                raise ValueError(f"replay grid field {name!r} has shape {value.shape}, expected {shape} "
                                 "(None: any length)")
            if not np.isfinite(value).all():
                raise ValueError(f"replay grid field {name!r} has a missing or infinite value: every trial must be "
                                 "answerable from a record")

    @property
    def n_points(self) -> int:
        return self.curve_val.shape[1]


@dataclass
class Trace:
    """One replayed study of K trials. Per trial t: config (K,) the configuration asked; stopped (K,) the
    curve point where a pruner stopped it (−1: it trained to the end, or was answered from an earlier
    finished run of the same configuration, which costs nothing: the suite skips a run whose record
    exists); cost (K, C) cumulative; chosen (K,) the configuration the procedure reports after trial t
    (the best final validation score among finished configurations, the first on ties; −1 if none);
    finished (K,) how many configurations have finished."""

    config: np.ndarray
    stopped: np.ndarray
    cost: np.ndarray
    chosen: np.ndarray
    finished: np.ndarray


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna logs every trial and warns that GP/QMC are experimental: silence both for the replay only."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield optuna
    finally:
        optuna.logging.set_verbosity(level)


def make_sampler(spec: TunerSpec, seed: int):
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if not gp_available():
        raise ValueError(f"tuner {spec.name!r}: Optuna's GPSampler needs torch and scipy")
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(spec: TunerSpec, n_points: int):
    """The pruner over resources 1..n_points + 1 (the curve points before the end, then the end)."""
    import optuna

    if spec.pruner is None:
        return optuna.pruners.NopPruner()
    if n_points < 1:
        raise ValueError(f"tuner {spec.name!r}: a pruner needs validation-curve points before the end of training")
    if spec.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=SUCCESSIVE_HALVING_REDUCTION)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n_points + 1,
                                          reduction_factor=HYPERBAND_REDUCTION)


def replay_study(spec: TunerSpec, grid: SeedGrid, n_trials: int, sampler_seed: int) -> Trace:
    """Run one Optuna study of `n_trials` trials against one seed's recorded runs (ask-and-tell)."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    n, n_costs = len(grid.choices), grid.cost.shape[1]
    choices = list(grid.choices)
    out = Trace(np.zeros(n_trials, int), np.full(n_trials, -1), np.zeros((n_trials, n_costs)),
                np.full(n_trials, -1), np.zeros(n_trials, int))
    finished = np.zeros(n, dtype=bool)
    spent = np.zeros(n_costs)
    with _quiet_optuna() as optuna:
        # the study name fixes Hyperband's bracket of each trial (a hash of name and trial number)
        study = optuna.create_study(direction="maximize", sampler=make_sampler(spec, sampler_seed),
                                    pruner=make_pruner(spec, grid.n_points), study_name=f"replay-{sampler_seed}")
        for t in range(n_trials):
            trial = study.ask()
            if spec.space == "categorical":
                j = choices.index(trial.suggest_categorical("beta", choices))
            else:
                j = trial.suggest_int("beta_position", 0, n - 1)
            stop = -1
            if not finished[j] and spec.pruner is not None:
                for q in range(grid.n_points):
                    trial.report(float(grid.curve_val[j, q]), step=q + 1)
                    if trial.should_prune():
                        stop = q
                        break
            if stop >= 0:
                spent += grid.curve_cost[j, stop]
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                if not finished[j]:
                    spent += grid.cost[j]
                    finished[j] = True
                study.tell(trial, float(grid.val[j]))
            out.config[t], out.stopped[t], out.cost[t] = j, stop, spent
            out.chosen[t] = first_argmax(np.where(finished, grid.val, -np.inf)) if finished.any() else -1
            out.finished[t] = finished.sum()
    return out


@dataclass
class Replays:
    """Many replicates of one tuner on one setting: replicate r ran at seed position seed_position[r] with
    sampler seed sampler_seed[r]; chosen, chosen_test, finished (R, K), cost (R, K, C), stopped (R, K) per
    trial as in `Trace` (chosen_test NaN where nothing has finished)."""

    spec: TunerSpec
    seed_position: np.ndarray
    sampler_seed: np.ndarray
    chosen: np.ndarray
    chosen_test: np.ndarray
    cost: np.ndarray
    finished: np.ndarray
    stopped: np.ndarray


@contextlib.contextmanager
def _one_torch_thread():
    """GPSampler fits its small Gaussian process with torch; on a busy machine torch's default thread pool makes
    that ~15× slower (measured: 45 s against 3 s for 10 studies beside a 2-job sweep on 2 cores), so the
    replays run it on one thread. Nothing else here uses torch; its setting is restored after."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def replay(spec: TunerSpec, grids: list[SeedGrid], n_replicates: int, n_trials: int, seed: int = 0,
           label: str = "") -> Replays:
    """`n_replicates` studies of `spec`: replicate r uses seed position r mod S (so every seed gets the same
    number of replicates, and replicate r is at the same seed for every tuner: paired) and sampler seed
    `seed` + r. A progress bar (on a terminal) counts the studies, titled `label` or the tuner's name."""
    if not grids:
        raise ValueError(f"tuner {spec.name!r}: no seed has a complete grid to replay")
    if n_replicates < len(grids):
        raise ValueError(f"n_replicates ({n_replicates}) must be at least the number of seeds ({len(grids)})")
    traces, positions = [], np.arange(n_replicates) % len(grids)
    with _one_torch_thread():
        # disable=None: a bar on a terminal only, so logs and tests stay quiet
        for r, s in enumerate(tqdm(positions, desc=label or spec.name, unit="study", file=sys.stderr, leave=False,
                                   disable=None)):
            traces.append(replay_study(spec, grids[s], n_trials, seed + r))
    chosen = np.stack([t.chosen for t in traces])
    tests = np.stack([g.test for g in grids])[positions]                        # (R, N)
    chosen_test = np.where(chosen >= 0, np.take_along_axis(tests, np.maximum(chosen, 0), axis=1), np.nan)
    return Replays(spec, positions, seed + np.arange(n_replicates), chosen, chosen_test,
                   np.stack([t.cost for t in traces]), np.stack([t.finished for t in traces]),
                   np.stack([t.stopped for t in traces]))


# ---------------------------------------------------------------------------------------------
# Random search with replacement, exactly


def val_ranks(val: np.ndarray) -> np.ndarray:
    """Ranks 1..N by validation score ascending, (..., N); of a tie the first configuration ranks higher
    (it is the one `first_argmax` keeps); NaN ranks lowest."""
    val = np.where(np.isnan(val), -np.inf, np.asarray(val, dtype=float))
    n = val.shape[-1]
    order = n - 1 - np.argsort(val[..., ::-1], axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
    return rank + 1


def random_with_replacement(val: np.ndarray, test: np.ndarray, cost: np.ndarray,
                            n_trials: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact expectation of random search that draws each trial uniformly from the N configurations,
    repeats allowed (what Optuna's RandomSampler over a categorical does), a repeat answered free from
    its finished run. After k trials the chosen configuration is the best-ranked one drawn:
    P(chosen = j) = (r_j/N)^k − ((r_j − 1)/N)^k (r_j its rank, `val_ranks`); each configuration has been
    trained with probability 1 − (1 − 1/N)^k.

    Shapes: val, test (..., N), cost (..., N, C) -> (expected test (..., K), expected cost (..., K, C)).
    """
    rank = val_ranks(val).astype(float)
    n = rank.shape[-1]
    k = np.arange(1, n_trials + 1, dtype=float)[:, None]                         # (K, 1)
    chosen = (rank[..., None, :] / n) ** k - ((rank[..., None, :] - 1) / n) ** k  # (..., K, N)
    expected_test = (chosen * np.asarray(test, dtype=float)[..., None, :]).sum(axis=-1)
    trained = 1.0 - (1.0 - 1.0 / n) ** k[:, 0]                                   # (K,)
    expected_cost = trained[:, None] * np.asarray(cost, dtype=float).sum(axis=-2)[..., None, :]
    return expected_test, expected_cost
