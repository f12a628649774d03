"""Live tuning studies: Optuna studies run through the sweep (`hydra/sweeper=optuna`, the tune_* presets), read
back from their runs' records (docs/design.md §10, §11 "Live tuning studies").

Each trial's record carries config.tuning = {study, trial}. A study is one tuning procedure at one seed, as a
practitioner runs it: after n trials it holds the trial with the best VALIDATION score so far, and is scored by
that trial's TEST score; its cost after n trials is its trials' own costs plus every shared build they used,
once (the per-procedure convention). Pure functions over a runs frame; no I/O, no plotting.
"""
from __future__ import annotations

import pandas as pd

from analysis.costs import DEFAULT_CONVENTION, charged_costs, procedure_builds, shared_build_costs
from analysis.grid import annotate
from analysis.load import LoadedRuns

STUDY_COLUMN, TRIAL_COLUMN = "tuning.study", "tuning.trial"
TRAJECTORY_COLUMNS = ["setting", "study", "seed", "trial", "config_label", "val", "test", "flops", "best_trial",
                      "best_config", "best_val", "best_test"]


def study_runs(runs: pd.DataFrame) -> pd.Series:
    """Per run: whether it is a trial of a live tuning study (bool)."""
    if STUDY_COLUMN not in runs.columns:
        return pd.Series(False, index=runs.index)
    return runs[STUDY_COLUMN].notna() & (runs[STUDY_COLUMN].astype(str) != "")


def split_trials(loaded: LoadedRuns, convention: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(the grid's runs, the live studies' trials or None): the loaded runs, annotated apart and charged under
    `convention`. A trial is a procedure of its own (§3a), one seed of one continuous β: among a grid's
    configurations it would change the arms' labels, and it would leave only its own seed with the whole grid
    run. Builds are charged before the split, and before any run is dropped for lacking the metric: every
    run used, and shared, them."""
    charged = charged_costs(loaded.runs, convention)
    live = study_runs(loaded.runs)
    trials = annotate(loaded.runs[live], loaded.config_columns).join(charged[live]) if live.any() else None
    return annotate(loaded.runs[~live], loaded.config_columns).join(charged[~live]), trials


def study_trajectories(runs: pd.DataFrame, metric: str, val_metric: str,
                       convention: str = DEFAULT_CONVENTION) -> pd.DataFrame:
    """Every study's best-so-far, trial by trial.

    In: annotated runs (setting, seed, config_label, charged.flops, cost.shared.*) with `metric` (test) and
    `val_metric` (validation); only the study trials among them are used. Out: one row per trial in trial
    order, columns TRAJECTORY_COLUMNS: the trial's own scores, `flops` = the study's cumulative cost after it
    (its trials' charged FLOPs plus the shared builds used so far, once), and the best-by-validation trial so
    far with its validation and test scores (the first of equal validation scores wins, as a practitioner
    keeps the earlier of two equal runs).
    """
    trials = runs[study_runs(runs)]
    builds = shared_build_costs(runs) if len(trials) else None
    rows = []
    for study, group in trials.groupby(STUDY_COLUMN, sort=True):
        group = group.sort_values(TRIAL_COLUMN, kind="stable")
        best = None
        own = 0.0
        for position in range(len(group)):
            trial = group.iloc[position]
            own += float(trial["charged.flops"])
            shared = procedure_builds(group.iloc[:position + 1], runs, convention, builds)["flops"]
            if best is None or trial[val_metric] > best[val_metric]:
                best = trial
            rows.append({"setting": trial["setting"], "study": study, "seed": trial["seed"],
                         "trial": int(trial[TRIAL_COLUMN]), "config_label": trial["config_label"],
                         "val": float(trial[val_metric]), "test": float(trial[metric]), "flops": own + shared,
                         "best_trial": int(best[TRIAL_COLUMN]), "best_config": best["config_label"],
                         "best_val": float(best[val_metric]), "best_test": float(best[metric])})
    return pd.DataFrame(rows, columns=TRAJECTORY_COLUMNS)


def study_summary(trajectories: pd.DataFrame) -> pd.DataFrame:
    """Per study, where it ended: setting, study, seed, trials, best_trial, best_config, best_val, best_test,
    flops (the study's whole cost)."""
    if trajectories.empty:
        return pd.DataFrame(columns=["setting", "study", "seed", "trials", "best_trial", "best_config", "best_val",
                                     "best_test", "flops"])
    last = trajectories.groupby("study", sort=True).tail(1)
    counts = trajectories.groupby("study")["trial"].size()
    return (last.assign(trials=last["study"].map(counts))
            [["setting", "study", "seed", "trials", "best_trial", "best_config", "best_val", "best_test", "flops"]]
            .reset_index(drop=True))


def one_run_costs(runs: pd.DataFrame, all_runs: pd.DataFrame, convention: str = DEFAULT_CONVENTION) -> pd.Series:
    """Per (setting, arm) of `runs`: the mean cost of one run as a procedure of its own — its charged FLOPs plus the shared
    builds it used, once — so a fixed arm is placed on the same cost axis as a study. A build's cost is read
    over `all_runs` (the run that built it may be of another arm)."""
    builds = shared_build_costs(all_runs)
    costs = [float(runs.loc[i, "charged.flops"]) + procedure_builds(runs.loc[[i]], all_runs, convention, builds)["flops"]
             for i in runs.index]
    return pd.Series(costs, index=runs.index).groupby([runs["setting"], runs["arm"]]).mean()
