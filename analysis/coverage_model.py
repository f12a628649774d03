"""The model that coverage is simulated under (docs/design.md §11a): a tuned baseline's grid and a fixed arm on
one setting, with a seed effect shared across configurations, fitted to committed run records
(`Components`, `fit_folder`), and data sets of n seeds drawn from it (`draw`). `analysis.coverage` runs the
report's estimators on those draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.live_tuning import split_trials
from analysis.load import load_runs
from analysis.seed_arrays import prepare
from analysis.selection import first_argmax
from analysis.tuner_selection import SH_VARIANTS

# the fitted settings: (setting label prefix, tuned baseline, fixed arm)
# the fitted settings: (setting label prefix, tuned baseline, fixed arm)
SCENARIOS = (("arithmetic", "dpo", "rmipo"), ("sentiment", "dpo", "rmipo"), ("constraints", "dpo", "rmipo"))



@dataclass
class Components:
    """A fitted data-generating model of one setting: the baseline's grid (N configurations) and one arm.

    Per configuration j (the grid, then the arm) and seed s:
        X_js = μ^X_j + a_s + g^X_s + b_js + e^X_js      X = V (validation) or T (test)
        a_s    ~ N(0, σ²_seed)        shared by every configuration AND by validation and test (the SFT model,
                                      the data sample)
        g^X_s  ~ N(0, σ²_seed_split)  shared by every configuration, drawn apart for validation and test (the
                                      evaluation sampling streams of seed s on that prompt set)
        b_js   ~ N(0, σ²_run,j)       the run's own training randomness, shared by its validation and test
                                      scores; per configuration (a collapsing small β has a large one)
        e^X_js ~ N(0, σ²_eval)        prompt-sampling noise of one run on one prompt set
        U_js(f) = μ^U_j(f) + a_s + w_s(f) + ε_js(f), w ~ N(0, σ²_curve_seed(f)), ε ~ N(0, σ²_curve(f)): the
                                      validation curve at a successive-halving rung f
    Costs (FLOPs) are each configuration's mean run cost, its mean curve cost at each rung and the mean
    per-seed shared builds, held fixed. The components are moment estimates from the configuration × seed
    tables (`fit_components` has the formulas); μ are the configurations' means.
    """

    setting: str
    baseline: str
    arm: str
    configs: list[str]                     # N grid labels, then the arm
    val_mean: np.ndarray                   # (N + 1,)
    test_mean: np.ndarray                  # (N + 1,)
    seed: float                            # σ²_seed
    seed_split: float                      # σ²_seed_split
    run: np.ndarray                        # (N + 1,) σ²_run,j
    eval: float                            # σ²_eval
    flops: np.ndarray                      # (N + 1,) mean run FLOPs
    seed_builds: np.ndarray                # (2,) FLOPs of one seed's shared builds: the grid's, the arm's
    rungs: tuple[float, ...] = ()          # rung fractions with curves (all before 100%)
    curve_mean: np.ndarray | None = None   # (N, Q)
    curve_seed: np.ndarray | None = None   # (Q,)
    curve_noise: np.ndarray | None = None  # (Q,)
    curve_flops: np.ndarray | None = None  # (N, Q)
    n_seeds: int = 0                       # seeds in the records it was fitted on
    notes: list[str] = field(default_factory=list)

    @property
    def n_configs(self) -> int:
        return len(self.configs) - 1



def _double_centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seed means of the config-centred table (S,), double-centred residuals (M, S))."""
    centred = x - x.mean(axis=1, keepdims=True)
    seed_means = centred.mean(axis=0)
    return seed_means, centred - seed_means



