"""The report end to end (analysis.report, analysis.__main__) on fabricated run records: every file is
written, figures are non-empty images, the header says whether the report is citable and why not,
partial sweeps degrade to notes, bad input exits with status 2."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis.__main__ import main
from analysis.load import load_runs
from analysis.report import ReportOptions, build_report

_spec = importlib.util.spec_from_file_location("analysis_fabricate", Path(__file__).parent / "fixtures/analysis/fabricate.py")
fabricate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fabricate)

# every table of the full sweep (3 settings: 2 clean + 1 trap; grids dpo 6 β, ipo 3, simpo 3; fixed arms rmipo and
# imi_dpo; 2 tolerances; 4 tuners) with its row count:
TABLES = {
    "comparison": 3 * (1 + 3 * 3 + 2),          # SFT + (tuned, oracle, default) per grid + 2 fixed arms, per setting
    "testbed": 2,                               # the clean settings
    "tuner_reach": 3 * 2 * 4,                   # settings × tolerances × tuners
    "tuner_curves": 3 * (1 + 6 + 6 + 6),        # grid search 1 budget, random search and each SH 6
    "savings": 3 * 2 * 4 * 2,                   # × the 2 fixed arms
    "savings_summary": 2 * 2 * 2 * 4,           # scopes (clean, trap) × tolerances × arms × tuners
    "expected_best": 3 * (6 + 3 + 3),           # every k of every grid
    "grid": 3 * 3,
    "aggregate_iqm_clean": 3 + 3 + 2,           # tuned and default of each grid, the 2 fixed arms (no oracle)
    "aggregate_iqm_trap": 3 + 3 + 2,
    "aggregate_per_setting": 3 * 8,
    "probability_of_improvement_clean": 7,      # every aggregated entry but dpo (tuned) itself
    "configurations": 3 * (1 + 6 + 3 + 3 + 1 + 1),   # the SFT row and every configuration
    "shared_costs": 3 * 3,                      # SFT, dataset, reference build per setting
    "skipped_runs": 3,                          # failed, killed, unreadable
}
FIGURES = ("beta_sensitivity", "expected_best_vs_trials", "tuners_vs_flops", "reward_kl_frontier", "imi_traces")
SMALL = {"dpo": (0.1, 1.0, 3.0), "rmipo": (2.0,)}


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    fabricate.write_sweep(root, datasets=("arithmetic", "sentiment", "sentiment_noisy"))
    return root


@pytest.fixture(scope="module")
def full_report(full_sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(full_sweep), "--out", str(out), "--n-boot", "200"]) == 0
    return out


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    fabricate.write_sweep(root, datasets=("sentiment",), seeds=(0, 1), grids=SMALL)
    return root


def assert_image(path: Path) -> None:
    """A PNG that decodes and is not blank: several distinct colours, a good share of non-white pixels."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)[::3, ::3, :3]  # every third pixel is plenty to tell a plot from a blank page
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    non_white = (pixels < 0.95).any(axis=-1).mean()
    assert non_white > 0.03, f"{path.name} is nearly blank ({non_white:.1%} non-white)"
    assert len(np.unique(pixels.reshape(-1, 3).round(2), axis=0)) > 20


def test_report_writes_every_table_and_figure(full_report):
    assert (full_report / "report.md").stat().st_size > 2000
    for name, rows in TABLES.items():
        for suffix in ("csv", "tex"):
            assert (full_report / "tables" / f"{name}.{suffix}").stat().st_size > 0, name
        assert len(pd.read_csv(full_report / "tables" / f"{name}.csv")) == rows, name
    runs = pd.read_csv(full_report / "tables" / "runs.csv")
    assert len(runs) == 3 * 14 * 5 and runs["val_curve"].str.startswith("[{").all()
    for name in FIGURES:
        assert_image(full_report / "figures" / f"{name}.png")
        pdf = full_report / "figures" / f"{name}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000


