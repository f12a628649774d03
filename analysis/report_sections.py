"""The report's sections, in the order report.md shows them: per-setting comparisons with the SFT row,
whether the testbed moves the model, what reaching the tuned baseline costs and what the fixed arms
save, expected best of k, best-of-grid and default regret, aggregates across settings, every
configuration, the figures, the shared one-off builds and the runs left out. They are one numbered
sequence over one `Context`, so they live together. Each function writes one section through
`report.Writer`; the numbers come from the pure modules, this module only chooses columns and words.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from analysis import plots, plots_tuning
from analysis.aggregate import improvement_table, iqm_table, normalizers, per_setting_table
from analysis.costs import shared_build_costs
from analysis.entries import Entry, grid_table, moves_the_model, practitioners_testbed
from analysis.load import CURVE_COLUMN, LoadedRuns, read_history
from analysis.sft_level import sft_levels
from analysis.seed_arrays import prepare
from analysis.selection import SeedBootstrap
from analysis.sensitivity import MATTERS_RATIO, grid_spread
from analysis.tables import display, fmt_cost, fmt_count, fmt_score, fmt_share, fmt_text, with_interval, write_table
from analysis.tuning import TuningResult, expected_best_table, tuning_comparison

DELTA_PMI_KEYS = ("imi/delta_pmi_mean", "imi/delta_pmi")
REGULATION_KEYS = tuple(f"imi/effective_{name}{suffix}" for name in ("margin", "beta", "weight") for suffix in ("_mean", ""))

TUNER_DEFINITIONS = (
    "*grid search*: every configuration, full runs, the validation-best is chosen; *random search (k)*: k "
    "configurations drawn at random without replacement, full runs, the validation-best of them is chosen "
    "(exact over all subsets: π_k(j) = C(r_j−1, k−1)/C(N, k), r_j the rank of configuration j by validation "
    "score); *successive halving (η, rungs)*: n configurations start, at each rung (25%, 50%[, 75%] of the "
    "steps) the survivors are ranked by the validation curve and the top max(1, ⌊m/η⌋) continue, the survivors "
    "run to 100% and the validation-best is chosen; a stopped run costs what it consumed up to its rung (the "
    "cumulative cost in its `val_curve`), a finished run its full cost.")
MODEL_DEFINITIONS = {
    "practitioner": (
        "Practitioner's model (the default): a procedure with budget k trains k configurations ONCE each, all at "
        "one seed, chooses by those runs' validation scores and is scored by the chosen run's TEST score; E[test], "
        "P(reach τ) and E[cost] are over the seeds (each seed one practitioner; exact over seeds and subsets), the "
        "cost being the runs it trained plus that seed's shared builds once. P(reach τ) = the probability that ONE "
        "such procedure ends with a run scoring ≥ τ."),
    "idealised": (
        "**Idealised model** (labelled *(idealised)*): a trial shows the tuner its configuration's statistic over "
        "ALL seeds, yet costs one run of mean cost (+ every shared build its runs used, once) — it selects with n "
        "seeds' information, so savings against it are flattering to the tuner's selection and differ from a "
        "practitioner's. P(reach τ) = Σ_j π(j) × the share of j's seeds whose run scores ≥ τ."),
}
MODEL_LABEL = {"practitioner": "practitioner's model: one run per configuration",
               "idealised": "idealised: selection on every seed's mean"}
REACH_TEXT = (
    "Cost to reach τ: the cheapest budget (k or n, by FLOPs) whose expected selected TEST score ≥ τ; ∞ (\"misses "
    "τ\") when none does. A fixed arm is one run at its defaults: it reaches τ when its score over seeds ≥ τ, and "
    "its P(reach τ) is the share of its seeds whose run scores ≥ τ. Savings = 1 − cost(arm) / cost(tuner at τ), "
    "−∞ (\"misses τ\") when the arm misses τ.")


@dataclass
class Context:
    """Everything the sections share: the analysed runs and what was computed on them."""

    runs: pd.DataFrame
    boot: SeedBootstrap
    summary: pd.DataFrame
    sft: pd.DataFrame
    entries: list[Entry]
    comparison: pd.DataFrame
    metric: str
    options: object
    traps: pd.Series

    @property
    def conf(self) -> str:
        return f"{100 * self.options.confidence:g}%"


def setting_name(setting: str, trap: str) -> str:
    """A setting as per-setting tables show it: trap settings are marked."""
    return f"{setting} (trap)" if isinstance(trap, str) and trap else str(setting)


def settings_column(frame: pd.DataFrame) -> list[str]:
    return [setting_name(s, t) for s, t in zip(frame["setting"], frame["trap"].fillna(""))]


def selected_on_text(kind: str, selected_on: str) -> str:
    if kind == "oracle":
        return "test (oracle)"
    if kind == "tuned":
        return "validation" if selected_on == "validation" else "TEST — not citable"
    return ""


def sft_column(c: Context, settings) -> list[str]:
    """The SFT level with its interval for each of `settings` (the starting point beside every score)."""
    levels = c.sft.set_index("setting")
    return [with_interval(levels.at[s, "level"], levels.at[s, "ci_low"], levels.at[s, "ci_high"], fmt_score)
            if s in levels.index else "–" for s in settings]


def ci(frame: pd.DataFrame, prefix: str, fmt=fmt_score) -> list[str]:
    return [with_interval(e, lo, hi, fmt) for e, lo, hi in
            zip(frame[prefix], frame[f"{prefix}_ci_low"], frame[f"{prefix}_ci_high"])]


def _tolerance(t) -> str:
    return f"{t:g}"


def savings_text(frame: pd.DataFrame, field: str) -> list[str]:
    """Savings with their interval; "tuner misses τ" where the tuner never reaches τ (savings would
    read 100%, which says nothing about the arm)."""
    shown = ci(frame, f"savings_{field}", fmt_share)
    return ["tuner misses τ" if math.isinf(t) and v != -math.inf else s
            for s, t, v in zip(shown, frame[f"tuner_{field}"], frame[f"savings_{field}"])]


def comparison_section(w, c: Context) -> None:
    o = c.options
    w.text("## 1. Per setting: SFT, tuned baselines and IMI methods at their defaults\n\n"
           f"*SFT (reference)* = the starting point. *tuned* = the configuration with the best {o.stat} validation "
           f"score, reporting its test score; *oracle* = chosen on test (optimistic); *default* = the published "
           f"defaults; IMI arms run once at their defaults. Score = {o.stat} over seeds with its {c.conf} interval "
           "(re-selection inside for tuned arms); stability = the share of bootstrap replicates that choose the same "
           "configuration. Median, interquartile range and collapse rate (share of runs flagged `collapsed`) are "
           "shown because a mean over bimodal outcomes mostly measures the collapse rate. Δ vs SFT = mean over runs "
           f"of (score − the SFT score of the same run); Δ vs tuned = score − the `{o.baseline} (tuned)` score, both "
           "from the same seed draws in every replicate (paired)."
           + (f" *composition* = the same statistic of `composition/{c.metric}`, the score on the composition test "
              "set (combinations of prompt parts that training never saw together)." if "composition" in c.comparison
              else ""))
    t = c.comparison
    shown = pd.DataFrame({
        "setting": settings_column(t), "arm": t["entry"],
        "selected on": [selected_on_text(k, s) for k, s in zip(t["kind"], t["selected_on"].fillna(""))],
        "config": t["config"].fillna(""), "stability": [fmt_share(v) for v in t["stability"]],
        "runs": [fmt_count(v) for v in t["n_runs"]], f"{o.stat} [CI]": ci(t, "score"),
        **({f"composition {o.stat} [CI]": ci(t, "composition")} if "composition" in t else {}),
        "median": [fmt_score(v) for v in t["median"]],
        "IQR": [f"{fmt_score(a)}–{fmt_score(b)}" if pd.notna(a) else "–" for a, b in zip(t["q25"], t["q75"])],
        "collapse rate": [fmt_share(v) for v in t["collapse_rate"]],
        "Δ vs SFT [CI]": ci(t, "delta_sft"), "Δ vs tuned [CI]": ci(t, "delta_tuned")})
    w.table("comparison", t, shown, f"{c.metric} per setting: SFT, tuned (validation-selected), oracle, default, IMI")


def testbed_section(w, c: Context) -> None:
    o = c.options
    w.text("## 2. Does the testbed move the model?\n\n"
           f"docs/design.md §11a: on every clean-label setting, tuned `{o.baseline}` must beat the SFT model with an interval "
           "that excludes 0, or the setting cannot tell methods apart. Trap settings are not required to.")
    table = moves_the_model(c.comparison, o.baseline)
    if table.empty:
        w.note(f"testbed check: no clean setting has a tuned `{o.baseline}` and an SFT level to compare.")
        beta_matters_table(w, c)
        return
    # the same question as one practitioner meets it: one grid search at one seed (docs/design.md §11a)
    practitioner = practitioners_testbed(c.entries, c.runs, c.boot, c.metric, o.baseline, o.confidence)
    table = table.merge(practitioner.drop(columns="n_seeds"), on="setting", how="left")
    shown = pd.DataFrame({"setting": table["setting"], "arm": table["entry"],
                          "selected on": [selected_on_text("tuned", s) for s in table["selected_on"]],
                          "Δ vs SFT [CI]": ci(table, "delta_sft"), "moves the model": table["verdict"],
                          "one grid search at one seed: Δ vs SFT [CI]": ci(table, "practitioner_delta_sft"),
                          "moves the model (practitioner)": table["practitioner_verdict"].fillna("– (no validation score)")})
    w.text(f"*One grid search at one seed*: the practitioner's model — every `{o.baseline}` configuration trained once at "
           "seed s, the run with the best validation score kept, its Δ vs the SFT model of seed s; mean over seeds, "
           "paired seed bootstrap.")
    w.table("testbed", table, shown, f"Tuned {o.baseline} vs SFT on every clean setting")
    beta_matters_table(w, c)


def beta_matters_table(w, c: Context) -> None:
    """Whether the baseline's grid spreads beyond its paired seed noise (analysis/sensitivity.py)."""
    spread = grid_spread(c.runs, c.options.baseline, c.metric)
    if spread.empty:
        return
    w.text(f"**Does the grid matter?** The spread (max − min) of `{c.options.baseline}`'s configuration means in "
           f"`{c.metric}` against the paired seed SD (the residual SD after removing configuration and seed means, "
           f"seeds every configuration has): a spread under {MATTERS_RATIO:g}× that SD leaves little to tune, and "
           "an untuned method matching the tuned grid then says little (docs/design.md §11a).")
    shown = pd.DataFrame({"setting": spread["setting"], "configs": spread["n_configs"].map(fmt_count),
                          "seeds": spread["n_seeds"].map(fmt_count), "best": spread["best"], "worst": spread["worst"],
                          "spread": spread["spread"].map(fmt_score), "paired seed SD": spread["paired_sd"].map(fmt_score),
                          "spread / SD": [f"{v:.1f}" for v in spread["ratio"]],
                          "grid matters": spread["matters"].map(lambda m: "yes" if m else "no")})
    w.table("grid_spread", spread, shown, f"Spread of {c.options.baseline}'s grid against paired seed noise")


