"""The headline tables of a results folder, generated from its run records (docs/design.md §11, §11a).

Four views: the comparison (each arm's Δ vs the tuned baseline), `--savings` (the saving against the
cheapest tuner that reaches τ), `--mechanism` (ΔPMI against its signal controls) and `--per-seed` (the runs
behind the comparison). The first three's cells are cells of the report's tables, made by the same calls with
the same defaults, so a headline equals its report (those two views: `analysis.headline_views`; the per-seed
view, values of single runs: `analysis.seed_view`). Owns the views' options, the comparison's shape and a
cache that computes each view once; no statistics. The command line and the copies embedded in documents:
`analysis.headline_docs`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from analysis.entries import build_entries, comparison_table
from analysis.headline_views import (ReportRuns, arm_columns, declared_defaults, left_out_text, mechanism_markdown, mechanism_table,
                                     report_runs, savings_markdown, savings_table)
from analysis.load import LoadedRuns, load_runs
from analysis.sft_level import sft_levels
from analysis.report import ReportOptions
from analysis.report_context import setting_name
from analysis.seed_view import seeds_markdown, seeds_table
from analysis.tables import fmt_score, fmt_signed, to_markdown, with_interval

VIEWS = ("comparison", "savings", "mechanism", "seeds")


@dataclass(frozen=True)
class HeadlineOptions:
    """What a headline shows. arms None = every IMI arm, then `headline_views.COMPETITORS` present in the records;
    otherwise method names (`method.name`), each shown with its untuned entries on a setting: an IMI
    method's at its declared defaults as one column, or with all_configs every one (`arm_columns`).
    view: one of VIEWS; the savings view reads its tolerance (one), convention and optuna_tuners from
    `report`."""

    baseline: str = "dpo"
    metric: str | None = None
    arms: tuple[str, ...] | None = None
    clean: bool = False  # only clean-label settings (trap settings left out)
    report: ReportOptions = ReportOptions()  # stat, n_boot, confidence and seed, as the report's
    view: str = "comparison"
    all_configs: bool = False  # every configuration of an IMI method, not only its declared defaults

    def __post_init__(self):
        if self.view not in VIEWS:
            raise ValueError(f"headline view must be one of {list(VIEWS)}, got {self.view!r}")
        if self.view == "savings" and len(self.report.tolerances) != 1:
            raise ValueError(f"the savings view shows one tolerance, got {list(self.report.tolerances)}")


def comparison(loaded: LoadedRuns, options: HeadlineOptions = HeadlineOptions()) -> tuple[pd.DataFrame, str]:
    """The report's comparison table of these runs against `options.baseline`, and the metric used.

    The steps of `report.build_report` that the comparison depends on, in its order: live-study trials are
    set apart, runs without the metric are dropped after annotation, one bootstrap is drawn over all the
    rest (every arm, so the replicates equal the report's), then SFT levels, entries and the table.
    """
    o = options.report
    return comparison_of(report_runs(loaded, options.metric, o.n_boot, o.seed), options)


def comparison_of(r: ReportRuns, options: HeadlineOptions) -> tuple[pd.DataFrame, str]:
    """`comparison` on runs already prepared by `report_runs`."""
    o = options.report
    runs, boot, metric = r.runs, r.boot, r.metric
    sft = sft_levels(runs, metric, boot, o.confidence)
    entries = build_entries(runs, boot, metric, o.stat)
    table = comparison_table(entries, runs, boot, metric, o.stat, options.baseline, sft, o.confidence)
    is_imi = runs.groupby("method.name")["is_imi"].first()
    table["is_imi"] = table["method"].map(is_imi).eq(True)  # the SFT rows have no method: not IMI
    table = table.join(declared_defaults(runs).rename("declared"), on=["setting", "entry"])
    table["declared"] = table["declared"].eq(True)  # tuned, oracle and SFT rows are no arm's runs
    return table, metric


def shown_columns(table: pd.DataFrame, options: HeadlineOptions) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The columns shown beside the tuned baseline, {name: {setting: entry}}, and the IMI entries left out
    (see `arm_columns`)."""
    return arm_columns(table[table["kind"].isin(["fixed", "default"])], options.arms, options.all_configs)


def headline_table(table: pd.DataFrame, options: HeadlineOptions) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Strings for people, one row per setting with a tuned baseline, clean settings first: setting,
    SFT, tuned <baseline> (config), its Δ vs SFT [CI], then each shown arm's Δ vs tuned [CI] ("–"
    where the arm did not run); the settings left out for want of a tuned baseline; the IMI entries
    left out (ablations, see `arm_columns`)."""
    baseline = options.baseline
    clean = table["trap"].fillna("") == ""
    if options.clean:
        table = table[clean]
    tuned = table[(table["method"] == baseline) & (table["kind"] == "tuned")]
    if tuned.empty:
        tuned_methods = sorted(table.loc[table["kind"] == "tuned", "method"].unique())
        raise ValueError(f"no {'clean ' if options.clean else ''}setting has a tuned {baseline!r} (≥ 2 "
                         f"configurations) to compare against; tuned methods there: {tuned_methods}")
    tuned = tuned.assign(_trap=tuned["trap"].fillna("") != "").sort_values(["_trap", "setting"], kind="stable")
    sft = table[table["kind"] == "sft"].set_index("setting")["score"]
    columns, left_out_arms = shown_columns(table, options)
    rows = []
    for t in tuned.itertuples(index=False):
        here = table[table["setting"] == t.setting].set_index("entry")
        # a choice made on test is the oracle, not a tuned score: the cell says so
        config = t.config if t.selected_on == "validation" else f"{t.config}, selected on TEST"
        row = {"setting": setting_name(t.setting, t.trap), "SFT": fmt_score(sft.get(t.setting)),
               f"tuned {baseline} (config)": f"{fmt_score(t.score)} ({config})",
               "Δ vs SFT": with_interval(t.delta_sft, t.delta_sft_ci_low, t.delta_sft_ci_high, fmt_signed)}
        for name, cells in columns.items():
            arm = cells.get(t.setting)
            row[name] = (with_interval(here.at[arm, "delta_tuned"], here.at[arm, "delta_tuned_ci_low"],
                                       here.at[arm, "delta_tuned_ci_high"], fmt_signed) if arm in here.index else "–")
        rows.append(row)
    left_out = sorted(set(table["setting"]) - set(tuned["setting"]))
    return pd.DataFrame(rows), left_out, left_out_arms


def headline_markdown(loaded: LoadedRuns, options: HeadlineOptions = HeadlineOptions()) -> str:
    """The headline of `options.view`: a Markdown table and the lines that define its numbers."""
    o = options.report
    r = report_runs(loaded, options.metric, o.n_boot, o.seed)
    return render_view(compute_view(r, options), r.metric, options)


def compute_view(r: ReportRuns, options: HeadlineOptions):
    """What `options.view` needs from the report's calls; `options.arms` and `clean` play no part."""
    if options.view == "savings":
        return savings_table(r, options)
    if options.view == "mechanism":
        return mechanism_table(r, options)
    if options.view == "seeds":
        return r.runs
    return comparison_of(r, options)[0]


