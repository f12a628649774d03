"""`python -m analysis tuners <runs dir>`: Optuna's tuners replayed against the records, IMI's saving against
the cheapest tuner that reaches τ, and time to τ (docs/design.md §11, "Tuners replayed with Optuna").

Owns the command's options and its output: <out>/tuners.md, <out>/tables/<name>.csv and
<out>/figures/time_to_target.png and .pdf; the numbers come from `analysis.tuner_benchmark` and
`analysis.time_to_target`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.costs import CONVENTIONS, DEFAULT_CONVENTION
from analysis.headline_views import COMPETITORS, declared_defaults
from analysis.live_tuning import split_trials
from analysis.load import LoadedRuns, load_runs
from analysis.metrics import check_metric
from analysis.optuna_replay import DEFAULT_TUNERS, HYPERBAND_REDUCTION, SUCCESSIVE_HALVING_REDUCTION
from analysis.plots import _hide_unused, _legend, _panels, _style, method_color, save_figure
from analysis.report import DEFAULT_TOLERANCES, resolve_metric
from analysis.seed_arrays import prepare
from analysis.selection import STATS, seed_bootstrap
from analysis.stats import RECOMMENDED_REPLICATES
from analysis.tables import fmt_cost, fmt_count, fmt_score, fmt_share, to_markdown, with_interval
from analysis.time_to_target import time_to_target, time_to_target_figure
from analysis.tuner_benchmark import tuner_benchmark


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", type=Path, help="runs root, sweep folder or results folder with run records")
    parser.add_argument("--out", type=Path, help="output folder (default: <runs dir>/tuners)")
    parser.add_argument("--metric", help="score column (default: as for `report`)")
    parser.add_argument("--baseline", default="dpo", help="the tuned baseline whose grid is replayed (default: dpo)")
    parser.add_argument("--tolerance", type=float, nargs="+", default=list(DEFAULT_TOLERANCES), metavar="TOL",
                        help="τ = the tuned baseline's test score − TOL (default: 0 0.05)")
    parser.add_argument("--replicates", type=int, default=200,
                        help="Optuna studies per tuner and setting, spread evenly over the seeds (default: 200)")
    parser.add_argument("--trials", type=int, help="trials per study (default: three times the grid size)")
    parser.add_argument("--tuners", nargs="+", metavar="NAME", choices=[t.name for t in DEFAULT_TUNERS],
                        help="Optuna tuners to replay (default: all of " + "; ".join(t.name for t in DEFAULT_TUNERS) + ")")
    parser.add_argument("--traps", action="store_true", help="also replay on trap settings (default: clean only)")
    parser.add_argument("--convention", choices=CONVENTIONS, default=DEFAULT_CONVENTION,
                        help=f"shared-build cost convention (default: {DEFAULT_CONVENTION}, as for `report`)")
    parser.add_argument("--stat", choices=STATS, default="mean", help="seed statistic of τ (default: mean)")
    parser.add_argument("--n-boot", type=int, default=RECOMMENDED_REPLICATES,
                        help=f"bootstrap replicates over seeds (default: {RECOMMENDED_REPLICATES}, as for `report`)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default: 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and first sampler seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    try:
        out = write_tuners(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"tuners: {out}")
    return 0


def replayable_runs(loaded: LoadedRuns, metric: str, convention: str) -> pd.DataFrame:
    """The runs the replays read: annotated, charged, with the metric; the live studies' trials left out, as
    in the report (`live_tuning.split_trials`)."""
    runs, _ = split_trials(loaded, convention)
    return runs[runs[metric].notna()]


def write_tuners(args: argparse.Namespace) -> Path:
    """Compute everything and write it under args.out; returns the path of tuners.md."""
    if args.replicates < 1 or args.n_boot < 10:
        raise ValueError("--replicates must be >= 1 and --n-boot >= 10")
    loaded = load_runs(args.runs_dir)
    metric = resolve_metric(loaded.runs, args.metric)
    check_metric(loaded.runs, metric)
    runs = replayable_runs(loaded, metric, args.convention)
    boot = seed_bootstrap(runs, args.n_boot, args.seed)
    specs = [t for t in DEFAULT_TUNERS if not args.tuners or t.name in args.tuners]
    start = time.perf_counter()
    result = tuner_benchmark(prepare(runs, metric, args.convention), boot, metric, args.baseline, args.tolerance,
                             args.stat, args.convention, args.confidence, specs, args.replicates, args.trials,
                             args.seed, args.traps)
    table, curves, notes = time_to_target(runs, boot, metric, args.baseline, args.tolerance, args.stat,
                                          args.confidence, args.traps)
    elapsed = time.perf_counter() - start
    out = args.out or args.runs_dir / "tuners"
    tables, figures = out / "tables", out / "figures"
    for name, frame in (("tuner_replay_curves", result.curves), ("tuner_replay_reach", result.reach),
                        ("tuner_replay_savings", result.savings), ("tuner_replay_agreement", result.agreement),
                        ("time_to_target", table)):
        tables.mkdir(parents=True, exist_ok=True)
        frame.to_csv(tables / f"{name}.csv", index=False)
    shown = figure_arms(runs)
    if not curves.empty:
        save_figure(time_to_target_figure(curves, table, shown), figures, "time_to_target")
    if not result.curves.empty:
        save_figure(tuners_figure(result.curves, result.savings, shown), figures, "tuner_replay")
    text = tuners_markdown(result, table, metric, args, elapsed, notes + result.notes, not curves.empty)
    (out / "tuners.md").write_text(text)
    return out / "tuners.md"


LEAD_TEXT = ("The best tuner is the one whose cost to reach τ (the cheapest budget whose expected test score reaches "
             "τ) is lowest, among the Optuna replays and the exact hand-written tuners; in every bootstrap replicate "
             "it is chosen again. Saving = 1 − cost(arm's one run at its defaults) / cost(best tuner to τ); −∞ "
             "(*misses τ*) where the arm's score does not reach τ.")


def lead_table(result) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(raw, shown): each fixed arm's saving against the cheapest tuner to reach τ, per setting and tolerance —
    the number `tuners.md` and the report (`--optuna-tuners`) lead with."""
    best = result.savings[result.savings["tuner"] == "best tuner"] if not result.savings.empty else result.savings
    shown = pd.DataFrame({
        "setting": best["setting"], "tol.": best["tolerance"].map(lambda t: f"{t:g}"),
        "τ": best["tau"].map(fmt_score), "best tuner": best["best_tuner"],
        "its FLOPs [CI]": _ci(best, "tuner_flops", fmt_cost), "arm": best["arm"],
        "arm P(reach τ) [CI]": _ci(best, "arm_p_reach", fmt_share), "arm FLOPs": best["arm_flops"].map(fmt_cost),
        "saving (FLOPs) [CI]": _ci(best, "savings_flops", fmt_share)})
    return best, shown