def tuning_section(w, c: Context) -> TuningResult | None:
    o = c.options
    w.text(f"## 3. What reaching the tuned `{o.baseline}` costs: grid search, random search, successive halving\n\n"
           f"τ = the test score of `{o.baseline}`'s validation-selected configuration − tolerance, recomputed in every "
           f"replicate. {TUNER_DEFINITIONS} {MODEL_DEFINITIONS[o.tuner_model]} {REACH_TEXT} Costs: FLOPs first, "
           f"device-hours beside, under the **{o.convention}** convention; {c.conf} intervals from the paired seed "
           "bootstrap with τ, the selections and the budgets made again inside (a probability's interval is at "
           "least its Wilson score interval).")
    has_grid = bool(((c.runs["method.name"] == o.baseline) & (c.runs["arm_kind"] == "grid")).any())
    if not has_grid:
        w.note(f"tuning cost: there is no `{o.baseline}` with ≥ 2 configurations on any setting to set τ "
               "(pass --baseline with a method that was swept).")
        return None
    if not c.runs["charged.flops"].notna().any() and not c.runs["charged.device_hours"].notna().any():
        w.note("tuning cost: the records carry no cost (cost.flops, cost.device_hours).")
        return None
    result = tuning_comparison(prepare(c.runs, c.metric, o.convention), c.boot, c.metric, o.baseline, o.tolerances,
                               o.stat, o.convention, o.confidence, o.seed, o.tuner_model)
    for note in result.notes:
        w.notes.append(f"tuners: {note}")
        w.text(f"> Tuner unavailable — {note}.")
    reach = result.reach
    shown = pd.DataFrame({"setting": settings_column(reach), "tol.": [_tolerance(t) for t in reach["tolerance"]],
                          "SFT [CI]": sft_column(c, reach["setting"]), "τ": [fmt_score(v) for v in reach["tau"]],
                          "tuner": reach["tuner"],
                          "budget": [fmt_count(v) for v in reach["budget"]], "FLOPs": [fmt_cost(v) for v in reach["flops"]],
                          "device-h": [fmt_cost(v) for v in reach["device_hours"]],
                          "E[test] at budget": [fmt_score(v) for v in reach["expected_test"]],
                          "P(reach τ) [CI]": ci(reach, "p_reach", fmt_share),
                          "P at budget": [fmt_count(v) for v in reach["p_reach_budget"]]})
    w.text("**Each tuner's cost to reach τ** (budget = k for random search, n starting configurations for "
           "successive halving, N for the grid; – where no budget reaches τ in expectation). E[test] and P(reach τ) "
           "are at the budget, or at the largest budget where none reaches τ (*P at budget*); P(reach τ) = the "
           "probability that one tuning procedure ends with a run scoring ≥ τ.")
    w.table("tuner_reach", reach, shown, f"Tuners of {o.baseline}: cost to reach tau; {o.convention} shared costs")
    curve_files = write_table(result.curves, display(result.curves, {"setting": ("setting", fmt_text),
                              "tuner": ("tuner", fmt_text), "budget": ("budget", fmt_count),
                              "expected_test": ("E[test]", fmt_score), "expected_flops": ("E[FLOPs]", fmt_cost)}),
                              w.tables, "tuner_curves", comment="Every tuner at every budget")
    w.files += curve_files
    w.text("Every tuner at every budget (expected selected test score with its interval, expected cost): "
           "`tables/tuner_curves.csv`.")
    if result.savings.empty:
        w.note(f"savings: no setting has a fixed arm (an IMI method at its defaults) beside the `{o.baseline}` grid.")
        return result
    s = result.savings
    shown = pd.DataFrame({"setting": settings_column(s), "tol.": [_tolerance(t) for t in s["tolerance"]], "arm": s["arm"],
                          "vs tuner": s["tuner"], "arm reaches τ": ["yes" if r else "no" for r in s["arm_reaches"]],
                          "arm P(reach τ) [CI]": ci(s, "p_reach", fmt_share),
                          "arm FLOPs": [fmt_cost(v) for v in s["arm_flops"]],
                          "tuner FLOPs": [fmt_cost(v) for v in s["tuner_flops"]],
                          "savings, FLOPs [CI]": savings_text(s, "flops"),
                          "savings, device-h [CI]": savings_text(s, "device_hours")})
    w.text("**Savings per setting** of each fixed arm against each tuner at the same τ (arm P(reach τ): the share "
           "of the arm's seeds whose one run scores ≥ τ).")
    w.table("savings", s, shown, f"Savings vs the tuners of {o.baseline}; {o.convention} shared costs")
    _summary_section(w, c, result.summary)
    return result


