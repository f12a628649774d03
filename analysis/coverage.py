"""Coverage of the report's intervals, by simulation, for the statistics the report prints (docs/design.md §11a).

Fits a data-generating model with a seed effect shared across configurations to committed run records
(`Components`), runs the report's own estimators on data sets drawn from it (`simulate`) and scores each
interval method against the model's truth; it exists so that "citable" rests on measured coverage.
"""
from __future__ import annotations

import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.coverage_model import Components, components_table, draw, fit_folder
from analysis.savings import PlausibleCosts, cost_to_reach, plausible_costs, saving_interval, savings
from analysis.seed_arrays import ArmSeeds, GridSeeds
from analysis.selection import draw_counts, first_argmax, seed_stat, with_observed
from analysis.stats import expanded_percentile_interval, percentile_interval, probability_interval, seed_interval
from analysis.tables import to_markdown
from analysis.tuner_models import PRACTITIONER, arm_outcome, grid_tuners, tau_rows
from analysis.tuner_selection import GRID, RANDOM, SH_VARIANTS

# seeds drawn to compute a tuner's true P(reach τ) and E[test] under the model
TRUTH_SEEDS = 20_000
INTERVALS = ("percentile", "expanded percentile", "t-widened", "report")
# the report's default tolerances, and 0.1, at which an arm below the tuned baseline can still reach τ
TOLERANCES = (0.0, 0.05, 0.1)


# ---------------------------------------------------------------------------------------------
# Drawing data sets and the truth


def grid_and_arm(c: Components, data: dict[str, np.ndarray]) -> tuple[GridSeeds, ArmSeeds]:
    """The report's arrays (`seed_arrays.GridSeeds`, `seed_arrays.ArmSeeds`) for one simulated data set;
    one cost field (FLOPs)."""
    n, s = c.n_configs, data["val"].shape[1]
    cost = np.broadcast_to(c.flops[:n, None, None], (n, s, 1)).copy()
    rung_val, rung_cost = {}, {}
    if "curve" in data:
        for _, _, rungs in SH_VARIANTS:
            positions = [c.rungs.index(f) for f in rungs if f < 1.0]
            rung_val[rungs] = data["curve"][:, :, positions]
            rung_cost[rungs] = np.broadcast_to(c.curve_flops[:, None, positions, None], (n, s, len(positions), 1)).copy()
    present = np.ones((n, s), dtype=bool)
    grid = GridSeeds(data["val"][:n], data["test"][:n], present, cost, np.full((s, 1), c.seed_builds[0]),
                     np.array([s * c.seed_builds[0]]), rung_val, rung_cost)
    arm = ArmSeeds(data["test"][n], np.ones(s, dtype=bool), np.full((s, 1), c.flops[n]),
                   np.full((s, 1), c.seed_builds[1]), np.array([s * c.seed_builds[1]]))
    return grid, arm


@dataclass
class Truth:
    """The model's values of every simulated statistic (per tolerance where τ enters)."""

    delta_tuned: float
    tau: dict[float, float]
    expected_test: dict[str, np.ndarray]            # tuner -> (K,)
    p_reach: dict[tuple[float, str], np.ndarray]    # (tolerance, tuner) -> (K,)
    savings: dict[tuple[float, str], float]         # (tolerance, tuner) -> saving (FLOPs)


