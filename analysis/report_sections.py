"""Report sections on scores: per-setting comparisons with the SFT row, whether the testbed moves the
model, best-of-grid and default regret, aggregates across settings, every configuration, the score
figures and the runs left out. Each function writes one section through `report.Writer`; the numbers
come from the pure modules, this module only chooses columns and words.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from analysis import plots
from analysis.aggregate import improvement_table, iqm_table, normalizers, per_setting_table
from analysis.entries import Entry, grid_table, moves_the_model
from analysis.load import CURVE_COLUMN, LoadedRuns, read_history
from analysis.sft_level import sft_levels
from analysis.selection import SeedBootstrap
from analysis.tables import display, fmt_cost, fmt_count, fmt_score, fmt_share, fmt_text, with_interval

DELTA_PMI_KEYS = ("imi/delta_pmi_mean", "imi/delta_pmi")
REGULATION_KEYS = tuple(f"imi/effective_{name}{suffix}" for name in ("margin", "beta", "weight") for suffix in ("_mean", ""))


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
        return
    shown = pd.DataFrame({"setting": table["setting"], "arm": table["entry"],
                          "selected on": [selected_on_text("tuned", s) for s in table["selected_on"]],
                          "Δ vs SFT [CI]": ci(table, "delta_sft"), "moves the model": table["verdict"]})
    w.table("testbed", table, shown, f"Tuned {o.baseline} vs SFT on every clean setting")


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