def _summary_section(w, c: Context, summary: pd.DataFrame) -> None:
    o = c.options
    w.text("## 4. Savings summed over settings\n\n"
           "Costs of the arm and of the tuner summed over the settings both ran on; savings = 1 − Σ arm / Σ tuner, "
           f"with a {c.conf} interval from the same replicates (every setting resampled, selections made again). An "
           "arm that misses τ on any setting has no finite total. Headline: clean settings; trap settings apart.")
    summary = summary.sort_values(["scope", "tolerance", "arm", "tuner"], key=lambda v: v.map({"clean": 0, "trap": 1})
                                  if v.name == "scope" else v, kind="stable").reset_index(drop=True)
    shown = pd.DataFrame({"settings": summary["scope"], "tol.": [_tolerance(t) for t in summary["tolerance"]],
                          "arm": summary["arm"], "vs tuner": summary["tuner"],
                          "reaches τ on": [f"{r} of {n}" for r, n in zip(summary["n_reached"], summary["n_settings"])],
                          "Σ FLOPs (arm)": [fmt_cost(v) for v in summary["arm_flops"]],
                          "Σ FLOPs (tuner)": [fmt_cost(v) for v in summary["tuner_flops"]],
                          "savings, FLOPs [CI]": savings_text(summary, "flops"),
                          "savings, device-h [CI]": savings_text(summary, "device_hours")})
    w.table("savings_summary", summary, shown, f"Savings vs the tuners of {o.baseline}, summed over settings")
    headline = summary[(summary["scope"] == "clean") & (summary["tolerance"] == min(o.tolerances))]
    lines = []
    for arm, group in headline.groupby("arm", sort=True):
        parts = [f"{t}: {savings_text(g, 'flops')[0]}" for t, g in group.groupby("tuner", sort=True)]
        lines.append(f"- `{arm}` saves (FLOPs, tolerance {_tolerance(min(o.tolerances))}) against " + "; ".join(parts) + ".")
    if lines:
        w.text("**Headline (clean settings).**\n\n" + "\n".join(lines))