def test_report_md_states_its_verdict_protocol_and_definitions(full_report):
    text = (full_report / "report.md").read_text()
    assert text.splitlines()[2].startswith("**Verdict:** **Citable**")
    for phrase in ("Cost convention: **per_procedure**", "VALIDATION score (`val/gold_reward`", "*Oracle* = chosen on the test",
                   "π_k(j) = C(r_j−1, k−1)/C(N, k)", "successive halving (η, rungs)", "expanded percentile",
                   "Tuners: the practitioner's model", "trains k configurations ONCE each", "paired bootstrap over seeds",
                   "the seed is the unit", "a prompt set disjoint from the test prompts", "so test scores are held-out",
                   "Wilson score interval",
                   "Trap settings (marked *(trap)*", "sentiment_noisy — label noise", "SFT starting point: `reference_gold_reward`",
                   "`cost.wait_s`", "never counted as compute", "z = (score − SFT) / (tuned − SFT)", "trimmed away by the IQM",
                   "1 failed, 1 incomplete, 1 unreadable", "NonFiniteLossError", "figures/beta_sensitivity.png",
                   "**Headline (clean settings).**", "against grid search", "random search", "successive halving η=2"):
        assert phrase in text, phrase
    assert "Skipped:" not in text  # every section had what it needs


def test_report_tables_hold_the_protocols_rows(full_report):
    tables = full_report / "tables"
    comparison = pd.read_csv(tables / "comparison.csv", keep_default_na=False)
    arithmetic = comparison[comparison["setting"] == "arithmetic"].set_index("entry")
    assert {"SFT (reference)", "dpo (tuned)", "dpo (oracle)", "dpo (default)", "simpo (tuned)", "rmipo",
            "imi_dpo"} <= set(arithmetic.index)
    assert arithmetic.loc["dpo (tuned)", "selected_on"] == "validation"
    assert arithmetic.loc["SFT (reference)", "score"] == pytest.approx(0.3, abs=0.05)   # the fabricated SFT level
    runs = pd.read_csv(full_report / "tables" / "runs.csv")
    tuned = runs[(runs["dataset.name"] == "arithmetic") & (runs["method.name"] == "dpo")
                 & (runs["method.beta"] == float(arithmetic.loc["dpo (tuned)", "config"].removeprefix("β=")))]
    assert len(tuned) == 5 and float(arithmetic.loc["dpo (tuned)", "delta_sft"]) == pytest.approx(
        (tuned["gold_reward"] - tuned["reference_gold_reward"]).mean())
    assert set(comparison.loc[comparison["setting"] == "sentiment_noisy", "trap"]) == {
        fabricate.DATASETS["sentiment_noisy"][3]}
    testbed = pd.read_csv(tables / "testbed.csv")
    assert set(testbed["setting"]) == {"arithmetic", "sentiment"}                       # clean settings only
    assert testbed["verdict"].str.startswith("yes").all()
    summary = pd.read_csv(tables / "savings_summary.csv")
    assert set(summary["tuner"]) == {"grid search", "random search", "successive halving η=2", "successive halving η=3"}
    assert set(summary["scope"]) == {"clean", "trap"}
    assert summary.loc[summary["scope"] == "clean", "n_settings"].eq(2).all()
    assert {"savings_flops_ci_low", "savings_flops_ci_high", "savings_device_hours_ci_low"} <= set(summary.columns)
    iqm = pd.read_csv(tables / "aggregate_iqm_clean.csv").set_index("entry")
    assert iqm.loc["dpo (tuned)", "n_settings"] == 2 and "dpo (oracle)" not in iqm.index
    curves = pd.read_csv(tables / "expected_best.csv")
    dpo = curves[(curves["arm"] == "dpo") & (curves["setting"] == "arithmetic")]
    assert list(dpo["k"]) == [1, 2, 3, 4, 5, 6] and (dpo["oracle"] >= dpo["expected_test"] - 1e-12).all()
    configurations = pd.read_csv(tables / "configurations.csv")
    assert {"cost.wait_s", "charged.flops", "val_score", "delta_sft", "mean_ci_low"} <= set(configurations.columns)