def truth(c: Components, tolerances, rng: np.random.Generator, n_seeds: int = TRUTH_SEEDS) -> Truth:
    """The statistics' values under the model: selection on the true validation means; tuners' E[test]
    and P(reach τ*) by Monte Carlo over `n_seeds` seeds (each seed one practitioner's procedure, run by
    `tuner_models.grid_tuners` itself, exact over subsets); costs are fixed, so a saving follows from the
    true budgets."""
    n = c.n_configs
    best = int(first_argmax(c.val_mean[:n]))
    tau = {t: float(c.test_mean[best] - t) for t in tolerances}
    grid, _ = grid_and_arm(c, draw(c, n_seeds, rng))
    tuners = grid_tuners(grid, np.ones((1, n_seeds)), "mean", PRACTITIONER, rng)
    arm_cost = c.flops[n] + c.seed_builds[1]
    expected, p_reach, saved = {}, {}, {}
    for tuner in tuners:
        expected[tuner.name] = tuner.expected_test[0]
        for t, level in tau.items():
            p_reach[(t, tuner.name)] = tuner.p_reach(np.array([level]))[0]
            _, cost = cost_to_reach(tuner.expected_test, tuner.expected_cost, np.array([level]))
            paid = np.array([arm_cost if c.test_mean[n] >= level else math.inf])
            saved[(t, tuner.name)] = float(savings(paid, cost[:, 0])[0])
    return Truth(float(c.test_mean[n] - c.test_mean[best]), tau, expected, p_reach, saved)


# ---------------------------------------------------------------------------------------------
# The simulation


def fixed_budgets(n_configs: int) -> dict[str, int]:
    """Budget positions at which P(reach τ) and E[test] are checked: the grid; random search at
    k = ⌈N/2⌉ (a budget the cheapest-to-τ choice often lands on); each successive halving from all N."""
    half = math.ceil(n_configs / 2) - 1
    return {GRID: 0, RANDOM: half, **{name: n_configs - 1 for name, _, _ in SH_VARIANTS}}


def _intervals(point: float, replicates: np.ndarray, n: int, confidence: float, kind: str,
               plausible: PlausibleCosts | None = None) -> dict[str, tuple]:
    """Every interval method for one statistic: the plain and the expanded percentile intervals, the
    t-widened one (`stats.seed_interval`, ≤ 1 for a saving, clipped to [0, 1] for a probability), and
    the report's where it differs from that (a probability: `stats.probability_interval`; a saving:
    `savings.saving_interval`)."""
    out = {"percentile": percentile_interval(replicates, confidence),
           "expanded percentile": expanded_percentile_interval(replicates, n, confidence)}
    low, high = seed_interval(point, replicates, n, confidence)
    if kind == "probability":
        out["t-widened"] = (max(low, 0.0), min(high, 1.0))
        out["report"] = probability_interval(point, replicates, n, confidence)
    elif kind == "saving":
        out["t-widened"] = (min(low, 1.0), min(high, 1.0))
        out["report"] = saving_interval(np.concatenate([[point], replicates]), plausible, 0, n, confidence)
    else:
        out["report"] = (low, high)
    return out