def expected_best_section(w, c: Context) -> pd.DataFrame:
    o = c.options
    w.text("## 5. Expected best of k trials\n\n"
           "Random search over each grid: E_k = the expected TEST score of the validation-best of k configurations "
           "drawn at random (exact over all subsets), and beside it the oracle Ê_k = Σ_j v_(j)·C(j−1, k−1)/C(N, k), the "
           "expected best TEST score of k (what selecting on test would promise). "
           + ("Practitioner's model: each of the k configurations is run once, at one seed, and E_k is over seeds; "
              "cost = the k runs + that seed's shared builds. " if o.tuner_model == "practitioner" else
              "**Idealised** model: selection on each configuration's statistic over all seeds; cost = k × the mean "
              "charged cost of one run + the procedure's shared builds. ")
           + f"{c.conf} intervals over seeds (paired), selection inside. Shown: k = 1, 2, ⌈N/2⌉, N (the CSV has every k).")
    curves = expected_best_table(c.runs, c.boot, c.metric, o.stat, o.convention, o.confidence, o.tuner_model)
    if curves.empty:
        w.note("expected best of k: no arm has ≥ 2 configurations on any setting.")
        return curves
    keep = curves.apply(lambda r: r["k"] in {1, 2, math.ceil(r["n_configs"] / 2), r["n_configs"]}, axis=1)
    rows = curves[keep]
    shown = pd.DataFrame({"setting": settings_column(rows), "arm": rows["arm"],
                          "selected on": [selected_on_text("tuned", s) for s in rows["selected_on"]],
                          "N": [fmt_count(v) for v in rows["n_configs"]], "k": [fmt_count(v) for v in rows["k"]],
                          "E_k (val-selected) [CI]": ci(rows, "expected_test"),
                          "oracle Ê_k [CI]": ci(rows, "oracle"), "SFT [CI]": sft_column(c, rows["setting"]),
                          "E[FLOPs]": [fmt_cost(v) for v in rows["expected_flops"]],
                          "E[device-h]": [fmt_cost(v) for v in rows["expected_device_hours"]]})
    w.table("expected_best", curves, shown, f"Expected {c.metric} of the validation-best of k random grid trials")
    return curves


