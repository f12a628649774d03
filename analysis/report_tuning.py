"""The report's sections on what tuning costs (docs/design.md §11), numbered as in report.md: 3. each
tuner's cost to reach τ and every fixed arm's savings per setting; 4. the savings summed over settings,
with the headline; 5. the expected best of k random grid trials. They define the tuners and the tuner
model in force in words; the numbers come from `analysis.tuning`, this module chooses columns and words.
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.report_context import Context, ci, savings_text, selected_on_text, settings_column, sft_column
from analysis.seed_arrays import prepare
from analysis.tables import display, fmt_cost, fmt_count, fmt_score, fmt_share, fmt_text, write_table
from analysis.tuning import TuningResult, expected_best_table, tuning_comparison

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
REACH_TEXT = (
    "Cost to reach τ: the cheapest budget (k or n, by FLOPs) whose expected selected TEST score ≥ τ; ∞ (\"misses "
    "τ\") when none does. A fixed arm is one run at its defaults: it reaches τ when its score over seeds ≥ τ, and "
    "its P(reach τ) is the share of its seeds whose run scores ≥ τ. Savings = 1 − cost(arm) / cost(tuner at τ), "
    "−∞ (\"misses τ\") when the arm misses τ.")


def _tolerance(t) -> str:
    return f"{t:g}"


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
