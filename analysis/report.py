"""The analysis report: runs -> tables (CSV, LaTeX), figures (PNG, PDF) and report.md (DESIGN §11).

Composes the pure functions of `grid`, `metrics`, `costs`, `aggregate` and `plots`; it owns only the
choice of what to show, the wording of report.md (with the definition of every number and the cost
convention in force) and the file layout:
    <out>/report.md
    <out>/tables/<name>.csv and <name>.tex
    <out>/figures/<name>.png and <name>.pdf
A sweep that lacks some methods (e.g. only DPO runs, or no IMI runs) gets every table it can support;
each one it cannot is skipped with a note in report.md, never an exception.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import plots
from analysis.aggregate import comparison_entries, improvement_table, iqm_table, normalize_scores
from analysis.costs import charged_costs, cost_to_reach_table, savings_summary, shared_build_costs
from analysis.grid import annotate
from analysis.load import LoadedRuns, read_history
from analysis.metrics import STATS, best_of_grid, check_metric, default_regret, expected_best_table, seed_summary
from analysis.tables import (display, fmt_beta, fmt_cost, fmt_count, fmt_score, fmt_share, fmt_text, to_markdown,
                             with_interval, write_table)

DEFAULT_METRIC = "gold_reward"
DEFAULT_TOLERANCES = (0.0, 0.05)
CONVENTION_TEXT = {
    "amortize": ("amortised: each shared cache (SFT checkpoint, dataset, reference log-probs) is charged once, "
                 "its build cost divided equally over the loaded runs that used it"),
    "per_run": ("charged per run: every run pays the full build cost of every shared cache it used, as if it "
                "had run alone"),
}
DELTA_PMI_KEYS = ("imi/delta_pmi_mean", "imi/delta_pmi")
REGULATION_KEYS = tuple(f"imi/effective_{name}{suffix}" for name in ("margin", "beta", "weight") for suffix in ("_mean", ""))


@dataclass(frozen=True)
class ReportOptions:
    """What the report computes. metric None = the runs' `objective` config if they agree, else gold_reward."""

    metric: str | None = None
    baseline: str = "dpo"
    tolerances: tuple[float, ...] = DEFAULT_TOLERANCES
    convention: str = "amortize"
    stat: str = "mean"
    n_boot: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if self.convention not in CONVENTION_TEXT:
            raise ValueError(f"cost convention must be one of {sorted(CONVENTION_TEXT)}, got {self.convention!r}")
        if self.stat not in STATS:
            raise ValueError(f"stat must be one of {STATS}, got {self.stat!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.n_boot < 10:
            raise ValueError(f"n_boot must be at least 10, got {self.n_boot}")
        if any(t < 0 or not math.isfinite(t) for t in self.tolerances) or not self.tolerances:
            raise ValueError(f"tolerances must be finite and >= 0, got {list(self.tolerances)}")


@dataclass
class Report:
    out_dir: Path
    report_md: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def resolve_metric(runs: pd.DataFrame, requested: str | None) -> str:
    """The score column: `requested`, else the runs' single `objective` config value, else gold_reward."""
    if requested:
        return requested
    if "objective" in runs.columns:
        objectives = runs["objective"].dropna().unique()
        if len(objectives) == 1:
            return str(objectives[0])
    return DEFAULT_METRIC


def imi_trace_frame(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """ΔPMI and effective-regulation traces of the IMI runs, read from their history.jsonl.

    Out: (traces, problems). traces: one row per (run, step): setting, arm, method.name, run_id, step,
    delta_pmi, regulation, regulation_name ("effective_margin" | "effective_beta" | "effective_weight" |
    None). Runs with no run directory (W&B) or no IMI keys in their history are left out; a history that
    cannot be read is left out too, and its error is one of `problems`.
    """
    frames, problems = [], []
    for _, run in runs[(runs["arm_kind"] == "fixed") & runs["run_dir"].notna()].iterrows():
        try:
            history = read_history(run["run_dir"])
        except (ValueError, OSError) as err:
            problems.append(str(err))
            continue
        delta = next((k for k in DELTA_PMI_KEYS if k in history.columns), None)
        if history.empty or delta is None or "step" not in history.columns:
            continue
        regulation = next((k for k in REGULATION_KEYS if k in history.columns), None)
        frames.append(pd.DataFrame({
            "setting": run["setting"], "arm": run["arm"], "method.name": run["method.name"], "run_id": run["run_id"],
            "step": history["step"], "delta_pmi": pd.to_numeric(history[delta], errors="coerce"),
            "regulation": pd.to_numeric(history[regulation], errors="coerce") if regulation else math.nan,
            "regulation_name": regulation.removeprefix("imi/").removesuffix("_mean") if regulation else None,
        }))
    columns = ["setting", "arm", "method.name", "run_id", "step", "delta_pmi", "regulation", "regulation_name"]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)), problems


