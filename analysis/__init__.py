"""imi-bench analysis: run records -> tuning-cost estimates -> tables, figures and a report (docs/design.md §11, §11a).

Reads the records `bench` writes (`<runs root>/<sweep id>/<run id>/record.json` + `history.jsonl`) or
W&B runs, and never imports `bench` or any training code: it works from committed records alone.

Modules, in the order data flows through them:
    load        records -> one tidy DataFrame, one row per completed run (val_curve kept whole); skipped runs + why
    wandb_runs  the same from the W&B API
    grid        settings (and traps), configurations, arms (grid / fixed); method knowledge from method_info
    selection   the paired seed bootstrap shared by every interval (seeds drawn jointly for every
                configuration of a setting); choosing a configuration by validation score (re-chosen in
                every replicate), or on test (the oracle)
    sft_level   the SFT starting point: its level per setting, Δ vs SFT per run
    metrics     per-configuration summaries over seeds with intervals; Ê_k weights
    entries     what is compared per setting (tuned / oracle / default / IMI / SFT) and the comparison tables
    costs       own and charged cost per run; shared builds per procedure, amortised or per run
    tuners      grid search, random search, successive halving as selection probabilities over arrays,
                under the practitioner's model (one run per configuration, the default) or the idealised one
    tuning      expected best of k, tuners' cost to reach τ, savings with intervals, summed over settings
    aggregate   IQM / mean / probability of improvement across settings on SFT-to-tuned normalised scores
    stats       intervals over seeds (expanded percentile bootstrap, t-widened; Wilson floor for a
                probability), IQM, probability of improvement
    protocol    is a report citable: seeds, budget, validation data, measured prompt-set overlaps
    plots       β-sensitivity, expected best vs trials / FLOPs, reward–KL, ΔPMI traces
    tables      CSV / LaTeX / Markdown writers
    report      composes all of the above into <out>/report.md, tables/ and figures/ (sections in report_sections)
    coverage    the intervals' coverage by simulation, under a model fitted to committed records
Command line: `python -m analysis report <runs dir> --out <dir>`, `python -m analysis runs <runs dir>`,
`python -m analysis coverage <runs dir> --out <dir>` (and `headline`, see `analysis.headline`).

The pure functions are importable from here; plotting and the report are not imported by default so
that `import analysis` stays free of matplotlib.
"""
from analysis.costs import CONVENTIONS, charged_costs, procedure_builds, shared_build_costs
from analysis.grid import LEGACY_METHOD_INFO, annotate, configuration_columns
from analysis.load import LoadedRuns, curve_frame, load_runs, read_history
from analysis.metrics import expected_max, expected_max_curve, seed_summary
from analysis.selection import SeedBootstrap, choose, chosen_runs, chosen_stat, seed_bootstrap, seed_stat
from analysis.stats import (expanded_percentile_interval, expanded_tail, iqm, percentile_interval,
                            probability_of_improvement, seed_interval)
from analysis.tuning import (grid_selection, grid_tuners, halving_selection, random_search_selection,
                             val_selected_expectation)
from analysis.wandb_runs import load_wandb_runs

__all__ = [
    "CONVENTIONS", "LEGACY_METHOD_INFO", "LoadedRuns", "SeedBootstrap", "annotate", "charged_costs",
    "choose", "chosen_runs", "chosen_stat", "configuration_columns", "curve_frame", "expanded_percentile_interval",
    "expanded_tail", "expected_max", "expected_max_curve", "grid_selection", "grid_tuners", "halving_selection",
    "iqm", "load_runs", "load_wandb_runs", "percentile_interval", "probability_of_improvement", "procedure_builds",
    "random_search_selection", "read_history", "seed_bootstrap", "seed_interval", "seed_stat", "seed_summary",
    "shared_build_costs", "val_selected_expectation",
]