def grid_section(w, c: Context) -> None:
    o = c.options
    w.text("## 6. Best-of-grid and default regret\n\n"
           f"Per baseline grid: the validation-selected configuration and its test score [{c.conf}], the oracle (best "
           "test score, chosen on test), and the score at the published defaults (each record's "
           "method_info.defaults), beside the SFT starting point. Default regret = tuned − default, re-selection inside its "
           "interval.")
    table = grid_table(c.entries, c.runs, c.boot, c.metric, o.stat, o.confidence)
    if table.empty:
        w.note("best-of-grid and default regret: no baseline has ≥ 2 configurations on any setting.")
        return
    tuned = c.comparison[c.comparison["kind"] == "tuned"][["setting", "method", "delta_sft", "delta_sft_ci_low",
                                                           "delta_sft_ci_high"]]
    table = table.merge(tuned, on=["setting", "method"], how="left")
    shown = pd.DataFrame({
        "setting": settings_column(table), "method": table["method"], "N": [fmt_count(v) for v in table["n_configs"]],
        "selected on": [selected_on_text("tuned", s) for s in table["selected_on"]],
        "tuned config": table["tuned_config"], "tuned [CI]": ci(table, "tuned"),
        "SFT [CI]": sft_column(c, table["setting"]), "tuned Δ vs SFT [CI]": ci(table, "delta_sft"),
        "val score": [fmt_score(v) for v in table["tuned_val"]], "stability": [fmt_share(v) for v in table["stability"]],
        "oracle config": table["oracle_config"], "oracle": [fmt_score(v) for v in table["oracle"]],
        "default": [f"{fmt_score(v)} ({d})" if d else "–" for v, d in zip(table["default"], table["default_config"])],
        "default regret [CI]": ci(table, "regret"), "note": table["note"]})
    w.table("grid", table, shown, f"Best-of-grid (validation-selected and oracle) and default regret of {c.metric}")