def test_a_one_point_grid_is_default_and_a_beta_gamma_grid_is_tuned(tmp_path):
    fabricate.write_sweep(tmp_path / "one", datasets=("arithmetic",), grids={"dpo": (0.1, 1.0), "simpo": (2.0,)},
                          failures=False)
    report = build_report(load_runs(tmp_path / "one"), tmp_path / "o1", ReportOptions(n_boot=50, figures=False))
    entries = set(pd.read_csv(report.out_dir / "tables" / "comparison.csv")["entry"])
    assert "simpo (default)" in entries and "simpo (tuned)" not in entries
    grid = [{"beta": b, "gamma_beta_ratio": g} for b in (1.0, 2.0) for g in (0.5, 1.0)]
    fabricate.write_sweep(tmp_path / "bg", datasets=("arithmetic",), grids={"dpo": (0.1, 1.0), "simpo": grid},
                          failures=False)
    report = build_report(load_runs(tmp_path / "bg"), tmp_path / "o2", ReportOptions(n_boot=50, figures=False))
    grid_table = pd.read_csv(report.out_dir / "tables" / "grid.csv").set_index("method")
    assert grid_table.loc["simpo", "n_configs"] == 4 and grid_table.loc["simpo", "default_config"] == "β=2, gamma_beta_ratio=0.5"


def test_few_seeds_make_the_report_not_citable(small_sweep, tmp_path):
    report = build_report(load_runs(small_sweep), tmp_path / "out", ReportOptions(n_boot=50, figures=False))
    assert report.verdict == "not citable: 2 seeds" and not report.citable
    text = report.report_md.read_text()
    assert "**Verdict:** **not citable: 2 seeds**" in text and "fewer than 5 seeds" in text


def test_a_smoke_budget_makes_the_report_not_citable(tmp_path):
    fabricate.write_sweep(tmp_path / "runs", datasets=("arithmetic",), grids=SMALL, budget="fast", failures=False)
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50, figures=False))
    assert report.verdict == "smoke test, not citable"


def test_older_records_fall_back_to_selection_on_test_and_say_so(tmp_path):
    fabricate.write_sweep(tmp_path / "runs", datasets=("arithmetic",), grids=SMALL, schema=1, failures=False)
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50, figures=False))
    assert report.verdict == "selection on test data: not citable; prompt-set overlap not measured: not citable"
    text = report.report_md.read_text()
    assert "**Verdict:** **selection on test data: not citable; prompt-set overlap not measured: not citable**" in text
    assert "TEST — not citable" in text and "have no `val/gold_reward` (older records" in text
    assert any("successive halving" in n and "val_curve" in n for n in report.notes)
    assert "do not report waiting time" in text
    tuned = pd.read_csv(report.out_dir / "tables" / "comparison.csv").set_index("entry").loc["dpo (tuned)"]
    assert tuned["selected_on"] == "test"


def test_win_rate_has_an_sft_level_of_one_half_by_definition(small_sweep, tmp_path):
    options = ReportOptions(metric="win_rate", n_boot=50, figures=False)
    report = build_report(load_runs(small_sweep), tmp_path / "out", options)
    sft = pd.read_csv(report.out_dir / "tables" / "comparison.csv").set_index("entry").loc["SFT (reference)"]
    assert sft["score"] == 0.5 and sft["score_ci_low"] == 0.5
    assert "0.5 by definition" in report.report_md.read_text()


def test_cost_conventions_are_named_and_charge_differently(small_sweep, tmp_path):
    loaded = load_runs(small_sweep)
    tables = {}
    for convention in ("per_procedure", "amortize", "per_run"):
        options = ReportOptions(n_boot=50, convention=convention, figures=False)
        report = build_report(loaded, tmp_path / convention, options)
        assert f"Cost convention: **{convention}**" in report.report_md.read_text()
        configurations = pd.read_csv(report.out_dir / "tables" / "configurations.csv")
        tables[convention] = configurations.loc[configurations["arm"] != "SFT (reference)", "charged.flops"]
    # per run: every run pays the SFT build (6·N·2e7 FLOPs), dpo's runs also the reference build (2·N·4e5);
    # amortised: each over the 8 runs (SFT) and 6 dpo runs (reference) that used it; per procedure: none
    n = fabricate.N_PARAMS
    sft, reference = 6 * n * 2e7, 2 * n * 4e5
    is_dpo = (configurations.loc[configurations["arm"] != "SFT (reference)", "arm"] == "dpo").to_numpy()
    np.testing.assert_allclose(tables["per_run"] - tables["per_procedure"], sft + is_dpo * reference)
    np.testing.assert_allclose(tables["amortize"] - tables["per_procedure"], sft / 8 + is_dpo * reference / 6)


