"""The analysis on every committed results/ folder of run records, as a user would run it.

Committed records are citable and never rewritten, so they stay in the schema and fields they were
written with (some predate validation metrics and `method_info`): the analysis must keep reading them,
and what it says about each method must match what the training side says about it today.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.grid import annotate
from analysis.load import load_runs
from bench.methods import available_methods, method_info

RESULTS = Path(__file__).resolve().parents[1] / "results"
# every study folder, and each committed baseline (results/baselines/<version>/) on its own
FOLDERS = sorted(d for d in [*RESULTS.iterdir(), *RESULTS.glob("baselines/*")]
                 if d.is_dir() and d.name != "baselines" and next(d.rglob("record.json"), None))


# completed runs in each folder, as its README states them (every record completed: none is skipped)
RUNS = {
    "quick": (3 + 1 + 1) * 2,  # DPO β ∈ {0.01, 0.1, 1}, RMiPO, IMI-DPO × seeds {0, 1}
    "smollm2": (5 + 3 + 1) * 5 + 2 * 5,  # lane v2: DPO over 5 β, rmipo, imi_dpo, beta_dpo, simpo (RMiPO's base),
    # rmipo's authors and chat marginal contexts, × 5 seeds
    "smollm2_pilot": 5 * 2 + 3,  # DPO over 5 β × seeds 0, 1; rmipo, imi_dpo, beta_dpo at seed 0 (lane v2 budget)
    "beta_sensitivity": 30 * 5 + 20 * 5 + 15 * 5,  # DPO 6 β, SimPO 2×2, 3 IMI methods; × 5 seeds × 5 tasks
    "signal_controls": 3 * 5 * 5 * 2,  # rmipo, imi_dpo, imi_ipo × 5 signals × 5 seeds × 2 clean tasks
    "kto": (6 + 1) * 5 * 2,  # KTO 6 β, imi_kto; × 5 seeds × 2 clean tasks
    "kto_desirable": 2 * 3 * 5 * 2,  # kto, imi_kto × 3 desirable fractions × 5 seeds × 2 clean tasks
    "tuner_replay": (15 + 5) * 5 * 2 + 2 * 20,  # DPO 15 β, 5 IMI methods; × 5 seeds × 2 clean tasks; 2 TPE studies × 20
    "v1": 800 + 30,  # the builtin part and the smollm2 part
    "v2": 3 * 170 + 2 * 300 + 2 * 20 + 55,  # per trap task: 13 methods at defaults, DPO and IPO 6-β grids, SimPO's
    # 12-point grid (× 5 seeds); per clean task also the 15-β dense DPO grid, KTO's grid and the signal controls;
    # 2 live TPE studies × 20 trials; the SmolLM2 lane (55)
}


def test_the_committed_record_folders_are_found():
    assert {folder.name for folder in FOLDERS} == set(RUNS)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda d: d.name)
def test_report_on_a_committed_folder(folder, tmp_path, capsys):
    # few bootstrap replicates: this checks that the report is built, not its interval widths
    assert main(["report", str(folder), "--out", str(tmp_path), "--no-figures", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    loaded = load_runs(folder)
    assert len(loaded.runs) == RUNS[folder.name]
    assert f"{RUNS[folder.name]} completed runs loaded; 0 skipped" in out
    report = (tmp_path / "report.md").read_text()
    for method in loaded.runs["method.name"].unique():
        assert method in report, f"{folder.name}: the report never names {method}"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda d: d.name)
def test_what_the_analysis_says_a_method_is_matches_the_method(folder):
    loaded = load_runs(folder)
    runs = annotate(loaded.runs, loaded.config_columns)
    for method, is_imi in runs.groupby("method.name")["is_imi"].first().items():
        assert method in available_methods(), f"{folder.name}: {method} is no method today"
        assert bool(is_imi) == method_info(method)["imi"], method


@pytest.mark.parametrize("tables", sorted(RESULTS.rglob("tuners/tables")), ids=lambda d: d.parent.parent.name)
def test_committed_tuner_replays_use_every_seed_and_agree_with_the_exact_values(tables):
    # a replay that silently lost seeds (as one did when live-study trials were read as grid points) shows here:
    # n_seeds below the folder's 5, and exact values outside replay intervals of width 0
    curves = pd.read_csv(tables / "tuner_replay_curves.csv")
    assert set(curves["n_seeds"]) == {5}, curves.groupby("setting")["n_seeds"].unique().to_dict()
    agreement = pd.read_csv(tables / "tuner_replay_agreement.csv")
    assert agreement["within_interval"].all(), agreement.loc[~agreement["within_interval"], ["setting", "check", "budget"]]