def aggregate_section(w, c: Context) -> None:
    o = c.options
    w.text("## 7. Across settings: IQM, mean and probability of improvement\n\n"
           "Normalised per setting and run: z = (score − SFT) / (tuned − SFT), so 0 = the SFT starting point and "
           f"1 = `{o.baseline} (tuned)` (validation-selected; both fixed at their observed values). IQM = the "
           "interquartile mean of z over all runs of all settings, each run weighted 1/(settings × its setting's "
           "runs) so every setting counts equally (rliable's IQM when run counts are equal). The IQM can trim a "
           "setting away entirely (e.g. one where an arm collapsed): the *trimmed* column names such settings, the "
           "mean over settings is shown beside, and every setting's own mean is in the table after. P(X > Y) = mean "
           "over settings of the share of (run of X, run of Y) pairs where X scores higher (ties ½), raw scores. "
           f"{c.conf} intervals from the seed bootstrap (selection inside). Headline: clean settings; trap settings "
           "apart. Oracle entries are never aggregated.")
    norms = normalizers(c.comparison, o.baseline)
    left_out = norms[~norms["usable"]]
    if len(left_out):
        w.text("> Left out of the normalised aggregates: " + "; ".join(f"{s} ({r})" for s, r in
                                                                      zip(left_out["setting"], left_out["reason"])) + ".")
    if not norms["usable"].any():
        w.note(f"IQM: no setting has both an SFT level and a tuned `{o.baseline}` above it to normalise by.")
    scopes = (("clean", [s for s in norms["setting"] if s not in c.traps.index]), ("trap", list(c.traps.index)))
    for scope, settings in scopes:
        if not settings:
            continue
        table = iqm_table(c.entries, c.runs, c.boot, c.metric, norms, settings, o.confidence)
        if table.empty:
            continue
        shown = pd.DataFrame({"arm": table["entry"], "settings": [fmt_count(v) for v in table["n_settings"]],
                              "runs": [fmt_count(v) for v in table["n_runs"]], "IQM [CI]": ci(table, "iqm"),
                              "mean over settings [CI]": ci(table, "mean"),
                              "collapse rate": [fmt_share(v) for v in table["collapse_rate"]],
                              "trimmed away by the IQM": table["trimmed"].replace("", "none")})
        title = "headline: clean settings" if scope == "clean" else "trap settings (not in the headline)"
        w.text(f"**IQM and mean of normalised scores — {title}.**")
        w.table(f"aggregate_iqm_{scope}", table, shown, f"IQM of SFT-to-tuned normalised {c.metric}, {title}")
    per_setting = per_setting_table(c.entries, c.runs, c.boot, c.metric, norms, o.confidence)
    if not per_setting.empty:
        w.text("**Every setting's own mean normalised score** (what an IQM may trim away).")
        shown = pd.DataFrame({"setting": settings_column(per_setting), "arm": per_setting["entry"],
                              "runs": [fmt_count(v) for v in per_setting["n_runs"]],
                              "mean z [CI]": ci(per_setting.rename(columns={"mean_normalized": "mean"}), "mean")})
        w.table("aggregate_per_setting", per_setting, shown, "Mean normalised score per setting and arm")
    for scope, settings in scopes:
        improvement = improvement_table(c.entries, c.runs, c.boot, c.metric, o.baseline, settings, o.confidence)
        if improvement.empty:
            continue
        shown = pd.DataFrame({"X": improvement["entry"], "Y": improvement["reference"],
                              "settings": [fmt_count(v) for v in improvement["n_settings"]],
                              "P(X > Y) [CI]": ci(improvement, "probability")})
        w.text(f"**Probability of improvement over `{o.baseline} (tuned)` — {scope} settings.**")
        w.table(f"probability_of_improvement_{scope}", improvement, shown,
                f"Probability of improvement over {o.baseline} (tuned), {scope} settings")


