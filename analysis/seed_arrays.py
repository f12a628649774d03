"""A baseline's grid and a fixed arm on one setting as configuration × seed arrays (docs/design.md §11).

`GridSeeds` and `ArmSeeds` hold what the tuners and the arms are scored on: per run its validation
and test scores, its charged cost, its points on the validation curve at the successive-halving rungs,
and the shared builds charged once. `prepare` adds the columns they are read from to annotated runs;
`grid_seeds` and `arm_seeds` read them. No estimate is made here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analysis.costs import COST_FIELDS, charged_costs, procedure_builds
from analysis.selection import SeedBootstrap, has_validation, validation_column
from analysis.tuner_selection import SH_VARIANTS


@dataclass
class GridSeeds:
    """A baseline grid on one setting, configuration × the setting's seeds (NaN where there is no run).

    val, test (N, S); present (N, S) bool; cost (N, S, C); seed_builds (S, C): the builds its runs at
    each seed used, once; builds (C,): every build its runs used, once; rung_val {rungs: (N, S, Q)} and
    rung_cost {rungs: (N, S, Q, C)} at the rungs before 100% of each successive-halving variant whose
    points the curves hold (keyed by the variant's rungs); selected_on: "validation" or "test" (what val
    holds).
    """

    val: np.ndarray
    test: np.ndarray
    present: np.ndarray
    cost: np.ndarray
    seed_builds: np.ndarray
    builds: np.ndarray
    rung_val: dict = field(default_factory=dict)
    rung_cost: dict = field(default_factory=dict)
    selected_on: str = "validation"

    @property
    def usable(self) -> np.ndarray:
        """(S,) seeds at which every configuration has a run with both scores: the practitioner's seeds."""
        return (self.present & np.isfinite(self.val) & np.isfinite(self.test)).all(axis=0)

    @property
    def n_seeds(self) -> int:
        """The n of an interval over this grid: the smallest seed count of its configurations."""
        return int(self.present.sum(axis=1).min())


@dataclass
class ArmSeeds:
    """A fixed arm on one setting over the setting's seeds: test (S,), present (S,), cost (S, C),
    seed_builds (S, C), builds (C,) (as in GridSeeds)."""

    test: np.ndarray
    present: np.ndarray
    cost: np.ndarray
    seed_builds: np.ndarray
    builds: np.ndarray


def oracle_grid(grid: GridSeeds) -> GridSeeds:
    """The same grid selecting on the test scores themselves (the oracle Ê_k of docs/design.md §11)."""
    return replace(grid, val=grid.test, selected_on="test")


def curve_columns(runs: pd.DataFrame, fractions, keys) -> pd.DataFrame:
    """Per run, the curve point at each fraction as columns "curve@<f>/<key>" (NaN where absent).

    In: runs with the `val_curve` column (lists of points). Out: a frame on runs' index.
    """
    out = {}
    for fraction in fractions:
        for key in keys:
            values = []
            for curve in runs["val_curve"] if "val_curve" in runs.columns else [[]] * len(runs):
                match = [p.get(key, math.nan) for p in (curve or []) if math.isclose(p["fraction"], fraction, abs_tol=1e-9)]
                values.append(match[0] if match else math.nan)
            out[f"curve@{fraction:g}/{key}"] = values
    return pd.DataFrame(out, index=runs.index)


def prepare(runs: pd.DataFrame, metric: str, convention: str) -> pd.DataFrame:
    """`runs` (with charged.* columns under `convention`) plus what the tuners read: "share.<f>" (the
    run's per-run build charge: charged − own cost) and the curve columns at every SH rung."""
    own = charged_costs(runs, "per_procedure")
    shares = pd.DataFrame({f"share.{f}": (runs[f"charged.{f}"] - own[f"charged.{f}"]).fillna(0.0) for f in COST_FIELDS},
                          index=runs.index)
    rungs = sorted({f for _, _, fractions in SH_VARIANTS for f in fractions if f < 1.0})
    curves = curve_columns(runs, rungs, (validation_column(metric), *COST_FIELDS))
    return pd.concat([runs, shares, curves], axis=1)


