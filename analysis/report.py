"""The analysis report: runs -> tables (CSV, LaTeX), figures (PNG, PDF) and report.md (docs/design.md §11, §11a).

Composes the pure functions of the other modules; owns only the choice of what to show, the wording
of report.md (the citability verdict in its header, the definition of every number, the cost
convention in force) and the file layout:
    <out>/report.md
    <out>/tables/<name>.csv and <name>.tex
    <out>/figures/<name>.png and <name>.pdf
The sections themselves are written by `report_scores`, `report_tuning`, `report_figures`,
`report_appendix` and `report_studies`, over one `report_context.Context`. A sweep that lacks some
methods gets every table it can support; each one it cannot is skipped with a note, never an exception.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import plots, report_appendix, report_figures, report_scores, report_studies, report_tuning
from analysis.costs import CONVENTIONS, DEFAULT_CONVENTION
from analysis.entries import build_entries, comparison_table
from analysis.live_tuning import split_trials
from analysis.load import LoadedRuns
from analysis.metrics import check_metric, seed_summary
from analysis.protocol import citability, prompt_sets_text
from analysis.report_context import Context
from analysis.sft_level import add_delta, reference_column, sft_levels, sft_source
from analysis.selection import STATS, seed_bootstrap, validation_column
from analysis.stats import RECOMMENDED_REPLICATES, expanded_tail
from analysis.tables import to_markdown, write_table
from analysis.tuner_models import PRACTITIONER, TUNER_MODELS

DEFAULT_METRIC = "gold_reward"
DEFAULT_TOLERANCES = (0.0, 0.05)
CONVENTION_TEXT = {
    "per_procedure": ("charged per tuning procedure: each procedure (an arm on a setting — a baseline's whole "
                      "grid or tuner, or the single run of an IMI method) pays every distinct shared build it "
                      "used (SFT checkpoint, dataset, reference terms) once, plus its runs' own costs"),
    "amortize": ("amortised: each shared build (SFT checkpoint, dataset, reference terms) is charged once, "
                 "its cost divided equally over the loaded runs that used it"),
    "per_run": ("charged per run: every run pays the full cost of every shared build it used, as if it had "
                "run alone"),
}


TUNER_MODEL_TEXT = {
    "practitioner": ("the practitioner's model — a tuning procedure with budget k trains k configurations ONCE each "
                     "(one seed), picks by those runs' validation scores and is scored by the chosen run's test score; "
                     "expected scores, P(reach τ) and costs are over seeds (exact: every seed, every subset), and the "
                     "cost counts the runs actually trained plus that seed's shared builds."),
    "idealised": ("**idealised** (every tuner is labelled so) — a trial shows the tuner its configuration's statistic "
                  "over ALL seeds while being charged one run, so it selects with n seeds' information: flattering to "
                  "the tuner. The default is the practitioner's model (one run per configuration)."),
}


@dataclass(frozen=True)
class ReportOptions:
    """What the report computes. metric None = the runs' `objective` config if they agree, else gold_reward."""

    metric: str | None = None
    baseline: str = "dpo"
    tolerances: tuple[float, ...] = DEFAULT_TOLERANCES
    convention: str = DEFAULT_CONVENTION
    stat: str = "mean"
    n_boot: int = RECOMMENDED_REPLICATES
    confidence: float = 0.95
    seed: int = 0
    tuner_model: str = PRACTITIONER  # "idealised": tuners select on n-seed statistics (an option, labelled so)
    figures: bool = True  # False: tables and report.md only (much faster; figures are most of the time)
    # Lead with IMI's saving against the cheapest tuner, Optuna's replays included (`python -m analysis tuners`
    # has the rest); off by default: the replays take minutes on a dense grid.
    optuna_tuners: bool = False
    optuna_replicates: int = 200  # Optuna studies per replayed tuner and setting, as `python -m analysis tuners`

    def __post_init__(self):
        if self.convention not in CONVENTIONS:
            raise ValueError(f"cost convention must be one of {list(CONVENTIONS)}, got {self.convention!r}")
        if self.tuner_model not in TUNER_MODELS:
            raise ValueError(f"tuner model must be one of {list(TUNER_MODELS)}, got {self.tuner_model!r}")
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
    verdict: str = "not citable"

    @property
    def citable(self) -> bool:
        return self.verdict == "citable"