def test_only_dpo_runs_degrade_to_notes(tmp_path):
    fabricate.write_sweep(tmp_path / "runs", datasets=("arithmetic",), grids={"dpo": (0.1, 1.0, 3.0)}, failures=False)
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50))
    assert any("no setting has a fixed arm" in note for note in report.notes) and any("ΔPMI" in note for note in report.notes)
    assert (tmp_path / "out" / "figures" / "beta_sensitivity.png").exists()
    assert not (tmp_path / "out" / "figures" / "imi_traces.png").exists()


def test_only_imi_runs_degrade_to_notes(tmp_path):
    fabricate.write_sweep(tmp_path / "runs", datasets=("arithmetic",), grids={"rmipo": (2.0,)}, failures=False)
    history = tmp_path / "runs" / "sweep-a" / "rmipo-arithmetic-cpu-b2-s2" / "history.jsonl"
    history.write_text(history.read_text() + "{truncated\n")  # a corrupt history costs its trace, not the report
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50))
    notes = " ".join(report.notes)
    assert "no `dpo` with ≥ 2 configurations" in notes and "no baseline has ≥ 2 configurations" in notes
    assert "rmipo-arithmetic-cpu-b2-s2/history.jsonl, line 41" in notes
    assert_image(tmp_path / "out" / "figures" / "imi_traces.png")
    assert (tmp_path / "out" / "tables" / "comparison.csv").exists()


def test_no_completed_runs_still_writes_a_report(tmp_path):
    (tmp_path / "runs" / "s" / "killed").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "killed" / "history.jsonl").write_text('{"step": 0, "loss": 0.7}\n')
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50, figures=False))
    assert "no completed runs" in report.report_md.read_text() and not report.citable
    assert (tmp_path / "out" / "tables" / "skipped_runs.csv").exists()


def test_a_setting_without_the_baseline_is_left_out_of_baseline_tables(tmp_path):
    fabricate.write_sweep(tmp_path / "runs", datasets=("arithmetic",), grids={"dpo": (0.1, 1.0), "rmipo": (2.0,)},
                          failures=False)
    fabricate.write_sweep(tmp_path / "runs", sweep_id="sweep-b", datasets=("sentiment",), grids={"rmipo": (2.0,)},
                          failures=False)
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50, figures=False))
    assert "Left out of the normalised aggregates: sentiment (no `dpo` grid to tune)" in report.report_md.read_text()
    iqm = pd.read_csv(tmp_path / "out" / "tables" / "aggregate_iqm_clean.csv").set_index("entry")
    assert iqm.loc["rmipo", "n_settings"] == 1 and iqm.loc["rmipo", "n_runs"] == 5
    assert set(pd.read_csv(tmp_path / "out" / "tables" / "savings.csv")["setting"]) == {"arithmetic"}
    assert set(pd.read_csv(tmp_path / "out" / "tables" / "comparison.csv")["setting"]) == {"arithmetic", "sentiment"}


def test_cli_rejects_unknown_and_lower_is_better_metrics(small_sweep, tmp_path, capsys):
    assert main(["report", str(small_sweep), "--out", str(tmp_path), "--metric", "rouge"]) == 2
    assert "'rouge' is not in the run records" in capsys.readouterr().err
    assert main(["report", str(small_sweep), "--out", str(tmp_path), "--metric", "kl"]) == 2
    assert "lower-is-better" in capsys.readouterr().err
    assert main(["runs", str(tmp_path / "missing")]) == 2