def _ci(frame: pd.DataFrame, column: str, fmt) -> list[str]:
    return [with_interval(v, lo, hi, fmt) for v, lo, hi in
            zip(frame[column], frame[f"{column}_ci_low"], frame[f"{column}_ci_high"])]


def tuners_markdown(result, ttt: pd.DataFrame, metric: str, args, elapsed: float, notes: list[str],
                    figure: bool) -> str:
    """tuners.md: the lead table (the cheapest tuner to τ and each fixed arm's saving against it), every tuner's
    cost to τ, the agreement check, time to τ, and how the numbers were made."""
    conf = f"{100 * args.confidence:g}%"
    per_tuner = {}
    for (setting, name), seconds in result.seconds.items():
        per_tuner.setdefault(name, []).append(seconds)
    lines = [f"# Tuners replayed against the records: `{metric}`", "",
             f"- Runs: `{args.runs_dir}`; baseline `{args.baseline}`; τ = the test score of its validation-selected "
             f"configuration ({args.stat} over seeds) − tolerance ({', '.join(f'{t:g}' for t in args.tolerance)}).",
             f"- Optuna replays: {args.replicates} studies per tuner and setting, "
             f"{args.trials or 'three times the grid size in'} trials each; study r runs at seed r mod S (paired across tuners and with the fixed arms) with sampler "
             "seed r; β a categorical over the recorded grid (or its position on the grid: *ordinal β*); a trial is "
             "answered from that β's recorded run at the study's one seed, reporting its validation curve to the "
             f"pruner (successive halving η = {SUCCESSIVE_HALVING_REDUCTION}, Hyperband η = {HYPERBAND_REDUCTION}, "
             "one resource = one curve point) and its final validation score to the sampler; a stopped trial costs "
             "the curve's cumulative cost up to its stop; a repeated β that already finished is answered from its "
             "record at no cost.",
             f"- Intervals: {conf}, the report's paired seed bootstrap ({args.n_boot} replicates): every number is "
             "recomputed with the seeds drawn with replacement (τ, the arms and every tuner at the same draw), and an "
             "Optuna tuner enters as the mean of its studies at each drawn seed; `seed_interval` (expanded percentile "
             "∪ t-type, n = seeds), a probability at least its Wilson interval, a saving widened as in the report. "
             "The Monte-Carlo error of the studies (mc_se in the tables) is separate and small beside it.",
             "- Seconds per tuner (all settings): " + ", ".join(f"{k} {sum(v):.0f} s" for k, v in per_tuner.items())
             + f"; everything {elapsed:.0f} s.", ""]
    lines += ["## IMI's saving against the cheapest tuner to reach τ", "", LEAD_TEXT, ""]
    best, shown = lead_table(result)
    lines.append(to_markdown(shown) if len(best) else "No setting has both a replayable grid and a fixed arm.")
    reach = result.reach
    lines += ["", "## Each tuner's cost to reach τ", "",
              "Budget in trials (for grid search: the grid; for random search and successive halving: k and n); "
              "– where no budget reaches τ in expectation; P(reach τ) at that budget, or at the largest one.", ""]
    if len(reach):
        lines.append(to_markdown(pd.DataFrame({
            "setting": reach["setting"], "tol.": reach["tolerance"].map(lambda t: f"{t:g}"), "tuner": reach["tuner"],
            "source": reach["source"], "budget": reach["budget"].map(fmt_count),
            "FLOPs [CI]": _ci(reach, "flops", fmt_cost), "E[test]": reach["expected_test"].map(fmt_score),
            "P(reach τ) [CI]": _ci(reach, "p_reach", fmt_share), "P at": reach["p_reach_budget"].map(fmt_count)})))
    agreement = result.agreement
    lines += ["", "## The replay against the exact expectations (random search)", ""]
    if len(agreement):
        for check, rows in agreement.groupby("check", sort=False):
            lines.append(f"- {check}: at {len(rows)} budgets × settings the exact value lies inside the replay's "
                         f"interval at {int(rows['within_interval'].sum())}; largest |replay − exact| / mc_se = "
                         f"{rows['z'].abs().max():.2f}, largest |replay − exact| = "
                         f"{(rows['replay'] - rows['exact']).abs().max():.4f}.")
    else:
        lines.append("Not run (Optuna random was not replayed).")
    lines += ["", "## Time to τ", "",
              "τ on the validation curve's own prompt sample: the tuned baseline's final curve point − tolerance. "
              "FLOPs = mean cumulative training FLOPs at the first curve point whose mean over seeds reaches τ (∞: "
              "never); ratio = that over the tuned baseline's, paired by seed; P(run reaches) = share of seeds whose "
              "own curve reaches τ by the end.", ""]
    if len(ttt):
        lines.append(to_markdown(pd.DataFrame({
            "setting": ttt["setting"], "tol.": ttt["tolerance"].map(lambda t: f"{t:g}"),
            "τ (curve)": ttt["tau"].map(fmt_score), "entry": ttt["entry"],
            "fraction": ttt["fraction"].map(fmt_count), "steps": ttt["steps"].map(fmt_count),
            "FLOPs [CI]": _ci(ttt, "flops", fmt_cost), "÷ tuned [CI]": _ci(ttt, "flops_ratio", fmt_count),
            "P(run reaches) [CI]": _ci(ttt, "p_runs_reach", fmt_share)})))
    if figure:
        lines += ["", "![Time to τ](figures/time_to_target.png)"]
    if len(result.curves):
        lines += ["", "## Every tuner against its cost", "",
                  "![Tuners: expected selected test score against expected FLOPs](figures/tuner_replay.png)"]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    lines += ["", "Tables: `tables/tuner_replay_{curves,reach,savings,agreement}.csv`, `tables/time_to_target.csv`."]
    return "\n".join(lines) + "\n"