def configurations_section(w, c: Context) -> None:
    w.text("## 8. Every configuration over seeds\n\n"
           f"The SFT starting point (runs = its seeds), then each configuration: score ({c.options.stat}) with its "
           f"{c.conf} interval, mean and median, interquartile range, collapse rate, "
           "the validation score, Δ vs SFT, mean KL and no-EOS rate where recorded, and per run: charged FLOPs and "
           "device-hours (own cost, plus build shares unless builds are charged per procedure) and the time spent "
           "waiting on locks and queues (never charged).")
    means = [col for col in ("kl", "no_eos_rate", "charged.flops", "charged.device_hours", "cost.wait_s") if col in c.runs]
    extra = c.runs.groupby("config_id")[means].mean() if means else pd.DataFrame(index=c.summary["config_id"])
    table = c.summary.merge(extra, left_on="config_id", right_index=True, how="left")
    # the starting point as one row per setting, first in its setting
    sft = c.sft.rename(columns={"level": "score", "ci_low": "score_ci_low", "ci_high": "score_ci_high",
                                "n_seeds": "n_runs"}).assign(arm="SFT (reference)", config_label="", _first=0)
    table = (pd.concat([sft[["setting", "trap", "arm", "config_label", "n_runs", "score", "score_ci_low",
                             "score_ci_high", "_first"]], table.assign(_first=1)], ignore_index=True)
             .sort_values(["setting", "_first"], kind="stable").drop(columns="_first").reset_index(drop=True))
    shown = pd.DataFrame({"setting": settings_column(table), "arm": table["arm"], "config": table["config_label"],
                          "runs": [fmt_count(v) for v in table["n_runs"]], "score [CI]": ci(table, "score"),
                          "mean": [fmt_score(v) for v in table["mean"]], "median": [fmt_score(v) for v in table["median"]],
                          "IQR": [f"{fmt_score(a)}–{fmt_score(b)}" if pd.notna(a) else "–"
                                  for a, b in zip(table["q25"], table["q75"])],
                          "collapse rate": [fmt_share(v) for v in table["collapse_rate"]],
                          "val score": [fmt_score(v) for v in table["val_score"]],
                          "Δ vs SFT [CI]": ci(table, "delta_sft")})
    for column, header, fmt in (("kl", "KL", fmt_score), ("no_eos_rate", "no-EOS", fmt_share),
                                ("charged.flops", "FLOPs/run", fmt_cost), ("charged.device_hours", "device-h/run", fmt_cost),
                                ("cost.wait_s", "wait s/run", fmt_cost)):
        if column in table:
            shown[header] = [fmt(v) for v in table[column]]
    w.table("configurations", table, shown, f"{c.metric} per configuration over seeds")