def comparison_table(entries: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per setting and entry: n_runs, config, mean, median, q25, q75, collapse_rate, and
    delta_mean = mean − the mean of "<baseline> (tuned)" on that setting (NaN without one)."""
    rank = {"tuned": 0, "fixed": 1, "default": 2}
    grouped = entries.groupby(["setting", "entry"], sort=False)
    table = grouped.agg(entry_kind=("entry_kind", "first"), config=("config_label", lambda v: ", ".join(sorted(set(v)))),
                        n_runs=("score", "size"), mean=("score", "mean"), median=("score", "median"),
                        q25=("score", lambda v: v.quantile(0.25)), q75=("score", lambda v: v.quantile(0.75)),
                        collapse_rate=("collapsed", "mean")).reset_index()
    reference = table[table["entry"] == f"{baseline} (tuned)"].set_index("setting")["mean"]
    table["delta_mean"] = table["mean"] - table["setting"].map(reference)
    table["_rank"] = table["entry_kind"].map(rank) + (table["entry"] != f"{baseline} (tuned)") * 0.5
    return table.sort_values(["setting", "_rank", "mean"], ascending=[True, True, False]).drop(columns="_rank").reset_index(drop=True)


def _expected_best_rows(curves: pd.DataFrame) -> pd.DataFrame:
    """k = 1, 2, ⌈N/2⌉, N for each arm: the rows report.md shows (the CSV has every k)."""
    keep = curves.apply(lambda r: r["k"] in {1, 2, math.ceil(r["n_configs"] / 2), r["n_configs"]}, axis=1)
    return curves[keep] if len(curves) else curves


class _Writer:
    """Collects report.md sections and the files written, so build_report reads top to bottom."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.tables = out_dir / "tables"
        self.figures = out_dir / "figures"
        self.sections: list[str] = []
        self.files: list[Path] = []
        self.notes: list[str] = []

    def text(self, text: str) -> None:
        self.sections.append(text.strip() + "\n")

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.sections.append(f"> **Skipped:** {text}\n")

    def table(self, name: str, raw: pd.DataFrame, shown: pd.DataFrame, definition: str) -> None:
        self.files += write_table(raw, shown, self.tables, name, comment=definition)
        self.sections.append(to_markdown(shown) + f"\n\n*Files: `tables/{name}.csv`, `tables/{name}.tex`.*\n")

    def figure(self, name: str, fig, caption: str) -> None:
        self.files += plots.save_figure(fig, self.figures, name)
        self.sections.append(f"![{caption}](figures/{name}.png)\n\n*{caption}* (`figures/{name}.png`, `.pdf`)\n")


def build_report(loaded: LoadedRuns, out_dir: str | Path, options: ReportOptions = ReportOptions(),
                 source: str = "") -> Report:
    """Compute every table and figure the runs support and write them under `out_dir`.

    Raises ValueError (naming the metric) only when the chosen metric is absent from every record or is
    lower-is-better; anything a partial sweep lacks becomes a note in report.md.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    w = _Writer(out_dir)
    metric = resolve_metric(loaded.runs, options.metric)
    runs = loaded.runs
    if not runs.empty:
        check_metric(runs, metric)
    o = options
    conf = f"{100 * o.confidence:g}%"

    w.text(f"# Tuning-cost report: {metric}\n\n"
           f"- Runs: `{source or loaded.source}` — {loaded.skip_summary()}.\n"
           f"- Score: `{metric}` (higher is better); a configuration's score is the **{o.stat}** over its seeds.\n"
           f"- Baseline: `{o.baseline}`; target τ = its best-of-grid − tolerance, tolerances "
           f"{', '.join(f'{t:g}' for t in o.tolerances)} (in `{metric}` units).\n"
           f"- Cost convention: **{o.convention}** — {CONVENTION_TEXT[o.convention]}.\n"
           f"- Intervals: {conf} percentile bootstrap, {o.n_boot} replicates, random seed {o.seed}.")
    if runs.empty:
        w.note("no completed runs were loaded, so there is nothing to analyse (see the skipped runs below).")
        _skipped_section(w, loaded)
        return _finish(w)

    # charge shared caches before any run is dropped: a run without the metric still used (and shared) them
    runs = annotate(runs, loaded.config_columns)
    runs = runs.join(charged_costs(runs, o.convention))
    missing = runs[metric].isna()
    if missing.any():
        w.notes.append(f"{int(missing.sum())} completed runs have no `{metric}` and are left out.")
        w.text(f"> {int(missing.sum())} completed runs have no `{metric}` and are left out of every table.")
        runs = runs[~missing]
    if runs.empty:
        w.note(f"no completed run reports `{metric}`.")
        _skipped_section(w, loaded)
        return _finish(w)
    has_cost = bool(runs["charged.device_hours"].notna().any())
    summary = seed_summary(runs, metric)
    entries = comparison_entries(runs, summary, metric, o.stat)
    has_baseline = bool(((summary["method.name"] == o.baseline) & (summary["arm_kind"] == "grid")).any())
    settings = sorted(runs["setting"].unique())
    arms = runs.groupby("arm")["arm_kind"].first()
    w.text(f"- Settings (dataset · model · setup): {', '.join(settings)}.\n"
           f"- Arms: {', '.join(f'{a} ({k})' for a, k in arms.items())} — *grid* = a baseline tuned over its "
           f"configurations, *fixed* = an IMI method at its defaults.")

    _comparison_section(w, entries, o, metric, has_baseline)
    _cost_section(w, runs, o, metric, has_baseline, has_cost)
    curves = _expected_best_section(w, runs, o, metric, has_cost)
    grid_table = _grid_section(w, summary, o, metric)
    _aggregate_section(w, entries, summary, o, has_baseline)
    _configurations_section(w, runs, summary, metric)
    _figures_section(w, runs, summary, curves, grid_table, o, metric, has_cost)
    _shared_costs_section(w, runs, o)
    _skipped_section(w, loaded)
    return _finish(w)


def _comparison_section(w: _Writer, entries: pd.DataFrame, o: ReportOptions, metric: str, has_baseline: bool) -> None:
    w.text("## 1. Tuned baselines vs IMI methods at their defaults\n\n"
           f"Per setting: *tuned* = the baseline's runs at its best configuration (highest {o.stat} over seeds, "
           "chosen on these same runs, i.e. an oracle-tuned grid); *default β* = its runs at the published "
           "default β; IMI arms = their runs at fixed defaults. Mean, median and interquartile range are over "
           "seeds; the collapse rate is the share of runs flagged `collapsed` (a mean over bimodal outcomes "
           "mostly measures the collapse rate, so all three are shown). "
           f"Δ mean = mean − the mean of `{o.baseline} (tuned)` on the same setting.")
    table = comparison_table(entries, o.baseline)
    shown = display(table, {"setting": ("setting", fmt_text), "entry": ("arm", fmt_text), "config": ("config", fmt_text),
                            "n_runs": ("runs", fmt_count), "mean": ("mean", fmt_score), "median": ("median", fmt_score),
                            "q25": ("q25", fmt_score), "q75": ("q75", fmt_score),
                            "collapse_rate": ("collapse rate", fmt_share), "delta_mean": ("Δ mean", fmt_score)})
    w.table("comparison", table, shown, f"{metric}: tuned baselines vs IMI methods at defaults (over seeds)")
    if not has_baseline:
        w.text(f"> No `{o.baseline}` grid in these runs, so Δ mean is empty.")


def _cost_section(w: _Writer, runs: pd.DataFrame, o: ReportOptions, metric: str, has_baseline: bool, has_cost: bool) -> None:
    w.text(f"## 2. Cost to reach the tuned `{o.baseline}` (τ = best-of-grid − tolerance)\n\n"
           "A *trial* is one run of one configuration. A grid is tuned by random search over its configurations "
           "without replacement until a trial's configuration score reaches τ: with N configurations of which m "
           "reach τ, E[trials] = (N+1)/(m+1) and E[cost] = Σ_{fail} c_j/(m+1) + Σ_{reach} c_j/m, where c_j is "
           "the mean charged cost of one run of configuration j. An IMI arm is one run. *Savings* = "
           f"1 − E[cost of the arm] / E[cost of `{o.baseline}`] at the same τ (device-hours, FLOPs; trials likewise); "
           f"*vs full grid* = 1 − E[cost of the arm] / (one run of every `{o.baseline}` configuration). "
           "\"misses τ\": the arm's score is below τ, so it never reaches it (cost ∞). P(reach) = share of "
           f"bootstrap replicates (seeds resampled within each configuration, τ recomputed) in which it reaches τ; "
           f"the {100 * o.confidence:g}% interval of the savings comes from the same replicates.")
    if not has_baseline:
        w.note(f"cost to reach τ: there is no `{o.baseline}` grid in these runs to set τ "
               "(pass --baseline with a method that was swept over β).")
        return
    if not has_cost:
        w.note("cost to reach τ: the records carry no cost (cost.device_hours), so costs cannot be compared.")
        return
    table = cost_to_reach_table(runs, metric, o.baseline, o.tolerances, o.stat, o.n_boot, o.confidence, o.seed)
    if table.empty:
        w.note("cost to reach τ: no setting has both the baseline grid and another arm.")
        return
    table = table.assign(_self=table["arm"] != o.baseline).sort_values(["setting", "tolerance", "_self", "arm"]).drop(columns="_self")
    shown = pd.DataFrame({
        "setting": table["setting"], "tol.": [f"{t:g}" for t in table["tolerance"]], "τ": [fmt_score(v) for v in table["tau"]],
        "arm": table["arm"], "P(reach)": [fmt_share(v) for v in table["p_reach"]],
        "E[trials]": [fmt_count(v) for v in table["expected_trials"]],
        "E[device-h]": [fmt_cost(v) for v in table["expected_device_hours"]],
        "E[FLOPs]": [fmt_cost(v) for v in table["expected_flops"]],
        "savings, device-h": [with_interval(r.savings_device_hours, r.savings_device_hours_ci_low,
                                            r.savings_device_hours_ci_high, fmt_share) for r in table.itertuples()],
        "savings, FLOPs": [with_interval(r.savings_flops, r.savings_flops_ci_low, r.savings_flops_ci_high, fmt_share)
                           for r in table.itertuples()],
        "savings, trials": [fmt_share(v) for v in table["savings_trials"]],
        "vs full grid, device-h": [fmt_share(v) for v in table["savings_vs_full_grid_device_hours"]],
    }).reset_index(drop=True)
    w.table("cost_to_reach", table, shown, f"Cost to reach tau = best-of-grid({o.baseline}) - tolerance; {o.convention} shared costs")
    summary = savings_summary(table, o.baseline)
    if not summary.empty:
        w.text(f"**Over all settings.** The expected cost to reach τ on every setting where both ran, summed; "
               f"savings = 1 − Σ(arm) / Σ(`{o.baseline}`). An arm that misses τ on any setting has no finite total.")
        shown = pd.DataFrame({
            "tol.": [f"{t:g}" for t in summary["tolerance"]], "arm": summary["arm"],
            "reaches τ on": [f"{r} of {n} settings" for r, n in zip(summary["n_reached"], summary["n_settings"])],
            "Σ device-h": [fmt_cost(v) for v in summary["total_device_hours"]],
            f"Σ device-h ({o.baseline})": [fmt_cost(v) for v in summary["baseline_total_device_hours"]],
            "savings, device-h": [fmt_share(v) for v in summary["savings_device_hours"]],
            "savings, FLOPs": [fmt_share(v) for v in summary["savings_flops"]],
        })
        w.table("savings_summary", summary, shown, f"Tuning-cost savings vs {o.baseline}, summed over settings")
    if set(table["arm"]) == {o.baseline}:
        w.text(f"> Only `{o.baseline}` was run, so there is nothing to compare its tuning cost with.")


def _expected_best_section(w: _Writer, runs: pd.DataFrame, o: ReportOptions, metric: str, has_cost: bool) -> pd.DataFrame:
    w.text("## 3. Expected best of k trials\n\n"
           "Ê_k = Σ_j v_(j)·C(j−1, k−1)/C(N, k): the expected best configuration score among k configurations "
           "drawn at random without replacement from an N-configuration grid (v_(j): configuration scores in "
           f"ascending order); unbiased, Ê_1 = the grid mean, Ê_N = its best. Interval: {100 * o.confidence:g}% "
           "bootstrap over seeds (each configuration's runs resampled, Ê_k recomputed). E[device-h] = k × the "
           "mean charged device-hours of one run over the grid. Shown: k = 1, 2, ⌈N/2⌉, N (the CSV has every k).")
    cost_columns = ["charged.device_hours", "charged.flops"] if has_cost else []
    curves = expected_best_table(runs, metric, cost_columns, o.stat, o.n_boot, o.confidence, o.seed)
    rows = _expected_best_rows(curves)
    columns = {"setting": ("setting", fmt_text), "arm": ("arm", fmt_text), "n_configs": ("N", fmt_count),
               "k": ("k", fmt_count)}
    shown = display(rows, columns)
    shown["Ê_k [CI]"] = [with_interval(r.expected_best, r.ci_low, r.ci_high, fmt_score) for r in rows.itertuples()]
    if has_cost:
        shown["E[device-h]"] = [fmt_cost(v) for v in rows["expected_charged.device_hours"]]
    w.table("expected_best", curves, shown, f"Expected best {metric} of k random grid trials")
    return curves


def _grid_section(w: _Writer, summary: pd.DataFrame, o: ReportOptions, metric: str) -> pd.DataFrame:
    w.text("## 4. Best-of-grid and default regret\n\n"
           f"Best = the highest configuration score ({o.stat} over seeds) on each baseline's grid, with the median "
           "and collapse rate at that configuration. Default regret = best − the score at the published default β "
           "(dpo/cdpo/robust/ipo/hinge/beta_dpo 0.1, simpo 2.0); empty when the default is not on the grid.")
    best = best_of_grid(summary, o.stat)
    if best.empty:
        w.note("best-of-grid and default regret: no baseline method was swept in these runs.")
        return best
    table = best.merge(default_regret(summary, o.stat).drop(columns="best"), on=["setting", "method.name"])
    shown = display(table, {
        "setting": ("setting", fmt_text), "method.name": ("method", fmt_text), "n_configs": ("N", fmt_count),
        "best_config_label": ("best config", fmt_text), "best": ("best", fmt_score),
        "best_median": ("median at best", fmt_score), "best_collapse_rate": ("collapse at best", fmt_share),
        "default_beta": ("default β", fmt_beta), "default_score": ("at default", fmt_score),
        "default_collapse_rate": ("collapse at default", fmt_share), "regret": ("default regret", fmt_score),
        "note": ("note", fmt_text)})
    w.table("grid", table, shown, f"Best-of-grid and default regret of {metric}")
    return table


def _aggregate_section(w: _Writer, entries: pd.DataFrame, summary: pd.DataFrame, o: ReportOptions, has_baseline: bool) -> None:
    conf = f"{100 * o.confidence:g}%"
    w.text("## 5. Across settings: IQM and probability of improvement\n\n"
           "rliable definitions (Agarwal et al., NeurIPS 2021). Scores are normalised per setting to "
           f"(v − worst)/(best − worst) with worst/best the lowest/highest configuration score of the `{o.baseline}` "
           "grid there (0 = its worst β, 1 = its best-of-grid), so settings can be pooled. IQM = mean of the middle "
           "50% of all normalised run scores pooled over settings (25% trimmed from each end). "
           f"P(X > Y) = mean over settings of the share of (run of X, run of Y) pairs where X scores higher (ties ½), "
           f"on raw scores. {conf} intervals: stratified bootstrap, runs resampled within each setting.")
    if not has_baseline:
        w.note(f"IQM and probability of improvement: there is no `{o.baseline}` grid to normalise by and compare with.")
        return
    normalized = normalize_scores(entries, summary, o.baseline, o.stat)
    unscaled = sorted(normalized.loc[normalized["normalized"].isna(), "setting"].unique())
    if unscaled:
        w.text(f"> Left out of the IQM (no `{o.baseline}` grid, or a flat one, to normalise by): {', '.join(unscaled)}.")
    table = iqm_table(normalized, "normalized", o.n_boot, o.confidence, o.seed)
    if table.empty:
        w.note(f"IQM: the `{o.baseline}` grid is flat on every setting, so scores cannot be normalised.")
    else:
        shown = display(table, {"entry": ("arm", fmt_text), "n_settings": ("settings", fmt_count), "n_runs": ("runs", fmt_count)})
        shown["IQM [CI]"] = [with_interval(r.iqm, r.iqm_ci_low, r.iqm_ci_high, fmt_score) for r in table.itertuples()]
        shown["mean [CI]"] = [with_interval(r.mean, r.mean_ci_low, r.mean_ci_high, fmt_score) for r in table.itertuples()]
        shown["median"] = [fmt_score(v) for v in table["median"]]
        shown["collapse rate"] = [fmt_share(v) for v in table["collapse_rate"]]
        w.table("aggregate_iqm", table, shown, f"IQM of scores normalised by the {o.baseline} grid, stratified bootstrap")
    reference = f"{o.baseline} (tuned)"
    improvement = improvement_table(entries, reference, "score", o.n_boot, o.confidence, o.seed)
    if improvement.empty:
        w.note(f"probability of improvement: no other arm shares a setting with `{reference}`.")
        return
    shown = display(improvement, {"entry": ("X", fmt_text), "reference": ("Y", fmt_text), "n_settings": ("settings", fmt_count)})
    shown["P(X > Y) [CI]"] = [with_interval(r.probability, r.ci_low, r.ci_high, fmt_score) for r in improvement.itertuples()]
    w.table("probability_of_improvement", improvement, shown, f"Probability of improvement over {reference}")


def _configurations_section(w: _Writer, runs: pd.DataFrame, summary: pd.DataFrame, metric: str) -> None:
    w.text("## 6. Every configuration over seeds\n\n"
           "Mean, median, interquartile range (linear quantiles), min and max over seeds, the collapse rate, the "
           "mean KL and no-EOS rate where recorded, and the mean charged device-hours of one run.")
    means = {c: c for c in ("kl", "no_eos_rate", "charged.device_hours", "charged.flops") if c in runs.columns}
    extra = runs.groupby("config_id")[list(means)].mean() if means else pd.DataFrame(index=summary["config_id"])
    table = summary.merge(extra, left_on="config_id", right_index=True, how="left")
    columns = {"setting": ("setting", fmt_text), "arm": ("arm", fmt_text), "config_label": ("config", fmt_text),
               "n_runs": ("runs", fmt_count), "mean": ("mean", fmt_score), "median": ("median", fmt_score),
               "q25": ("q25", fmt_score), "q75": ("q75", fmt_score), "min": ("min", fmt_score), "max": ("max", fmt_score),
               "collapse_rate": ("collapse rate", fmt_share)}
    if "kl" in table:
        columns["kl"] = ("KL", fmt_score)
    if "no_eos_rate" in table:
        columns["no_eos_rate"] = ("no-EOS", fmt_share)
    if "charged.device_hours" in table:
        columns["charged.device_hours"] = ("device-h/run", fmt_cost)
    w.table("configurations", table, display(table, columns), f"{metric} per configuration over seeds")


def _figures_section(w: _Writer, runs, summary, curves, grid_table, o: ReportOptions, metric: str, has_cost: bool) -> None:
    w.text("## 7. Figures")
    w.figure("beta_sensitivity", plots.beta_sensitivity(runs, summary, metric),
             f"β-sensitivity of {metric} per setting: median over seeds with IQR and every run; IMI methods at "
             "their defaults as horizontal bands")
    reference = None
    if not grid_table.empty:
        reference = grid_table[grid_table["method.name"] == o.baseline][["setting", "best"]]
    w.figure("expected_best_vs_trials", plots.expected_best(curves, "k", reference, f"{o.baseline} best-of-grid"),
             f"Expected best {metric} of k random grid trials ({100 * o.confidence:g}% bootstrap interval over seeds)")
    if has_cost:
        w.figure("expected_best_vs_device_hours", plots.expected_best(curves, "expected_charged.device_hours", reference,
                                     f"{o.baseline} best-of-grid"),
                 f"Expected best {metric} vs expected cumulative device-hours ({o.convention} shared costs)")
    else:
        w.note("expected best vs device-hours: the records carry no cost.")
    if {"gold_reward", "kl"} <= set(runs.columns) and runs[["gold_reward", "kl"]].notna().all(axis=1).any():
        w.figure("reward_kl_frontier", plots.reward_kl_frontier(runs),
                 "Reward–KL frontier: gold reward vs KL(π‖π_ref) per run, medians per configuration")
    else:
        w.note("reward–KL frontier: the runs have no gold_reward and kl metrics (no gold-reward task).")
    traces, problems = imi_trace_frame(runs)
    for problem in problems:
        w.note(f"ΔPMI traces: a history was left out: {problem}")
    if traces.empty:
        w.note("ΔPMI / effective-margin traces: no IMI run with a local history.jsonl holding imi/delta_pmi_*.")
    else:
        w.figure("imi_traces", plots.imi_traces(traces),
                 "ΔPMI and effective regulation per optimizer step for the IMI methods (each seed, and the median)")


def _shared_costs_section(w: _Writer, runs: pd.DataFrame, o: ReportOptions) -> None:
    builds = shared_build_costs(runs)
    if builds.empty:
        return
    w.text("## 8. Shared one-off costs\n\n"
           f"Each unique cache (kind, key) with its build cost and the number of loaded runs that used it. Under "
           f"the {o.convention} convention in force: {CONVENTION_TEXT[o.convention]}.")
    shown = display(builds, {"kind": ("kind", fmt_text), "key": ("key", fmt_text), "n_runs": ("runs using it", fmt_count),
                             "n_builds": ("runs that built it", fmt_count), "wall_s": ("wall s", fmt_cost),
                             "device_hours": ("device-h", fmt_cost), "flops": ("FLOPs", fmt_cost)})
    w.table("shared_costs", builds, shown, "One-off shared cache costs")


def _skipped_section(w: _Writer, loaded: LoadedRuns) -> None:
    w.text(f"## Runs left out\n\n{loaded.skip_summary()}.")
    if not loaded.skipped.empty:
        shown = display(loaded.skipped, {"run_id": ("run", fmt_text), "skip": ("why", fmt_text), "reason": ("detail", fmt_text)})
        w.table("skipped_runs", loaded.skipped, shown, "Runs left out of the analysis, with the reason")
    columns = [c for c in ("sweep_id", "run_id", "status", "method.name", "dataset.name", "model.name", "hardware.name",
                           "method.beta", "seed", "run_dir") if c in loaded.runs.columns]
    path = w.tables / "runs.csv"
    w.tables.mkdir(parents=True, exist_ok=True)
    loaded.runs.drop(columns=[c for c in loaded.runs.columns if c.startswith("provenance.packages.")]).to_csv(path, index=False)
    w.files.append(path)
    w.text(f"Every loaded run with all its columns: `tables/runs.csv` ({len(loaded.runs)} rows; identity columns "
           f"{', '.join(f'`{c}`' for c in columns)}).")


def _finish(w: _Writer) -> Report:
    if w.notes:
        w.sections.insert(1, "## Notes\n\n" + "\n".join(f"- {n}" for n in w.notes) + "\n")
    path = w.out_dir / "report.md"
    path.write_text("\n".join(w.sections))
    return Report(w.out_dir, path, [path, *w.files], w.notes)
