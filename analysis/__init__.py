"""imi-bench analysis: run records -> tuning-cost estimates -> tables, figures and a report (docs/design.md §11, §11a).

It reads the records `bench` writes (or W&B runs) and never imports `bench`, so it works from committed records
alone; docs/architecture.md lists its modules in data-flow order and its commands. The pure functions are
importable from here; plotting and the report are not imported by default, so `import analysis` needs no matplotlib.
"""
from analysis.costs import CONVENTIONS, charged_costs, procedure_builds, shared_build_costs
from analysis.grid import LEGACY_METHOD_INFO, annotate, configuration_columns
from analysis.load import LoadedRuns, curve_frame, load_runs, read_history
from analysis.metrics import expected_max, expected_max_curve, seed_summary
from analysis.selection import SeedBootstrap, choose, chosen_runs, chosen_stat, seed_bootstrap, seed_stat
from analysis.stats import (expanded_percentile_interval, expanded_tail, iqm, percentile_interval,
                            probability_of_improvement, seed_interval)
from analysis.tuner_models import grid_tuners
from analysis.tuner_selection import (grid_selection, halving_selection, random_search_selection,
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