def figure_arms(runs: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(setting, arm) -> legend label of the fixed arms the figure draws: each IMI method and each competitor
    (β-DPO) at its declared defaults, named after its method as in the headline; a method with no run at its
    declared defaults on a setting keeps every entry there, under the report's names. Other fixed arms (the
    signal controls, cDPO, …) stay in the tables, where a star each would bury the tuners' curves."""
    fixed = runs[(runs["arm_kind"] == "fixed") & (runs["is_imi"].astype(bool) | runs["method.name"].isin(COMPETITORS))]
    fixed = fixed.drop_duplicates(["setting", "arm"])
    declared = declared_defaults(runs)
    shown = {}
    for (setting, method), rows in fixed.groupby(["setting", "method.name"], sort=True):
        at = [arm for arm in rows["arm"] if declared.get((setting, arm), False)]
        shown.update({(setting, arm): method for arm in at} if at else {(setting, arm): arm for arm in rows["arm"]})
    return shown


def tuners_figure(curves: pd.DataFrame, saved: pd.DataFrame, shown: dict[tuple[str, str], str] | None = None) -> Figure:
    """One panel per setting: every tuner's expected selected test score against its expected FLOPs (one point
    per budget; the exact hand-written tuners dashed), τ at each tolerance, and each fixed arm's one run (those
    `shown` names, under its labels; None: every fixed arm, under its own name).

    In: `BenchmarkResult.curves` and `.savings`.
    """
    settings = sorted(curves["setting"].unique())
    fig, axes = _panels(len(settings), "Tuners replayed against the records: expected selected test score vs FLOPs")
    palette = dict(zip(sorted(curves["tuner"].unique()), [f"C{i}" for i in range(10)] * 3))
    handles: dict[str, object] = {}
    for ax, setting in zip(axes.ravel(), settings):
        _style(ax)
        for tuner, rows in curves[curves["setting"] == setting].groupby("tuner", sort=True):
            line = "--" if rows["source"].iloc[0] == "exact" else "-"
            ax.plot(rows["expected_flops"], rows["expected_test"], marker="o", markersize=3, linestyle=line,
                    color=palette[tuner], linewidth=1.2)
            handles.setdefault(tuner, Line2D([], [], color=palette[tuner], marker="o", markersize=3, linestyle=line,
                                             label=tuner))
        arms = saved[(saved["setting"] == setting) & (saved["tuner"] == "best tuner")] if len(saved) else saved
        for tolerance, tau in (arms.groupby("tolerance")["tau"].first().items() if len(arms) else ()):
            ax.axhline(tau, color="black", linestyle=":", linewidth=1.0)
            ax.annotate(f"τ − {tolerance:g}" if tolerance else "τ", (ax.get_xlim()[0], tau), fontsize=7, va="bottom")
        for arm, row in (arms.groupby("arm").first().iterrows() if len(arms) else ()):
            if shown is not None and (setting, arm) not in shown:
                continue
            label = arm if shown is None else shown[(setting, arm)]
            color = method_color(label)
            ax.plot([row["arm_flops"]], [row["arm_score"]], marker="*", markersize=11, color=color, linestyle="none")
            handles.setdefault(f"arm {label}", Line2D([], [], color=color, marker="*", markersize=10, linestyle="none",
                                                      label=f"{label} (one run at defaults)"))
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel("expected FLOPs of the procedure (builds included)")
        ax.set_ylabel("expected selected test score")
    _hide_unused(axes, len(settings))
    _legend(fig, list(handles.values()))
    return fig
