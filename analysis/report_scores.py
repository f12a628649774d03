"""The report's sections on scores, numbered as in report.md: 1. per setting, the SFT level, tuned
baselines and IMI arms; 2. whether the testbed moves the model, and whether the baseline's grid
spreads beyond seed noise (docs/design.md §11a); 6. best-of-grid and default regret; 7. normalised
aggregates across settings; 8. every configuration over seeds. Each function writes one section
through `report.Writer`; the numbers come from the pure modules, this module only chooses columns
and words.
"""
from __future__ import annotations

import pandas as pd

from analysis.aggregate import improvement_table, iqm_table, normalizers, per_setting_table
from analysis.entries import grid_table, moves_the_model, practitioners_testbed
from analysis.report_context import Context, ci, selected_on_text, settings_column, sft_column
from analysis.sensitivity import MATTERS_RATIO, grid_spread
from analysis.tables import fmt_cost, fmt_count, fmt_score, fmt_share


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