def imi_trace_frame(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """ΔPMI and effective-regulation traces of the IMI runs, read from their history.jsonl.

    Out: (traces, problems). traces: one row per (run, step): setting, arm, method.name, run_id, step,
    delta_pmi, regulation, regulation_name. Runs with no run directory (W&B) or no IMI keys are left
    out; a history that cannot be read is left out too, and its error is one of `problems`.
    """
    frames, problems = [], []
    for _, run in runs[runs["is_imi"].astype(bool) & runs["run_dir"].notna()].iterrows():
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


def figures_section(w, c: Context) -> None:
    w.text("## 9. Figures")
    sft_note = " (win rate 0.5 by definition)" if (c.sft["sft_source"] == "definition").any() else ""
    w.figure("beta_sensitivity", plots.beta_sensitivity(c.runs, c.summary, c.metric, c.sft),
             f"β-sensitivity of {c.metric} per setting: mean over seeds with its {c.conf} interval and the median; "
             f"arms with one configuration as horizontal bands; the SFT starting point{sft_note} as a dash-dot line")
    if {"gold_reward", "kl"} <= set(c.runs.columns) and c.runs[["gold_reward", "kl"]].notna().all(axis=1).any():
        reward_sft = sft_levels(c.runs, "gold_reward", c.boot, c.options.confidence)
        w.figure("reward_kl_frontier", plots.reward_kl_frontier(c.runs, sft=reward_sft),
                 "Reward–KL frontier: gold reward vs KL(π‖π_ref) per run, medians per configuration, SFT level")
    else:
        w.note("reward–KL frontier: the runs have no gold_reward and kl metrics (no gold-reward task).")
    traces, problems = imi_trace_frame(c.runs)
    for problem in problems:
        w.note(f"ΔPMI traces: a history was left out: {problem}")
    if traces.empty:
        w.note("ΔPMI / effective-margin traces: no IMI run with a local history.jsonl holding imi/delta_pmi_*.")
    else:
        w.figure("imi_traces", plots.imi_traces(traces),
                 "ΔPMI and effective regulation per optimizer step for the IMI methods (each seed, and the median)")


def tuning_figures(w, c: Context, curves: pd.DataFrame, result: TuningResult | None) -> None:
    fixed = c.comparison[c.comparison["entry"].isin(set(c.runs.loc[c.runs["arm_kind"] == "fixed", "arm"]))]
    fixed = fixed.rename(columns={"entry": "arm"})[["setting", "arm", "score", "score_ci_low", "score_ci_high"]]
    fixed = fixed.rename(columns={"score_ci_low": "ci_low", "score_ci_high": "ci_high"})
    tau = None
    if result is not None and not result.reach.empty:
        first = result.reach[result.reach["tolerance"] == min(c.options.tolerances)]
        tau = first.drop_duplicates("setting")[["setting", "tau"]]
    if not curves.empty:
        w.figure("expected_best_vs_trials", plots_tuning.expected_best(curves, fixed, c.sft, tau),
                 f"Expected test {c.metric} of the validation-best of k random grid trials ({MODEL_LABEL[c.options.tuner_model]}; "
                 f"{c.conf} interval) with the oracle Ê_k dashed; fixed arms as stars; SFT level and τ")
    if result is not None and not result.curves.empty:
        costs = result.savings.drop_duplicates(["setting", "arm"])[["setting", "arm", "arm_flops"]] \
            if not result.savings.empty else pd.DataFrame(columns=["setting", "arm", "arm_flops"])
        points = fixed.merge(costs.rename(columns={"arm_flops": "flops"}), on=["setting", "arm"])
        w.figure("tuners_vs_flops", plots_tuning.tuners_vs_cost(result.curves, points, c.sft, tau, "flops"),
                 f"Tuners of `{c.options.baseline}` ({MODEL_LABEL[c.options.tuner_model]}): expected selected test score "
                 f"vs expected FLOPs per budget ({c.options.convention} shared costs); fixed arms as stars at their cost; "
                 "SFT level and τ")


def shared_costs_section(w, c: Context) -> None:
    builds = shared_build_costs(c.runs)
    w.text("## 10. Shared one-off builds and waiting time\n\n"
           "Each unique build (kind, key) with its cost and the loaded runs that used it; under the "
           f"**{c.options.convention}** convention in force they are charged as the header says.")
    if not builds.empty:
        shown = display(builds, {"kind": ("kind", fmt_text), "key": ("key", fmt_text), "n_runs": ("runs using it", fmt_count),
                                 "n_builds": ("runs that built it", fmt_count), "flops": ("FLOPs", fmt_cost),
                                 "device_hours": ("device-h", fmt_cost), "wall_s": ("wall s", fmt_cost)})
        w.table("shared_costs", builds, shown, "One-off shared build costs")
    if "cost.wait_s" in c.runs and c.runs["cost.wait_s"].notna().any():
        waits = c.runs.groupby("arm")["cost.wait_s"].agg(["sum", "mean"])
        w.text(f"Waiting on cache locks and queues (never charged as compute): {fmt_cost(c.runs['cost.wait_s'].sum())} s "
               f"in all; per arm, total (mean per run): "
               + "; ".join(f"{a} {fmt_cost(r['sum'])} s ({fmt_cost(r['mean'])} s)" for a, r in waits.iterrows()) + ".")
    else:
        w.text("The records do not report waiting time (`cost.wait_s`; older records).")


def write_runs_csv(w, loaded: LoadedRuns) -> None:
    """tables/runs.csv: every loaded run with all its columns (the validation curve as JSON)."""
    frame = loaded.runs.drop(columns=[c for c in loaded.runs.columns if c.startswith("provenance.packages.")])
    if CURVE_COLUMN in frame.columns:
        frame = frame.assign(**{CURVE_COLUMN: frame[CURVE_COLUMN].map(lambda c: json.dumps(c) if c else "")})
    path = w.tables / "runs.csv"
    w.tables.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    w.files.append(path)


def skipped_section(w, loaded: LoadedRuns) -> None:
    w.text(f"## Runs left out\n\n{loaded.skip_summary()}.")
    if not loaded.skipped.empty:
        shown = display(loaded.skipped, {"run_id": ("run", fmt_text), "skip": ("why", fmt_text), "reason": ("detail", fmt_text)})
        w.table("skipped_runs", loaded.skipped, shown, "Runs left out of the analysis, with the reason")
    write_runs_csv(w, loaded)
    w.text(f"Every loaded run with all its columns: `tables/runs.csv` ({len(loaded.runs)} rows).")