def _builds(procedure_runs: pd.DataFrame, runs: pd.DataFrame, convention: str, all_builds: pd.DataFrame) -> np.ndarray:
    charge = procedure_builds(procedure_runs, runs, convention, all_builds)
    return np.array([charge[f] for f in COST_FIELDS])


def _seed_builds(boot: SeedBootstrap, setting: str, procedure_runs: pd.DataFrame, runs: pd.DataFrame, convention: str,
                 all_builds: pd.DataFrame) -> np.ndarray:
    """(S, C): per seed of the setting, the builds the procedure's runs at that seed used, once."""
    return np.stack([_builds(procedure_runs[procedure_runs["seed"] == s], runs, convention, all_builds)
                     for s in boot.seeds[setting]])


def _costs(boot: SeedBootstrap, runs: pd.DataFrame, ids, prefix: str) -> np.ndarray:
    """(N, S, C) per-run costs "<prefix><field>" for each of COST_FIELDS."""
    return np.stack([boot.matrix(runs, ids, f"{prefix}{f}")[0] for f in COST_FIELDS], axis=-1)


def grid_seeds(runs: pd.DataFrame, boot: SeedBootstrap, grid_runs: pd.DataFrame, metric: str, convention: str,
               all_builds: pd.DataFrame) -> tuple[list[int], GridSeeds, list[str]]:
    """A grid arm's runs as `GridSeeds` (its config ids, the arrays, why any successive-halving
    variant is unavailable). `runs` as returned by `prepare`; all_builds: shared_build_costs(runs)."""
    ids = sorted(int(c) for c in grid_runs["config_id"].unique())
    on = "validation" if has_validation(boot, runs, ids, metric) else "test"
    val, present = boot.matrix(runs, ids, validation_column(metric) if on == "validation" else metric)
    test = boot.matrix(runs, ids, metric)[0]
    setting = boot.setting(ids)
    rung_val, rung_cost, problems = {}, {}, []
    key = validation_column(metric)
    for name, _, rungs in SH_VARIANTS:
        early = [f for f in rungs if f < 1.0]
        needed = [f"curve@{f:g}/{k}" for f in early for k in (key, *COST_FIELDS)]
        if any(c not in runs.columns for c in needed) or runs.loc[grid_runs.index, needed].isna().any().any():
            problems.append(f"{name}: not every run has a val_curve point with {key}, flops and device_hours at "
                            f"{', '.join(f'{f:g}' for f in early)}")
            continue
        rung_val[rungs] = np.stack([boot.matrix(runs, ids, f"curve@{f:g}/{key}")[0] for f in early], axis=-1)
        rung_cost[rungs] = np.stack([_costs(boot, runs, ids, f"curve@{f:g}/") + _costs(boot, runs, ids, "share.")
                                     for f in early], axis=2)
    grid = GridSeeds(val, test, present, _costs(boot, runs, ids, "charged."),
                     _seed_builds(boot, setting, grid_runs, runs, convention, all_builds),
                     _builds(grid_runs, runs, convention, all_builds), rung_val, rung_cost, on)
    return ids, grid, problems


def arm_seeds(runs: pd.DataFrame, boot: SeedBootstrap, arm_runs: pd.DataFrame, metric: str, convention: str,
              all_builds: pd.DataFrame) -> tuple[list[int], ArmSeeds]:
    """A fixed arm's runs (one configuration) as `ArmSeeds`."""
    ids = sorted(int(c) for c in arm_runs["config_id"].unique())
    test, present = boot.matrix(runs, ids, metric)
    setting = boot.setting(ids)
    return ids, ArmSeeds(test[0], present[0], _costs(boot, runs, ids, "charged.")[0],
                         _seed_builds(boot, setting, arm_runs, runs, convention, all_builds),
                         _builds(arm_runs, runs, convention, all_builds))

