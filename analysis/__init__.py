"""imi-bench analysis: run records -> tuning-cost estimates -> tables, figures and a report (DESIGN §11).

Reads the records `bench` writes (`<runs root>/<sweep id>/<run id>/record.json` + `history.jsonl`) or
W&B runs, and never imports `bench` or any training code: it works from committed records alone.

Modules, in the order data flows through them:
    load       records (files or W&B) -> one tidy DataFrame, one row per completed run; skipped runs + why
    grid       settings, configurations, arms; method families and published default β
    metrics    seed summaries, best-of-grid, default regret, expected best of k (Ê_k) with seed bootstrap
    costs      charged cost per run (shared caches amortised or per run), cost to reach τ, savings
    stats      IQM, probability of improvement, (stratified) bootstrap, percentile intervals
    aggregate  IQM / probability of improvement across settings for tuned, default and IMI arms
    plots      β-sensitivity, expected best vs trials / device-hours, reward–KL, ΔPMI traces
    tables     CSV / LaTeX / Markdown writers
    report     composes all of the above into <out>/report.md, tables/ and figures/
Command line: `python -m analysis report <runs dir> --out <dir>` and `python -m analysis runs <runs dir>`.

The pure functions are importable from here; plotting and the report are not imported by default so
that `import analysis` stays free of matplotlib.
"""
from analysis.aggregate import comparison_entries, improvement_table, iqm_table, normalize_scores
from analysis.costs import (charged_costs, cost_to_reach_table, expected_cost_to_reach, savings_summary,
                            shared_build_costs)
from analysis.grid import DEFAULT_BETA, IMI_METHODS, annotate, configuration_columns, is_imi_method
from analysis.load import LoadedRuns, load_runs, load_wandb_runs, read_history
from analysis.metrics import (best_of_grid, default_regret, expected_best_table, expected_max, expected_max_curve,
                              seed_summary)
from analysis.stats import iqm, percentile_interval, probability_of_improvement, stratified_bootstrap

__all__ = [
    "DEFAULT_BETA", "IMI_METHODS", "LoadedRuns", "annotate", "best_of_grid", "charged_costs", "comparison_entries",
    "configuration_columns", "cost_to_reach_table", "default_regret", "expected_best_table", "expected_cost_to_reach",
    "expected_max", "expected_max_curve", "improvement_table", "iqm", "iqm_table", "is_imi_method", "load_runs",
    "load_wandb_runs", "normalize_scores", "percentile_interval", "probability_of_improvement", "read_history",
    "savings_summary", "seed_summary", "shared_build_costs", "stratified_bootstrap",
]
