"""The headline's runs and its views beyond the comparison (docs/design.md §11, "The headline").

`report_runs` takes the report's first steps (`report.build_report`) so that every view reads the runs and
the seed bootstrap the report reads. The savings view shows, per setting and arm, the saving against the
cheapest tuner that reaches τ, as rows of the report's savings table (`tuning.tuning_comparison`, or with
Optuna's replays `tuner_benchmark`); the mechanism view the report's signal verdicts
(`signal_controls.signal_verdicts`). Owns which rows and columns are shown, and their words; no statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.costs import charged_costs
from analysis.grid import annotate, at_defaults, method_defaults
from analysis.live_tuning import study_runs
from analysis.load import LoadedRuns
from analysis.metrics import check_metric
from analysis.report import CONVENTION_TEXT, resolve_metric
from analysis.report_context import savings_text, setting_name
from analysis.seed_arrays import prepare
from analysis.selection import SeedBootstrap, seed_bootstrap
from analysis.sft_level import add_delta
from analysis.signal_controls import CONTROLS, PMI, SIGNAL_COLUMN, signal_control_table, signal_verdicts
from analysis.tables import fmt_cost, fmt_count, fmt_score, fmt_share, to_markdown, with_interval
from analysis.tuner_models import PRACTITIONER
from analysis.tuner_selection import SH_VARIANTS
from analysis.tuning import tuning_comparison

# The adaptive-β baseline (docs/design.md §3): the other way to avoid tuning β, so it stands beside the IMI arms.
COMPETITORS = ("beta_dpo",)
NONE_REACHES = "none reaches τ"


@dataclass
class ReportRuns:
    """What the report analyses: the loaded records, the annotated runs with the metric (live-study trials
    left out, as the report leaves them out of its grid tables), their seed bootstrap and the metric."""

    loaded: LoadedRuns
    runs: pd.DataFrame
    boot: SeedBootstrap
    metric: str


def report_runs(loaded: LoadedRuns, metric: str | None, n_boot: int, seed: int) -> ReportRuns:
    """`report.build_report`'s steps up to its bootstrap, in its order, so the replicates equal the report's."""
    metric = resolve_metric(loaded.runs, metric)
    if loaded.runs.empty:
        raise ValueError(f"no completed runs in {loaded.source or 'the records'}: there is no headline to compute")
    check_metric(loaded.runs, metric)
    live = study_runs(loaded.runs)
    runs = annotate(loaded.runs[~live], loaded.config_columns)
    runs = add_delta(runs[runs[metric].notna()], metric)
    if runs.empty:
        raise ValueError(f"no completed run reports {metric!r}" + (" outside the live tuning studies" if live.any() else ""))
    return ReportRuns(loaded, runs, seed_bootstrap(runs, n_boot, seed), metric)


def choose_arms(untuned: pd.DataFrame, arms: tuple[str, ...] | None) -> list[str]:
    """Which untuned entries a view shows, in order. untuned: one row per entry with columns entry, method,
    is_imi. arms None = every IMI entry, then the COMPETITORS' entries; else those of the named methods."""
    if arms is None:
        imi = sorted(untuned.loc[untuned["is_imi"].astype(bool), "entry"].unique())
        competitors = [e for m in COMPETITORS for e in sorted(untuned.loc[untuned["method"] == m, "entry"].unique())]
        return imi + competitors
    unknown = [m for m in arms if m not in set(untuned["method"])]
    if unknown:
        raise ValueError(f"--arms {', '.join(unknown)}: no untuned run of that method in the records; "
                         f"methods with one: {sorted(untuned['method'].unique())}")
    return [e for m in arms for e in sorted(untuned.loc[untuned["method"] == m, "entry"].unique())]


def declared_defaults(runs: pd.DataFrame) -> pd.Series:
    """Per (setting, arm): whether every run of the arm is at the defaults its method declares
    (`grid.at_defaults`). An IMI method's ablations (another signal, another marginal context) are not."""
    at = at_defaults(runs, method_defaults(runs))
    return at.groupby([runs["setting"], runs["arm"]]).all()