def resolve_metric(runs: pd.DataFrame, requested: str | None) -> str:
    """The score column: `requested`, else the runs' single `objective` config value, else gold_reward."""
    if requested:
        return requested
    if "objective" in runs.columns:
        objectives = runs["objective"].dropna().unique()
        if len(objectives) == 1:
            return str(objectives[0])
    return DEFAULT_METRIC


class Writer:
    """Collects report.md sections and the files written, so build_report reads top to bottom."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.tables = out_dir / "tables"
        self.figures = out_dir / "figures"
        self.sections: list[str] = []
        self.files: list[Path] = []
        self.notes: list[str] = []
        self.header_end = 1  # where the "Notes" section goes: after the header, once it is written

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


def _sft_text(runs: pd.DataFrame, metric: str) -> str:
    source = sft_source(runs, metric)
    if source == "records":
        return (f"`{reference_column(runs, metric)}` (the SFT model's samples scored on the same test prompts, per "
                "run); every table has an SFT row and Δ vs SFT (paired per run)")
    if source == "definition":
        return "0.5 by definition (the win rate is measured against the SFT model's own samples, ties ½)"
    return f"unknown for `{metric}` (no `reference_{metric}` in the records): no SFT row, no Δ vs SFT"


def build_report(loaded: LoadedRuns, out_dir: str | Path, options: ReportOptions = ReportOptions(),
                 source: str = "") -> Report:
    """Compute every table and figure the runs support and write them under `out_dir`.

    Raises ValueError (naming the metric) only when the chosen metric is absent from every record or is
    lower-is-better; anything a partial sweep lacks becomes a note in report.md.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    w = Writer(out_dir)
    o = options
    metric = resolve_metric(loaded.runs, o.metric)
    if not loaded.runs.empty:
        check_metric(loaded.runs, metric)
    w.text(f"# Tuning-cost report: {metric}")
    if loaded.runs.empty:
        w.text("**Not citable: no completed runs.**")
        w.note("no completed runs were loaded, so there is nothing to analyse (see the skipped runs below).")
        report_appendix.skipped_section(w, loaded)
        return _finish(w, "not citable: no completed runs")

    # live studies' trials leave the grid tables (§3a); §3a draws them apart
    runs, trials = split_trials(loaded, o.convention)
    missing = runs[metric].isna()
    runs = add_delta(runs[~missing], metric)
    if runs.empty:
        w.text("**Not citable: no run reports the metric**" + (" outside the live tuning studies." if trials is not None else "."))
        w.note(f"no completed run reports `{metric}`" + (" outside the live tuning studies (below)." if trials is not None else "."))
        if trials is not None:
            report_studies.live_tuning_section(w, trials, metric, o)
        report_appendix.skipped_section(w, loaded)
        return _finish(w, f"not citable: no run reports {metric}")
    boot = seed_bootstrap(runs, o.n_boot, o.seed)
    summary = seed_summary(runs, metric, boot, o.stat, o.confidence)
    sft = sft_levels(runs, metric, boot, o.confidence)
    entries = build_entries(runs, boot, metric, o.stat)
    verdict = citability(runs, entries, metric, o.n_boot)
    comparison = comparison_table(entries, runs, boot, metric, o.stat, o.baseline, sft, o.confidence)
    traps = runs.groupby("setting")["trap"].first()
    traps = traps[traps != ""]

    n_min = int(runs.groupby("config_id").size().min())
    conf = f"{100 * o.confidence:g}%"
    w.text(f"**Verdict:** {verdict.headline()}\n\n" + "".join(f"- {d}\n" for d in verdict.details))
    w.text(f"- Runs: `{source or loaded.source}` — {loaded.skip_summary()}."
           + (f" {int(missing.sum())} completed runs have no `{metric}` and are left out." if missing.any() else "") + "\n"
           f"- Score: `{metric}` on the TEST prompts (higher is better); a configuration's score is the **{o.stat}** "
           f"over its seeds.\n"
           f"- Selection: a *tuned* arm picks its configuration by its {o.stat} VALIDATION score "
           f"(`{validation_column(metric)}`, {prompt_sets_text(runs)}) and reports that configuration's test score; "
           "in every bootstrap replicate the choice is made again. *Oracle* = chosen on the test scores themselves "
           "(optimistic; shown beside, never aggregated). An arm is *tuned* only with ≥ 2 configurations loaded "
           "on a setting; a baseline with one is shown as *(default)*.\n"
           f"- Baseline: `{o.baseline}`; target τ = the test score of its validation-selected configuration − "
           f"tolerance, tolerances {', '.join(f'{t:g}' for t in o.tolerances)} (in `{metric}` units).\n"
           f"- SFT starting point: {_sft_text(runs, metric)}.\n"
           f"- Cost convention: **{o.convention}** — {CONVENTION_TEXT[o.convention]}. FLOPs are the primary cost, "
           "device-hours beside them; time spent waiting on cache locks and queues (`cost.wait_s`) is shown and "
           "never counted as compute.\n"
           f"- Intervals: {conf} paired bootstrap over seeds — the seed is the unit: each replicate draws a "
           "setting's seeds with replacement once for ALL its configurations and methods (runs aligned by seed "
           "value; settings drawn independently), so a difference between two arms keeps their shared seed "
           f"effect; {o.n_boot} replicates (random seed {o.seed}) — read as the expanded percentile interval "
           "(Hesterberg 2015: quantiles α'/2 = Φ(−√(n/(n−1))·t_{1−α/2,n−1}), n = the smallest seed count involved, "
           f"here {n_min} → α'/2 = {expanded_tail(n_min, o.confidence):.2g}), widened where needed to the estimate ± "
           "√(n/(n−1))·t_{1−α/2,n−1}·SD(replicates); a probability (P(reach τ)) also to at least its Wilson score "
           "interval at n. Coverage is checked by simulation at 5 seeds for the statistics printed here "
           "(validation-reselected Δ vs tuned, P(reach τ), savings) under a model with a seed effect shared across "
           "configurations, fitted to committed records (`results/coverage/`).\n"
           f"- Tuners: {TUNER_MODEL_TEXT[o.tuner_model]}\n"
           + ("- Trap settings (marked *(trap)*, left out of the headline aggregates and savings, shown apart): "
              + "; ".join(f"{s} — {t}" for s, t in traps.items()) + "." if len(traps) else
              ("- Trap settings: none (no run's `dataset.trap` is set)." if "dataset.trap" in runs.columns else
               "- Trap settings: unknown — these records predate `dataset.trap`, so none is marked.")))
    settings = sorted(runs["setting"].unique())
    arms = runs.groupby("arm")["arm_kind"].first()
    w.text(f"- Settings (dataset · model · setup): {', '.join(settings)}.\n"
           f"- Arms: {', '.join(f'{a} ({k})' for a, k in arms.items())} — *grid* = a baseline with ≥ 2 "
           "configurations (tuned), *fixed* = one configuration (an IMI method at its defaults, or a baseline's "
           "single configuration).")

    w.header_end = len(w.sections)
    context = Context(runs, boot, summary, sft, entries, comparison, metric, o, traps)
    if o.optuna_tuners:
        report_studies.optuna_lead_section(w, context)
    report_scores.comparison_section(w, context)
    report_scores.testbed_section(w, context)
    report_studies.signal_section(w, context)
    report_studies.imi_action_section(w, context)
    report_studies.lm_eval_section(w, context)
    if trials is not None:
        report_studies.live_tuning_section(w, trials, metric, o, context)
    tuning = report_tuning.tuning_section(w, context)
    curves = report_tuning.expected_best_section(w, context)
    report_scores.grid_section(w, context)
    report_scores.aggregate_section(w, context)
    report_scores.configurations_section(w, context)
    if o.figures:
        report_figures.figures_section(w, context)
        report_figures.tuning_figures(w, context, curves, tuning)
    else:
        w.text("## 9. Figures\n\nNot drawn (--no-figures).")
    report_appendix.shared_costs_section(w, context)
    report_appendix.skipped_section(w, loaded)
    return _finish(w, "citable" if verdict.citable else "; ".join(verdict.labels))


def _finish(w: Writer, verdict: str) -> Report:
    if w.notes:
        w.sections.insert(w.header_end, "## Notes\n\n" + "\n".join(f"- {n}" for n in w.notes) + "\n")
    path = w.out_dir / "report.md"
    path.write_text("\n".join(w.sections))
    return Report(w.out_dir, path, [path, *w.files], w.notes, verdict)
