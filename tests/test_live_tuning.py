"""Live tuning studies read back from their records (analysis/live_tuning.py): best-so-far by hand, the study's
cost with its shared builds once, and the report keeping study trials out of the grid tables."""
from __future__ import annotations

import pandas as pd
import pytest

from analysis.live_tuning import one_run_costs, study_runs, study_summary, study_trajectories


def _trial(study, trial, beta, val, test, flops, sft_key="s1", seed=0):
    return {"setting": "sentiment", "seed": seed, "tuning.study": study, "tuning.trial": trial,
            "config_label": f"β={beta:g}", "val/gold_reward": val, "gold_reward": test, "charged.flops": flops,
            "cost.shared.sft.key": sft_key, "cost.shared.sft.hit": True, "cost.shared.sft.flops": 1000.0,
            "arm": "dpo"}


def test_best_so_far_and_cumulative_cost_by_hand():
    # trials arrive out of order; trial 2 ties trial 1 on validation: the earlier one stays best
    runs = pd.DataFrame([_trial("A", 2, 1.0, 0.5, 0.1, 10.0), _trial("A", 0, 0.1, 0.2, 0.3, 10.0),
                         _trial("A", 1, 0.3, 0.5, 0.4, 20.0)])
    path = study_trajectories(runs, "gold_reward", "val/gold_reward", "per_procedure")
    assert path["trial"].tolist() == [0, 1, 2]
    assert path["best_trial"].tolist() == [0, 1, 1]
    assert path["best_test"].tolist() == [0.3, 0.4, 0.4]
    # own FLOPs cumulate; the one SFT build (1000 FLOPs) is charged once per study
    assert path["flops"].tolist() == [1010.0, 1030.0, 1040.0]
    summary = study_summary(path)
    assert summary.loc[0, ["trials", "best_trial", "best_test", "flops"]].tolist() == [3, 1, 0.4, 1040.0]


def test_two_studies_are_two_procedures_and_other_runs_are_not_trials():
    runs = pd.DataFrame([_trial("A", 0, 0.1, 0.2, 0.3, 10.0), _trial("B", 0, 3.0, 0.1, 0.2, 5.0, seed=1),
                         {**_trial("", 0, 0.1, 0.0, 0.0, 1.0), "tuning.study": None, "arm": "imi_dpo"}])
    assert study_runs(runs).tolist() == [True, True, False]
    path = study_trajectories(runs, "gold_reward", "val/gold_reward", "per_procedure")
    assert path.set_index("study")["flops"].to_dict() == {"A": 1010.0, "B": 1005.0}
    assert one_run_costs(runs.iloc[[2]], runs, "per_procedure").to_dict() == {("sentiment", "imi_dpo"): pytest.approx(1001.0)}
    # the build was made by a study's trial: its cost is read over every run, not the arm's alone
    built_elsewhere = runs.assign(**{"cost.shared.sft.hit": [False, True, True]})
    assert one_run_costs(built_elsewhere.iloc[[2]], built_elsewhere, "per_procedure")[("sentiment", "imi_dpo")] == \
        pytest.approx(1001.0)
    # one arm on two settings: each setting's own cost, never their mean
    two = pd.concat([runs.iloc[[2]], runs.iloc[[2]].assign(setting="arithmetic", **{"charged.flops": 3.0})],
                    ignore_index=True)
    assert one_run_costs(two, two, "per_procedure").to_dict() == {("arithmetic", "imi_dpo"): pytest.approx(1003.0),
                                                                  ("sentiment", "imi_dpo"): pytest.approx(1001.0)}


@pytest.mark.slow
@pytest.mark.ci
def test_a_report_shows_the_studies_and_keeps_their_trials_out_of_the_grid(make_config, tmp_path):
    """A real study of 3 trials (the suite's sweeper, budget=fast) and one imi_dpo run in one sweep folder."""
    import os
    import subprocess
    import sys

    from analysis.__main__ import main
    from bench.pipeline import run
    from helpers import ROOT

    pytest.importorskip("optuna")
    runs_root = tmp_path / "runs"
    env = {**os.environ, "IMI_BENCH_RUNS": str(runs_root), "IMI_BENCH_SWEEP_ID": "study",
           "WANDB_MODE": "offline"}
    cache = make_config().paths.cache_root
    done = subprocess.run([sys.executable, "-m", "bench.train", "-m", "experiment=tune_dpo", "budget=fast", "seed=0",
                           "dataset=sentiment", "hydra.sweeper.n_trials=3", "progress=false", "sweep_id=study",
                           f"paths.cache_root={cache}", f"hydra.sweep.dir={tmp_path / 'hydra'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run(make_config("method=imi_dpo", "dataset=sentiment", "sweep_id=study", f"paths.runs_root={runs_root}"))
    out = tmp_path / "report"
    assert main(["report", str(runs_root / "study"), "--out", str(out), "--n-boot", "50"]) == 0
    report = (out / "report.md").read_text()
    assert "## 3a. Live tuning studies" in report and (out / "figures" / "live_studies.png").exists()
    studies = pd.read_csv(out / "tables" / "live_studies.csv")
    assert len(studies) == 1 and studies.loc[0, "trials"] == 3
    # the trials are no DPO grid: the comparison holds the SFT row and the IMI run only
    comparison = pd.read_csv(out / "tables" / "comparison.csv")
    assert set(comparison["method"]) == {"sft", "imi_dpo"}


def test_the_report_can_lead_with_the_saving_against_the_cheapest_tuner(tmp_path):
    """`--optuna-tuners` on a committed grid: the lead section comes first and names, per clean setting, the best
    tuner among Optuna's replays and the exact ones (few studies here: this checks the wiring)."""
    from analysis.load import load_runs
    from analysis.report import ReportOptions, build_report
    from helpers import ROOT

    pytest.importorskip("optuna")
    report = build_report(load_runs(ROOT / "results" / "beta_sensitivity"), tmp_path,
                          ReportOptions(n_boot=50, figures=False, optuna_tuners=True, optuna_replicates=5))
    text = report.report_md.read_text()
    lead = text.index("## IMI's saving against the cheapest tuner to reach τ")
    assert lead < text.index("## 1. Per setting")
    table = pd.read_csv(tmp_path / "tables" / "optuna_lead.csv")
    assert set(table["setting"]) == {"arithmetic", "sentiment"}  # clean settings only
    assert set(table["arm"]) == {"imi_dpo", "imi_simpo", "rmipo"} and table["best_tuner"].notna().all()