def simulate(c: Components, n_data: int, n_boot: int, seed: int, tolerances=TOLERANCES, n_seeds: int = 5,
             confidence: float = 0.95, truth_seeds: int = TRUTH_SEEDS) -> pd.DataFrame:
    """Coverage of every statistic and interval method on `n_data` simulated data sets of `n_seeds`
    seeds, each with `n_boot` paired replicates (the report's estimators, practitioner's tuners).

    Statistics, each computed by the report's code (`analysis.selection`, `analysis.tuner_models`) and its truth:
        Δ vs tuned   arm − the baseline's validation-selected configuration (re-selected in every replicate);
                     truth μ^T_arm − μ^T_{j*}, j* = argmax_j μ^V_j
        P(reach τ)   of each tuner at a fixed budget; truth: the model's probability over seeds (Monte Carlo,
                     TRUTH_SEEDS seeds) with τ* = μ^T_{j*} − tolerance
        E[test]      the practitioner's expected selected test score at that budget
        saving       of the arm against each tuner at τ (FLOPs); truth from the true E_k, τ* and μ^T_arm
    Interval methods: the plain and the expanded percentile intervals, the t-widened one and the report's
    (`stats.seed_interval`; for a probability `stats.probability_interval`). Coverage = the share of data
    sets whose interval holds the truth, with its Monte Carlo standard error.

    Out: one row per (statistic, interval): setting, statistic, tuner, tolerance, budget, interval,
    truth, coverage, mc_se (binomial SE of the coverage), median_width (∞ where an end is infinite), n_data,
    n_boot, n_seeds.
    """
    rng = np.random.default_rng(seed)
    true = truth(c, tolerances, rng, truth_seeds)
    budgets = fixed_budgets(c.n_configs)
    hits: dict[tuple, list] = {}
    widths: dict[tuple, list] = {}
    targets: dict[tuple, float] = {}

    def record(key, point, replicates, target, kind="", plausible=None):
        targets[key] = target
        for method, (low, high) in _intervals(point, replicates, n_seeds, confidence, kind, plausible).items():
            # a saving between fixed costs is computed along two paths (the estimate, the truth): a rounding
            # difference must not count as a miss
            slack = 1e-9 * max(1.0, abs(target)) if math.isfinite(target) else 0.0
            covered = (low - slack <= target <= high + slack) if math.isfinite(target) else (low == target or high == target)
            hits.setdefault((*key, method), []).append(bool(covered))
            width = high - low if math.isfinite(low) and math.isfinite(high) else math.inf
            widths.setdefault((*key, method), []).append(width)

    for _ in range(n_data):
        data = draw(c, n_seeds, rng)
        grid, arm = grid_and_arm(c, data)
        present = np.ones((c.n_configs + 1, n_seeds), dtype=bool)
        weights = with_observed(draw_counts(present, n_boot, rng))
        tuned = tau_rows(grid, weights, "mean", 0.0)
        arm_score = seed_stat(arm.test[None], arm.present[None], weights, "mean")[:, 0]
        delta = arm_score - tuned
        record(("Δ vs tuned", "", 0.0, -1), delta[0], delta[1:], true.delta_tuned)
        tuners = {t.name: t for t in grid_tuners(grid, weights, "mean", PRACTITIONER, rng)}
        outcome = arm_outcome(arm, weights, "mean", PRACTITIONER)
        for name, tuner in tuners.items():
            k = budgets[name]
            record(("E[test]", name, 0.0, k + 1 if name != GRID else c.n_configs), tuner.expected_test[0, k],
                   tuner.expected_test[1:, k], float(true.expected_test[name][k]))
        for tolerance in tolerances:
            tau = tau_rows(grid, weights, "mean", tolerance)
            for name, tuner in tuners.items():
                k = budgets[name]
                p = tuner.p_reach(tau)[:, k]
                record(("P(reach τ)", name, tolerance, k + 1 if name != GRID else c.n_configs), p[0], p[1:],
                       float(true.p_reach[(tolerance, name)][k]), "probability")
                _, cost = cost_to_reach(tuner.expected_test, tuner.expected_cost, tau)
                paid = np.where(arm_score >= tau - 1e-12, outcome.cost[:, 0], np.inf)
                value = savings(paid, cost[:, 0])
                record(("saving", name, tolerance, -1), value[0], value[1:], true.savings[(tolerance, name)], "saving",
                       plausible_costs(tuner, tau, outcome, n_seeds, n_seeds, confidence))
    rows = []
    for (statistic, tuner, tolerance, budget, method), covered in hits.items():
        coverage = float(np.mean(covered))
        rows.append({"setting": c.setting, "statistic": statistic, "tuner": tuner, "tolerance": tolerance,
                     "budget": budget if budget > 0 else "", "interval": method,
                     "truth": targets[(statistic, tuner, tolerance, budget)], "coverage": coverage,
                     "mc_se": math.sqrt(max(coverage * (1 - coverage), 1e-12) / len(covered)),
                     "median_width": float(np.median(widths[(statistic, tuner, tolerance, budget, method)])),
                     "n_data": len(covered), "n_boot": n_boot, "n_seeds": n_seeds})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Command line: `python -m analysis coverage` (wired in analysis/__main__.py)


