"""The report's sections for studies beyond a β grid (docs/design.md §11): what the IMI signal is (§2a, the signal
controls), the lead with IMI's saving against the cheapest tuner Optuna's replays included (--optuna-tuners), and
the live tuning studies run through the sweep (§3a). Each writes through `report.Writer` over the report's
`report_context.Context`; the numbers come from analysis.signal_controls, analysis.tuner_benchmark and
analysis.live_tuning.
"""
from __future__ import annotations

import pandas as pd

from analysis import plots_tuning
from analysis.imi_action import ACTION, imi_action_table
from analysis.live_tuning import one_run_costs, study_summary, study_trajectories
from analysis.lm_eval_change import lm_eval_change
from analysis.report_context import Context
from analysis.seed_arrays import prepare
from analysis.selection import validation_column
from analysis.signal_controls import has_signal_controls, signal_control_table, signal_verdicts
from analysis.tables import fmt_cost, fmt_count, fmt_score, with_interval


def signal_section(w, c: Context) -> None:
    """Only where the runs hold a signal-control ablation (ablation_signal)."""
    if not has_signal_controls(c.runs):
        return
    w.text("## 2a. What the IMI signal is: ΔPMI against its controls\n\n"
           "docs/design.md §4: the same IMI configuration with the regulator reading ΔPMI (*pmi*) or a control — "
           "*length* (1/|y_w| − 1/|y_l| given ΔPMI's batch mean and spread), *shuffled* (ΔPMI moved to other pairs "
           "of the batch), *constant* (its batch mean), *pmi_residual* (ΔPMI less its linear length component). "
           f"Δ = pmi − control in `{c.metric}` (mean over seeds), {c.conf} paired seed interval; corr(length) and "
           "corr(margin): ΔPMI's within-batch correlation with the length statistic and with the margin "
           "ā(y_w | x) − ā(y_l | x) of the model the PMI comes from, mean over the pmi runs' steps and seeds.")
    table = signal_control_table(c.runs, c.boot, c.metric, c.options.confidence)
    shown = pd.DataFrame({"setting": table["setting"], "method": table["method"], "control": table["control"],
                          "seeds": table["n_seeds"].map(fmt_count), "pmi": table["pmi"].map(fmt_score),
                          "control score": table["score"].map(fmt_score),
                          "Δ pmi − control [CI]": [with_interval(d, lo, hi, fmt_score) for d, lo, hi in
                                                   zip(table["delta"], table["delta_ci_low"], table["delta_ci_high"])],
                          "verdict": table["verdict"], "corr(length)": table["corr_length"].map(fmt_score),
                          "corr(margin)": table["corr_margin"].map(fmt_score)})
    w.table("signal_controls", table, shown, "IMI signal vs controls: pmi − control per setting and method")
    verdicts = signal_verdicts(table)
    shown = pd.DataFrame({"setting": verdicts["setting"], "method": verdicts["method"],
                          "pmi beats": verdicts["beats"].replace("", "none"),
                          "pmi_residual keeps what pmi does": verdicts["residual_keeps"].map(
                              lambda v: "–" if not isinstance(v, bool) else "yes" if v else "no"),
                          "reading": verdicts["reading"]})
    w.text("Per setting and method: which controls ΔPMI beats (interval above 0), whether the length-free signal "
           "does as well (pmi − pmi_residual's interval contains 0), and the reading that follows (docs/design.md §11).")
    w.table("signal_verdicts", verdicts, shown, "What the IMI signal is, per setting and method")


def imi_action_section(w, c: Context) -> None:
    """Only where the records carry the regulator's action diagnostics (every IMI run since they were added)."""
    if ACTION not in c.runs.columns or not c.runs[ACTION].notna().any():
        return
    table = imi_action_table(c.runs, c.boot, c.metric, c.options.confidence)
    w.text("## 2b. Does the IMI regulator act?\n\n"
           "docs/design.md §4: *acting* is the share of training pairs whose loss gradient the regulator moved by "
           "≥ 10% from the unregulated base's at the same β (mean over the run's steps and seeds); *effective* the "
           "batch p10 / p50 / p90 of the effective margin (units of the base's gap), β or weight. Δ = IMI − its "
           f"base at the same β in `{c.metric}`, mean over seeds, {c.conf} paired seed interval: a regulator that "
           "does not act leaves its base's score, and \"IMI matches tuned DPO\" then says nothing about IMI.")
    shown = pd.DataFrame({
        "setting": table["setting"], "method": table["method"], "config": table["config"],
        "seeds": table["n_seeds"].map(fmt_count), "acting": table["acting_share"].map(fmt_score),
        "effective p10 / p50 / p90": [f"{table['regulator'][i]} " + " / ".join(
            fmt_score(table[f"effective_{q}"][i]) for q in ("p10", "p50", "p90")) if table["regulator"][i] else "–"
            for i in table.index],
        "base": table["base"].replace("", "–"), "score": table["score"].map(fmt_score),
        "Δ vs base [CI]": [with_interval(d, lo, hi, fmt_score) if d == d else "–" for d, lo, hi in
                           zip(table["delta"], table["delta_ci_low"], table["delta_ci_high"])],
        "verdict": table["verdict"]})
    w.table("imi_action", table, shown, "How much each IMI configuration's regulator acts, and IMI − its base")