def arm_columns(untuned: pd.DataFrame, arms: tuple[str, ...] | None,
                all_configs: bool) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The shown arms as {column name: {setting: entry}}, in `choose_arms` order, and the entries left out.
    untuned: one row per setting and entry with columns setting, entry, method, is_imi, declared (see
    `declared_defaults`).

    The headline asks what an IMI method at its defaults does, so by default an IMI method that ran its
    declared defaults shows those runs alone, as one column named after the method whatever each setting's
    entry is called ("rmipo (β=2, signal=pmi)" on one, "rmipo" on another); its ablations are left out.
    all_configs, or a method with no entry at its declared defaults (or two on one setting): one column per
    entry, as the report names them."""
    order = choose_arms(untuned.drop_duplicates("entry"), arms)
    shown = untuned[untuned["entry"].isin(order)]
    merged = {}
    if not all_configs:
        for method, rows in shown[shown["is_imi"].astype(bool)].groupby("method", sort=False):
            default = rows[rows["declared"].astype(bool)]
            if len(default) and not default["setting"].duplicated().any():
                merged[method] = dict(zip(default["setting"], default["entry"]))
    columns: dict[str, dict[str, str]] = {}
    for entry in order:
        rows = shown[shown["entry"] == entry]
        method = rows["method"].iloc[0]
        if method in merged:
            columns.setdefault(method, merged[method])
        else:
            columns[entry] = dict(zip(rows["setting"], rows["entry"]))
    used = {entry for cells in columns.values() for entry in cells.values()}
    return columns, [entry for entry in order if entry not in used]


def left_out_text(left_out: list[str]) -> str:
    """The footnote sentence naming the IMI configurations a view leaves out ("" when none is)."""
    if not left_out:
        return ""
    return (f" An IMI method's column is its runs at its declared defaults; its other configurations are left out "
            f"({', '.join(left_out)}; `--all-configs` shows them).")


def _clean_first(frame: pd.DataFrame, clean_only: bool) -> pd.DataFrame:
    """Rows of clean settings first (or alone), each in setting order; the order within a setting kept."""
    trap = frame["trap"].fillna("").astype(str) != ""
    frame = frame[~trap] if clean_only else frame
    return frame.assign(_trap=trap[frame.index]).sort_values(["_trap", "setting"], kind="stable").drop(columns="_trap")


def _bootstrap_text(o) -> str:
    return (f"[{100 * o.confidence:g}% interval]: seed bootstrap, {o.n_boot} replicates, random seed {o.seed}, as in "
            "`python -m analysis report`")


# ---------------------------------------------------------------------------------------------
# The saving against the cheapest tuner that reaches τ


@dataclass
class Savings:
    """One row per setting and fixed arm at the view's tolerance: setting, trap, arm, method, is_imi, tau,
    tuner (the cheapest to reach τ, NONE_REACHES when none does), budget, tuner_flops (+ _ci_low/_high with
    the Optuna replays), p_reach (+ _ci_low/_high: the arm's), arm_flops, savings_flops (+ _ci_low/_high);
    and the report's notes on tuners it could not run."""

    table: pd.DataFrame
    notes: list[str]


def savings_table(r: ReportRuns, options) -> Savings:
    """The report's savings rows against the cheapest tuner, for `options.report`'s single tolerance.

    Exact tuners (the report's default): its `savings` rows (`tuning_comparison`) of the tuner whose cost to
    reach τ in its `tuner_reach` rows is lowest in FLOPs, the first listed on ties. With
    `options.report.optuna_tuners`: the "best tuner" rows of `tuner_benchmark` (the report's optuna_lead
    table), the cheapest chosen again in every replicate. ValueError where the report has no savings table.
    """
    o = options.report
    baseline = options.baseline
    runs = r.runs.join(charged_costs(r.loaded.runs, o.convention))  # builds charged over every loaded run
    if not ((runs["method.name"] == baseline) & (runs["arm_kind"] == "grid")).any():
        grids = sorted(runs.loc[runs["arm_kind"] == "grid", "method.name"].unique())
        raise ValueError(f"no setting has a {baseline!r} grid (≥ 2 configurations) to set τ; methods with a grid: {grids}")
    if not runs["charged.flops"].notna().any():
        raise ValueError("the records carry no cost.flops: the savings view compares FLOPs")
    prepared = prepare(runs, r.metric, o.convention)
    if o.optuna_tuners:
        from analysis.optuna_replay import DEFAULT_TUNERS
        from analysis.tuner_benchmark import tuner_benchmark
        from analysis.tuner_report import lead_table

        result = tuner_benchmark(prepared, r.boot, r.metric, baseline, o.tolerances, o.stat, o.convention,
                                 o.confidence, DEFAULT_TUNERS, o.optuna_replicates, None, o.seed)
        best, _ = lead_table(result)
        budgets = (result.reach.set_index(["setting", "tolerance", "tuner"])["budget"] if len(result.reach)
                   else pd.Series(dtype=float))
        table = best.drop(columns="tuner").rename(columns={
            "best_tuner": "tuner", "arm_p_reach": "p_reach", "arm_p_reach_ci_low": "p_reach_ci_low",
            "arm_p_reach_ci_high": "p_reach_ci_high"})
        table["budget"] = [budgets.get((s, t, b), math.nan)
                           for s, t, b in zip(table["setting"], table["tolerance"], table["tuner"])]
        notes = result.notes
    else:
        result = tuning_comparison(prepared, r.boot, r.metric, baseline, o.tolerances, o.stat, o.convention,
                                   o.confidence, o.seed, o.tuner_model)
        table = _against_cheapest(result.reach, result.savings)
        notes = result.notes
    if table.empty:
        raise ValueError(f"no setting has a fixed arm (an IMI method at its defaults) beside the {baseline!r} grid")
    arms = runs[runs["arm_kind"] == "fixed"].groupby("arm", sort=True).agg(method=("method.name", "first"),
                                                                            is_imi=("is_imi", "first"))
    table = table.join(arms, on="arm").join(declared_defaults(runs).rename("declared"), on=["setting", "arm"])
    columns = ["setting", "trap", "arm", "method", "is_imi", "declared", "tau", "tuner", "budget", "tuner_flops",
               "tuner_flops_ci_low", "tuner_flops_ci_high", "p_reach", "p_reach_ci_low", "p_reach_ci_high",
               "arm_flops", "savings_flops", "savings_flops_ci_low", "savings_flops_ci_high"]
    return Savings(table.reindex(columns=columns).reset_index(drop=True), notes)


def _against_cheapest(reach: pd.DataFrame, saved: pd.DataFrame) -> pd.DataFrame:
    """Each savings row against its setting's cheapest tuner to τ (reach order breaks ties; where no tuner
    reaches τ, the rows against the first, named NONE_REACHES), with τ and the budget from `reach`."""
    if reach.empty or saved.empty:
        return pd.DataFrame()
    picks = []
    for (setting, tolerance), rows in reach.groupby(["setting", "tolerance"], sort=True):
        reached = rows[rows["flops"] < math.inf]
        row = reached.loc[reached["flops"].idxmin()] if len(reached) else rows.iloc[0]
        picks.append({"setting": setting, "tolerance": tolerance, "tuner": row["tuner"], "tau": row["tau"],
                      "budget": row["budget"], "reaches": len(reached) > 0})
    table = saved.merge(pd.DataFrame(picks), on=["setting", "tolerance", "tuner"], how="inner")
    table.loc[~table["reaches"], "tuner"] = NONE_REACHES
    return table.drop(columns="reaches")


def _tuner_cell(row) -> str:
    if row.tuner == NONE_REACHES or pd.isna(row.budget):
        return str(row.tuner)
    return f"{row.tuner} ({fmt_count(row.budget)})"


def savings_markdown(savings: Savings, metric: str, options) -> str:
    """The savings view: one row per setting and shown arm, and the lines that define its numbers."""
    o = options.report
    table = savings.table
    columns, left_out = arm_columns(table.rename(columns={"arm": "entry"}).drop_duplicates(["setting", "entry"]),
                                    options.arms, options.all_configs)
    # one row per setting and shown column, named as the comparison's column
    shown = {(setting, entry): (i, name) for i, (name, cells) in enumerate(columns.items())
             for setting, entry in cells.items()}
    place = [shown.get(key) for key in zip(table["setting"], table["arm"])]
    table = table[[p is not None for p in place]]
    place = [p for p in place if p is not None]
    table = table.assign(_arm=[i for i, _ in place], arm=[name for _, name in place])
    table = _clean_first(table.sort_values(["setting", "_arm"], kind="stable"), options.clean)
    if table.empty:
        raise ValueError(f"no {'clean ' if options.clean else ''}setting has a saving of {', '.join(columns) or 'an arm'}")
    optuna = o.optuna_tuners
    flops = (table["tuner_flops"].map(fmt_cost) if not optuna else
             [with_interval(v, lo, hi, fmt_cost) for v, lo, hi in
              zip(table["tuner_flops"], table["tuner_flops_ci_low"], table["tuner_flops_ci_high"])])
    rows = pd.DataFrame({
        "setting": [setting_name(s, t) for s, t in zip(table["setting"], table["trap"])], "arm": table["arm"],
        "τ": table["tau"].map(fmt_score),
        "cheapest tuner to τ (budget)": [_tuner_cell(r) for r in table.itertuples(index=False)],
        "its FLOPs" + (" [CI]" if optuna else ""): list(flops),
        "arm P(reach τ) [CI]": [with_interval(v, lo, hi, fmt_share) for v, lo, hi in
                                zip(table["p_reach"], table["p_reach_ci_low"], table["p_reach_ci_high"])],
        "arm FLOPs": table["arm_flops"].map(fmt_cost),
        "saving, FLOPs [CI]": savings_text(table, "flops")})
    tolerance = o.tolerances[0]
    tuners = ("grid search, random search and successive halving (η = " + ", ".join(str(v[1]) for v in SH_VARIANTS)
              + ")")
    choice = (f"the cheapest of Optuna's replayed samplers and pruners ({o.optuna_replicates} studies per tuner and "
              f"setting, clean settings only) and {tuners}, chosen again in every replicate (as the report's "
              "`optuna_lead` table); its FLOPs' interval from the same replicates" if optuna else
              f"of {tuners} as the report runs them, the one whose cost to reach τ is lowest in FLOPs on the observed "
              "seeds (the first listed on ties; the report's `tuner_reach` table); the saving's interval is against "
              "that tuner (the report's `savings` table)")
    model = ("the practitioner's model: each configuration trained once at one seed, chosen by its validation score"
             if o.tuner_model == PRACTITIONER else "the idealised model: selection on every seed's statistic")
    notes = left_out_text(left_out) + "".join(f" Tuner unavailable: {n}." for n in savings.notes)
    return (to_markdown(rows) + "\n\n"
            f"*`{metric}` on the test prompts. τ = the test score of tuned {options.baseline} (its validation-best "
            f"configuration, {o.stat} over seeds) − {tolerance:g}. Cheapest tuner to τ: {choice}; tuners under "
            f"{model}; its cost to reach τ is that of the cheapest budget whose expected selected test score ≥ τ "
            "(budget = the trials: N for grid search, k for random search, the n it starts for successive "
            "halving). Arm P(reach τ) = the share of the arm's seeds whose one run at its defaults scores ≥ τ. "
            "Saving = 1 − FLOPs(the arm's one run) / FLOPs(the tuner to τ); \"misses τ\" where the arm's score is "
            "below τ, \"tuner misses τ\" where no tuner reaches it. Costs "
            f"{CONVENTION_TEXT[o.convention]} ({o.convention}). {_bootstrap_text(o)}.{notes}*\n")


# ---------------------------------------------------------------------------------------------
# The mechanism: ΔPMI against its controls


def mechanism_table(r: ReportRuns, options) -> pd.DataFrame:
    """The report's signal verdicts (§2a) with, per setting and method, the controls it compared
    (`controls`) and the smallest seed count (`n_seeds`). ValueError naming what is missing where the
    records hold no signal-control pair."""
    runs = r.runs
    need = (f"the mechanism view needs IMI runs of one configuration with `{SIGNAL_COLUMN}` = {PMI} and with a "
            f"control ({', '.join(CONTROLS)}), as `experiment=ablation_signal` runs them")
    imi = runs[runs["is_imi"].astype(bool)]
    if SIGNAL_COLUMN not in runs.columns or imi[SIGNAL_COLUMN].isna().all():
        raise ValueError(f"no IMI run in the records has `{SIGNAL_COLUMN}` (no signal-control runs); {need}")
    signals = sorted(imi[SIGNAL_COLUMN].dropna().astype(str).unique())
    if PMI not in signals or not set(signals) & set(CONTROLS):
        missing = PMI if PMI not in signals else "a control"
        raise ValueError(f"the IMI runs' signals are {signals}, none is {missing}; {need}")
    table = signal_control_table(runs, r.boot, r.metric, options.report.confidence)
    if table.empty:
        raise ValueError(f"no control configuration has a {PMI} configuration equal to it in every other "
                         f"method key (signals {signals}); {need}")
    verdicts = signal_verdicts(table)
    extra = table.groupby(["setting", "method"], sort=True).agg(
        controls=("control", lambda c: ", ".join(k for k in CONTROLS if k in set(c))), n_seeds=("n_seeds", "min"))
    return verdicts.join(extra, on=["setting", "method"])


def mechanism_markdown(verdicts: pd.DataFrame, metric: str, options) -> str:
    """The mechanism view: one row per setting and IMI method, and the lines that define its words."""
    o = options.report
    if options.arms is not None:
        unknown = [m for m in options.arms if m not in set(verdicts["method"])]
        if unknown:
            raise ValueError(f"--arms {', '.join(unknown)}: no signal-control pair of that method in the records; "
                             f"methods with one: {sorted(verdicts['method'].unique())}")
        verdicts = verdicts[verdicts["method"].isin(options.arms)]
        verdicts = verdicts.assign(_order=verdicts["method"].map(options.arms.index)).sort_values(
            ["setting", "_order"], kind="stable")
    verdicts = _clean_first(verdicts, options.clean)
    if verdicts.empty:
        raise ValueError("no clean setting has a signal-control pair")
    rows = pd.DataFrame({
        "setting": [setting_name(s, t) for s, t in zip(verdicts["setting"], verdicts["trap"])],
        "method": verdicts["method"], "seeds": verdicts["n_seeds"].map(fmt_count), "controls": verdicts["controls"],
        "pmi beats": verdicts["beats"].replace("", "none"),
        "pmi_residual keeps what pmi does": verdicts["residual_keeps"].map(
            lambda v: "–" if not isinstance(v, bool) else "yes" if v else "no"),
        "reading": verdicts["reading"]})
    conf = f"{100 * o.confidence:g}%"
    return (to_markdown(rows) + "\n\n"
            "*Per setting and IMI method, the same configuration with its regulator reading ΔPMI (`pmi`) and each "
            "control (docs/design.md §4): `length` (the length statistic 1/|y_w| − 1/|y_l| at ΔPMI's batch mean and "
            "spread), `shuffled` (ΔPMI of other pairs), `constant` (its batch mean), `pmi_residual` (ΔPMI less its "
            f"linear length component). Δ = pmi − control in `{metric}` on the test prompts, mean over seeds, paired "
            f"by seed. Columns: pmi beats = the controls among length, shuffled, constant whose {conf} interval of Δ lies "
            "above 0; pmi_residual keeps what pmi does = the interval of pmi − pmi_residual contains 0 (– where it "
            "was not run); reading = the first that holds of — pmi beats neither shuffled nor constant: \"per-pair "
            "values not shown to matter here\"; pmi does not beat length: \"not shown to be more than a length prior "
            "here\"; pmi_residual keeps it: \"more than a length prior here\"; else \"more than length, but not its "
            f"length-free part alone\" (the report's §2a, `signal_verdicts`). {_bootstrap_text(o)}.*\n")