def fit_components(val: np.ndarray, test: np.ndarray) -> dict:
    """Moment estimates of the model's components from configuration × seed tables val, test (M, S).

    With m^X_s the seed means of the configuration-centred table and Q^X its double-centred residuals,
    q_j = Σ_s Q^V_js·Q^T_js/(S−1) and q'_j = Σ_s (Q^V_js² + Q^T_js²)/(2(S−1)) (only b is shared by a run's
    validation and test scores; a and g are removed by the centring):
        E q_j = σ²_run,j (1 − 2/M) + σ̄²/M, σ̄² = mean_j σ²_run,j   ⇒  σ̄² = mean q / (1 − 1/M),
                                                                    σ²_run,j = (q_j − σ̄²/M)/(1 − 2/M)
        E mean q' − E mean q = σ²_eval (1 − 1/M)
        Σ_s m^V_s m^T_s/(S−1) estimates σ²_seed + σ̄²/M
        Σ_s (m^V_s² + m^T_s²)/(2(S−1)) estimates σ²_seed + σ²_seed_split + (σ̄² + σ²_eval)/M
    Negative estimates are set to 0. Returns {"seed", "seed_split", "run" (M,), "eval"}.
    """
    val, test = np.asarray(val, dtype=float), np.asarray(test, dtype=float)
    m, s = val.shape
    if m < 3 or s < 2:
        raise ValueError(f"fit_components needs ≥ 3 configurations and ≥ 2 seeds, got {m} × {s}")
    mv, qv = _double_centred(val)
    mt, qt = _double_centred(test)
    q = (qv * qt).sum(axis=1) / (s - 1)
    q2 = (qv ** 2 + qt ** 2).sum(axis=1) / (2 * (s - 1))
    run_mean = max(q.mean() / (1 - 1 / m), 0.0)
    run = np.clip((q - run_mean / m) / (1 - 2 / m), 0.0, None)
    evaluation = max((q2.mean() - q.mean()) / (1 - 1 / m), 0.0)
    seed = max((mv * mt).sum() / (s - 1) - run_mean / m, 0.0)
    both = ((mv ** 2) + (mt ** 2)).sum() / (2 * (s - 1))
    seed_split = max(both - seed - (run_mean + evaluation) / m, 0.0)
    return {"seed": seed, "seed_split": seed_split, "run": run, "eval": evaluation}



def fit_curve(curve: np.ndarray) -> tuple[float, float]:
    """(σ²_curve_seed + σ²_seed, σ²_curve) of one rung's configuration × seed table (N, S): the seed
    means' variance less the residuals' share, and the double-centred residual variance."""
    n, s = curve.shape
    seed_means, residual = _double_centred(curve)
    noise = (residual ** 2).sum() / ((n - 1) * (s - 1))
    return max((seed_means ** 2).sum() / (s - 1) - noise / n, 0.0), noise



def components_from_runs(runs: pd.DataFrame, setting: str, baseline: str, arm: str, metric: str) -> Components:
    """Fit `Components` on one setting of annotated, `seed_arrays.prepare`d runs (per-procedure costs)."""
    here = runs[runs["setting"] == setting]
    grid = here[(here["method.name"] == baseline) & (here["arm_kind"] == "grid")]
    fixed = here[here["arm"] == arm]
    if grid.empty or fixed.empty:
        raise ValueError(f"{setting}: needs a {baseline!r} grid and the arm {arm!r} (found arms "
                         f"{sorted(here['arm'].unique())})")
    both = pd.concat([grid, fixed])
    seeds = sorted(set(grid["seed"]) & set(fixed["seed"]))
    table = lambda column: both.pivot_table(index="config_id", columns="seed", values=column)[seeds]  # noqa: E731
    order = sorted(grid["config_id"].unique()) + sorted(fixed["config_id"].unique())
    val = table(f"val/{metric}").loc[order].to_numpy()
    test = table(metric).loc[order].to_numpy()
    if not (np.isfinite(val).all() and np.isfinite(test).all()):
        raise ValueError(f"{setting}: every run of the grid and the arm needs {metric} and val/{metric} at seeds {seeds}")
    fitted = fit_components(val, test)
    labels = grid.drop_duplicates("config_id").set_index("config_id").loc[order[:-1], "config_label"].tolist() + [arm]
    flops = both.groupby("config_id")["charged.flops"].mean().loc[order].to_numpy()
    builds = []
    for part in (grid, fixed):
        per_seed = part.groupby("seed")[[c for c in part.columns if c.startswith("cost.shared.") and c.endswith(".flops")]]
        builds.append(float(per_seed.max().sum(axis=1).mean()) if per_seed.ngroups else 0.0)
    out = Components(setting, baseline, arm, labels, val.mean(axis=1), test.mean(axis=1), fitted["seed"],
                     fitted["seed_split"], fitted["run"], fitted["eval"], flops, np.array(builds), n_seeds=len(seeds))
    rungs = tuple(sorted({f for _, _, fractions in SH_VARIANTS for f in fractions if f < 1.0}))
    columns = [f"curve@{f:g}/val/{metric}" for f in rungs]
    if all(c in grid.columns for c in columns) and grid[columns].notna().all().all():
        ids = order[:-1]
        curves = [grid.pivot_table(index="config_id", columns="seed", values=c)[seeds].loc[ids].to_numpy() for c in columns]
        fits = [fit_curve(c) for c in curves]
        out.rungs = rungs
        out.curve_mean = np.stack([c.mean(axis=1) for c in curves], axis=1)
        out.curve_seed = np.array([max(f[0] - out.seed, 0.0) for f in fits])
        out.curve_noise = np.array([f[1] for f in fits])
        out.curve_flops = np.stack([grid.groupby("config_id")[f"curve@{f:g}/flops"].mean().loc[ids].to_numpy()
                                    for f in rungs], axis=1)
    else:
        out.notes.append("no validation curve at every rung: successive halving is not simulated")
    return out



