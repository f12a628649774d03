"""The report's figures (section 9 of report.md): β-sensitivity, the reward–KL frontier, the IMI methods'
ΔPMI and effective-regulation traces (read from each run's history.jsonl), and the tuning figures —
expected best of k against trials and each tuner's score against its FLOPs. Drawing is
`analysis.plots` and `analysis.plots_tuning`; this module picks the data and writes the captions.
"""
from __future__ import annotations

import math

import pandas as pd

from analysis import plots, plots_tuning
from analysis.load import read_history
from analysis.report_context import Context
from analysis.sft_level import sft_levels
from analysis.tuning import TuningResult

DELTA_PMI_KEYS = ("imi/delta_pmi_mean", "imi/delta_pmi")
REGULATION_KEYS = tuple(f"imi/effective_{name}{suffix}" for name in ("margin", "beta", "weight") for suffix in ("_mean", ""))
MODEL_LABEL = {"practitioner": "practitioner's model: one run per configuration",
               "idealised": "idealised: selection on every seed's mean"}


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