def coverage_markdown(table: pd.DataFrame, components: pd.DataFrame, command: str) -> str:
    """coverage.md: the fitted components, then per setting statistic × interval method (coverage ± MC SE)."""
    lines = ["# Coverage of the report's intervals at 5 seeds, by simulation", "",
             f"Made by `{command}` (docs/design.md §11a; model: `analysis/coverage_model.py`, simulation and statistics: `analysis/coverage.py`).", "",
             "## Fitted variance components (standard deviations, gold-reward units)", "",
             to_markdown(components.map(lambda v: ("–" if math.isnan(v) else f"{v:.4f}") if isinstance(v, float)
                                        else str(v))), ""]
    methods = [m for m in INTERVALS if m in set(table["interval"])]
    for setting, rows in table.groupby("setting", sort=False):
        first = rows.iloc[0]
        lines += [f"## {setting}", "", f"{int(first['n_data'])} simulated data sets of {int(first['n_seeds'])} seeds, "
                  f"{int(first['n_boot'])} paired replicates each; nominal 0.95. Coverage ± Monte Carlo SE.", ""]
        keys = ["statistic", "tuner", "tolerance", "budget"]
        wide = rows.pivot_table(index=keys, columns="interval", values="coverage", aggfunc="first", sort=False)
        se = rows.pivot_table(index=keys, columns="interval", values="mc_se", aggfunc="first", sort=False)
        truth = rows.groupby(keys, sort=False)["truth"].first()
        shown = pd.DataFrame({"statistic": [k[0] for k in wide.index], "tuner": [k[1] or "–" for k in wide.index],
                              "tol.": [f"{k[2]:g}" for k in wide.index],
                              "budget": [str(k[3]) if str(k[3]) not in ("", "nan") else "–" for k in wide.index],
                              "truth": [f"{truth.loc[k]:.3f}" for k in wide.index]})
        for method in methods:
            shown[method] = [("–" if pd.isna(wide.loc[k, method]) else f"{wide.loc[k, method]:.3f} ± {se.loc[k, method]:.3f}")
                             for k in wide.index]
        lines += [to_markdown(shown), ""]
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("runs_dir", type=Path, help="results folder whose records the model is fitted on")
    parser.add_argument("--out", type=Path, required=True, help="folder for coverage.csv, coverage.md, components.csv")
    parser.add_argument("--metric", default="gold_reward", help="score column (default: gold_reward)")
    parser.add_argument("--data-sets", type=int, default=1000, help="simulated data sets per setting (default: 1000)")
    parser.add_argument("--n-boot", type=int, default=4000, help="paired replicates per data set (default: 4000, "
                                                                  "as the report)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per simulated data set (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the simulation (default: 0)")


def run(args) -> int:
    """The `coverage` subcommand: fit, simulate, write <out>/coverage.csv, coverage.md, components.csv."""
    try:
        fitted = fit_folder(args.runs_dir, args.metric)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tables = [simulate(c, args.data_sets, args.n_boot, args.seed + i, n_seeds=args.seeds) for i, c in enumerate(fitted)]
    table = pd.concat(tables, ignore_index=True)
    components = components_table(fitted)
    args.out.mkdir(parents=True, exist_ok=True)
    command = (f"python -m analysis coverage {shlex.quote(str(args.runs_dir))} --out {shlex.quote(str(args.out))} "
               f"--data-sets {args.data_sets} --n-boot {args.n_boot} --seeds {args.seeds} --seed {args.seed}")
    table.to_csv(args.out / "coverage.csv", index=False)
    components.to_csv(args.out / "components.csv", index=False)
    (args.out / "coverage.md").write_text(coverage_markdown(table, components, command))
    report = table[table["interval"] == "report"]
    worst = report.loc[report["coverage"].idxmin()]
    print(f"coverage of the report's intervals: min {worst['coverage']:.3f} ({worst['setting']}, {worst['statistic']}"
          f"{', ' + worst['tuner'] if worst['tuner'] else ''}), mean {report['coverage'].mean():.3f}")
    print(f"written: {args.out / 'coverage.md'}, coverage.csv, components.csv")
    return 0