def components_table(fitted: list[Components]) -> pd.DataFrame:
    """One row per fitted setting: the components as standard deviations (metric units)."""
    rows = []
    for c in fitted:
        row = {"setting": c.setting, "baseline": c.baseline, "arm": c.arm, "n_configs": c.n_configs,
               "n_seeds": c.n_seeds, "sd_seed": math.sqrt(c.seed), "sd_seed_split": math.sqrt(c.seed_split),
               "sd_eval": math.sqrt(c.eval),
               "sd_run": "; ".join(f"{label} {math.sqrt(v):.3f}" for label, v in zip(c.configs, c.run)),
               "tuned_config": c.configs[int(first_argmax(c.val_mean[:-1]))],
               "test_means": "; ".join(f"{label} {v:.3f}" for label, v in zip(c.configs, c.test_mean))}
        if c.curve_noise is not None:
            row["sd_curve_seed"] = "; ".join(f"{f:g}: {math.sqrt(v):.3f}" for f, v in zip(c.rungs, c.curve_seed))
            row["sd_curve"] = "; ".join(f"{f:g}: {math.sqrt(v):.3f}" for f, v in zip(c.rungs, c.curve_noise))
        rows.append(row)
    return pd.DataFrame(rows)



def draw(c: Components, n_seeds: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One data set of n_seeds seeds: val, test (N + 1, S) and, where fitted, curve (N, S, Q)."""
    m = len(c.configs)
    a = rng.normal(0.0, math.sqrt(c.seed), n_seeds)
    b = rng.normal(0.0, 1.0, (m, n_seeds)) * np.sqrt(c.run)[:, None]
    out = {}
    for split, mean in (("val", c.val_mean), ("test", c.test_mean)):
        g = rng.normal(0.0, math.sqrt(c.seed_split), n_seeds)
        out[split] = mean[:, None] + a + g + b + rng.normal(0.0, math.sqrt(c.eval), (m, n_seeds))
    if c.curve_mean is not None:
        w = rng.normal(0.0, 1.0, (n_seeds, len(c.rungs))) * np.sqrt(c.curve_seed)
        noise = rng.normal(0.0, 1.0, (c.n_configs, n_seeds, len(c.rungs))) * np.sqrt(c.curve_noise)
        out["curve"] = c.curve_mean[:, None, :] + a[None, :, None] + w[None] + noise
    return out



def fit_folder(folder, metric: str = "gold_reward", scenarios=SCENARIOS) -> list[Components]:
    """Fit `Components` on every setting of a results folder that SCENARIOS names (the baseline's grid
    and the arm present), per-procedure costs."""
    loaded = load_runs(folder)
    if loaded.runs.empty:
        raise ValueError(f"{folder}: no completed runs to fit a model on")
    runs, _ = split_trials(loaded, "per_procedure")  # a live study's trials are not grid points (§11)
    runs = prepare(runs, metric, "per_procedure")
    fitted = []
    for setting in sorted(runs["setting"].unique()):
        for prefix, baseline, arm in scenarios:
            if setting == prefix or setting.startswith(f"{prefix} "):
                fitted.append(components_from_runs(runs, setting, baseline, arm, metric))
    if not fitted:
        raise ValueError(f"{folder}: no setting among {sorted(runs['setting'].unique())} matches the scenarios "
                         f"{[s[0] for s in scenarios]}")
    return fitted