def render_view(computed, metric: str, options: HeadlineOptions) -> str:
    """The Markdown of `compute_view`'s output."""
    if options.view == "savings":
        return savings_markdown(computed, metric, options)
    if options.view == "mechanism":
        return mechanism_markdown(computed, metric, options)
    if options.view == "seeds":
        return seeds_markdown(seeds_table(computed, metric, options.baseline, options.arms, options.clean), metric)
    return render(computed, metric, options)


def render(table: pd.DataFrame, metric: str, options: HeadlineOptions) -> str:
    """The headline of a comparison table (`comparison`'s output)."""
    shown, left_out, left_out_arms = headline_table(table, options)
    o = options.report
    conf = f"{100 * o.confidence:g}%"
    missing = (f" Not shown (no tuned {options.baseline}): {', '.join(left_out)}." if left_out else "")
    return (to_markdown(shown) + "\n\n"
            f"*`{metric}` on the test prompts, {o.stat} over seeds. tuned = the configuration with the best "
            f"{o.stat} validation score (re-selected in every bootstrap replicate); Δ vs SFT = tuned − the SFT "
            f"model, paired per run; the other columns: Δ = the arm − tuned {options.baseline}. [{conf} interval]: "
            f"seed bootstrap, {o.n_boot} replicates, random seed {o.seed}, as in `python -m analysis report`."
            f"{missing}{left_out_text(left_out_arms)}*\n")


class Computer:
    """Headlines of folders under `root`, loading each folder, drawing each bootstrap and computing each view
    once (a document's blocks share them)."""

    def __init__(self, root: Path):
        self.root = root
        self.loaded: dict[Path, LoadedRuns] = {}
        self.runs: dict[tuple, ReportRuns] = {}
        self.views: dict[tuple, object] = {}

    def markdown(self, runs_dir: Path, options: HeadlineOptions) -> str:
        """The headline of the folder `runs_dir` (relative to the root) with these options."""
        folder = (self.root / runs_dir).resolve()
        if folder not in self.loaded:
            self.loaded[folder] = load_runs(folder)
        o = options.report
        runs_key = (folder, options.metric, o.n_boot, o.seed)
        if runs_key not in self.runs:
            self.runs[runs_key] = report_runs(self.loaded[folder], options.metric, o.n_boot, o.seed)
        r = self.runs[runs_key]
        # arms, --clean and --all-configs only choose cells: one computation serves every block of a folder, view
        # and baseline
        key = (folder, replace(options, arms=None, clean=False, all_configs=False))
        if key not in self.views:
            self.views[key] = compute_view(r, options)
        return render_view(self.views[key], r.metric, options)