def lm_eval_section(w, c: Context) -> None:
    """Only where the records carry lm-eval scores with the reference's beside them."""
    table = lm_eval_change(c.runs, c.boot, c.entries, c.options.confidence)
    if table.empty:
        return
    w.text("## 2c. lm-eval after training\n\n"
           "docs/design.md §7: each entry's lm-eval score against the reference model's on the same items (drawn "
           f"by the run's seed), Δ = score − reference per run, mean over seeds, {c.conf} paired seed interval; "
           "*SD over runs*: the score's spread over every run of the setting (0: it never moves).")
    shown = pd.DataFrame({"setting": table["setting"], "entry": table["entry"], "score": table["score"],
                          "seeds": table["n_seeds"].map(fmt_count), "reference": table["reference"].map(fmt_score),
                          "after training": table["value"].map(fmt_score),
                          "Δ [CI]": [with_interval(d, lo, hi, fmt_score) for d, lo, hi in
                                     zip(table["delta"], table["delta_ci_low"], table["delta_ci_high"])],
                          "moved": table["moved"], "SD over runs": table["spread"].map(fmt_score)})
    w.table("lm_eval_change", table, shown, "lm-eval scores after training against the reference model's")


def optuna_lead_section(w, c: Context) -> None:
    """The number the report leads with when asked (--optuna-tuners): each IMI run's saving against the cheapest
    tuner to reach τ, Optuna's replayed tuners included (analysis/tuner_benchmark.py)."""
    from analysis.optuna_replay import DEFAULT_TUNERS
    from analysis.tuner_benchmark import tuner_benchmark
    from analysis.tuner_report import LEAD_TEXT, lead_table

    o = c.options
    result = tuner_benchmark(prepare(c.runs, c.metric, o.convention), c.boot, c.metric, o.baseline, o.tolerances,
                             o.stat, o.convention, o.confidence, DEFAULT_TUNERS, o.optuna_replicates, None, o.seed)
    best, shown = lead_table(result)
    w.text(f"## IMI's saving against the cheapest tuner to reach τ (Optuna's tuners replayed)\n\n{LEAD_TEXT} "
           f"Optuna's samplers and pruners are replayed against these records, {o.optuna_replicates} studies per tuner "
           "and setting (`python -m analysis tuners` gives every tuner, the replay's check against exact expectations "
           "and time to τ).")
    if len(best):
        w.table("optuna_lead", best, shown, "Each IMI run's saving against the cheapest tuner to reach τ")
    else:
        w.note("Optuna lead: no setting has both a replayable grid with validation scores and a fixed arm.")


def live_tuning_section(w, trials: pd.DataFrame, metric: str, options, c: Context | None = None) -> None:
    """The live tuning studies (records tagged config.tuning): each study's best-so-far, beside the fixed arms."""
    val = validation_column(metric)
    trajectories = study_trajectories(trials, metric, val, options.convention)
    summary = study_summary(trajectories)
    w.text("## 3a. Live tuning studies (Optuna, through the sweep)\n\n"
           "docs/design.md §10, §11: each study is one tuning procedure at one seed — Optuna asks a configuration, "
           f"one run trains it, Optuna is told its validation score (`{val}`). After n trials the study holds its "
           f"validation-best trial and is scored by that trial's test `{metric}`; its cost is its trials' own FLOPs "
           "plus the shared builds they used, once. These runs are left out of the grid tables above and below (each "
           "is one seed of one continuous configuration). The fixed arms are the same setting's IMI runs (one run at "
           "their defaults), mean over seeds.")
    shown = pd.DataFrame({"setting": summary["setting"], "study": summary["study"], "seed": summary["seed"],
                          "trials": summary["trials"].map(fmt_count), "best trial": summary["best_trial"],
                          "its configuration": summary["best_config"], "its validation": summary["best_val"].map(fmt_score),
                          "its test": summary["best_test"].map(fmt_score), "FLOPs": summary["flops"].map(fmt_cost)})
    w.table("live_studies", summary, shown, "Each live tuning study where it ended")
    files = w.tables
    trajectories.to_csv(files / "live_study_trajectories.csv", index=False)
    w.files.append(files / "live_study_trajectories.csv")
    w.text("Every trial with the study's best-so-far: `tables/live_study_trajectories.csv`.")
    if c is None or not options.figures:
        return
    fixed = c.comparison[c.comparison["kind"] == "fixed"]
    if len(fixed):
        costs = one_run_costs(c.runs[c.runs["arm"].isin(set(fixed["entry"]))], pd.concat([c.runs, trials]),
                              options.convention)
        fixed = pd.DataFrame({"setting": fixed["setting"], "arm": fixed["entry"], "score": fixed["score"],
                              "ci_low": fixed["score_ci_low"], "ci_high": fixed["score_ci_high"],
                              "flops": [costs.get((setting, arm)) for setting, arm in zip(fixed["setting"], fixed["entry"])]})
    w.figure("live_studies", plots_tuning.live_studies(trajectories, fixed if len(fixed) else None, c.sft),
             "Live tuning studies: the test score of each study's validation-best trial so far against the FLOPs it "
             "has spent, with the IMI runs at their own cost")