def test_cli_report_prints_its_verdict_and_where_files_landed(small_sweep, tmp_path, capsys):
    assert main(["report", str(small_sweep), "--out", str(tmp_path / "r"), "--per-run", "--metric", "win_rate",
                 "--tolerance", "0.02", "--n-boot", "50", "--stat", "median", "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "verdict: not citable: 2 seeds" in printed
    assert f"report: {tmp_path / 'r' / 'report.md'}" in printed and "figures:" in printed
    text = (tmp_path / "r" / "report.md").read_text()
    assert "# Tuning-cost report: win_rate" in text and "**median** over its seeds" in text


def test_cli_runs_lists_every_run_with_its_status(small_sweep, capsys):
    assert main(["runs", str(small_sweep)]) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0].split()
    assert header[:2] == ["sweep_id", "run_id"]
    assert {"method", "dataset", "beta", "seed", "gold_reward", "status"} <= set(header)
    assert "dpo-failed" in printed and "NonFiniteLossError" in printed and "incomplete" in printed
    assert "8 completed runs loaded; 3 skipped" in printed
    assert main(["runs", str(small_sweep), "--csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 8 + 3


def test_help_lists_the_options():
    result = subprocess.run([sys.executable, "-m", "analysis", "report", "--help"], capture_output=True, text=True, check=True)
    for option in ("--out", "--metric", "--baseline", "--tolerance", "--per-procedure", "--amortize", "--per-run",
                   "--wandb", "--n-boot", "--no-figures"):
        assert option in result.stdout


@pytest.mark.slow
def test_report_on_records_written_by_the_real_pipeline(make_config, tmp_path):
    """bench's fast-mode pipeline writes a small sweep; the analysis reads it and writes the report."""
    from bench.pipeline import run

    for overrides in (("method=dpo", "method.beta=0.1"), ("method=dpo", "method.beta=1.0"), ("method=rmipo",)):
        assert run(make_config(*overrides, "sweep_id=real")).record["status"] == "completed"
    loaded = load_runs(tmp_path / "runs")
    assert len(loaded.runs) == 3 and loaded.skipped.empty
    report = build_report(loaded, tmp_path / "out", ReportOptions(n_boot=50))
    assert "smoke test, not citable" in report.verdict and "not citable: 1 seeds" in report.verdict
    savings = pd.read_csv(tmp_path / "out" / "tables" / "savings.csv")
    assert set(savings["arm"]) == {"rmipo"} and savings["arm_flops"].notna().all()
    for name in ("beta_sensitivity", "expected_best_vs_trials", "reward_kl_frontier", "imi_traces"):
        assert_image(tmp_path / "out" / "figures" / f"{name}.png")


def _verdict_and_text(tmp_path, **fabricated):
    fabricate.write_sweep(tmp_path / "runs", datasets=("arithmetic",), grids=SMALL, failures=False, **fabricated)
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50, figures=False))
    return report, report.report_md.read_text()


def test_shared_prompts_keep_the_report_from_saying_held_out_or_citable(tmp_path):
    report, text = _verdict_and_text(tmp_path, overlaps={"test|validation": 3, "composition_test|train_pairs": 1})
    assert report.verdict == "prompt sets overlap: not citable" and not report.citable
    assert "**Verdict:** **prompt sets overlap: not citable**" in text
    for phrase in ("arithmetic: test and validation share up to 3 prompts (20 of 20 runs)",
                   "arithmetic: composition_test and train_pairs share up to 1 prompt (20 of 20 runs)"):
        assert phrase in text, phrase
    lowered = text.lower()
    assert "disjoint" not in lowered and "held-out" not in lowered and "held out" not in lowered
    assert "**citable**" not in lowered


def test_records_without_prompt_sets_never_make_a_citable_report(tmp_path):
    report, text = _verdict_and_text(tmp_path, overlaps=None)
    assert report.verdict == "prompt-set overlap not measured: not citable"
    assert "20 of 20 runs carry no `data.prompt_sets`" in text
    lowered = text.lower()
    assert "disjoint" not in lowered and "held-out" not in lowered and "held out" not in lowered
    assert "**citable**" not in lowered


def test_measured_disjoint_prompt_sets_and_the_composition_score(tmp_path):
    report, text = _verdict_and_text(tmp_path, composition=True)
    assert report.verdict == "citable" and "**Verdict:** **Citable**" in text
    assert "so test scores are held-out" in text and "composition mean [CI]" in text
    comparison = pd.read_csv(report.out_dir / "tables" / "comparison.csv").set_index("entry")
    # the fabricated composition score is the test score − 0.05 on every run, so its mean is too
    np.testing.assert_allclose(comparison.loc["rmipo", "composition"], comparison.loc["rmipo", "score"] - 0.05)
    assert comparison.loc["rmipo", "composition_ci_low"] < comparison.loc["rmipo", "composition"]
    # without composition scores the columns are left out, not filled with NaN
    _, text = _verdict_and_text(tmp_path / "plain")
    assert "composition" not in pd.read_csv(tmp_path / "plain" / "out" / "tables" / "comparison.csv").columns
