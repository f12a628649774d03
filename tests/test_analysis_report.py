"""The report end to end (analysis.report, analysis.__main__) on fabricated run records: every file is
written, figures are non-empty images, partial sweeps degrade to notes, bad input exits with status 2."""
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

TABLES = ("comparison", "cost_to_reach", "savings_summary", "expected_best", "grid", "aggregate_iqm",
          "probability_of_improvement", "configurations", "shared_costs", "skipped_runs")
FIGURES = ("beta_sensitivity", "expected_best_vs_trials", "expected_best_vs_device_hours", "reward_kl_frontier",
           "imi_traces")


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    fabricate.write_sweep(root, datasets=("arithmetic", "sentiment"), seeds=(0, 1, 2))
    return root


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    fabricate.write_sweep(root, datasets=("sentiment",), seeds=(0, 1), grids={"dpo": (0.1, 1.0, 3.0), "rmipo": (2.0,)})
    return root


@pytest.fixture(scope="module")
def full_report(full_sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = main(["report", str(full_sweep), "--out", str(out), "--n-boot", "200"])
    assert code == 0
    return out


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
    for name in TABLES:
        for suffix in ("csv", "tex"):
            path = full_report / "tables" / f"{name}.{suffix}"
            assert path.stat().st_size > 0, path
        assert len(pd.read_csv(full_report / "tables" / f"{name}.csv")) > 0, name
        assert "\\begin{tabular}" in (full_report / "tables" / f"{name}.tex").read_text()
    assert len(pd.read_csv(full_report / "tables" / "runs.csv")) == 84
    for name in FIGURES:
        assert_image(full_report / "figures" / f"{name}.png")
        pdf = full_report / "figures" / f"{name}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000


def test_report_md_defines_its_numbers_and_names_the_cost_convention(full_report):
    text = (full_report / "report.md").read_text()
    for phrase in ("Cost convention: **amortize**", "E[trials] = (N+1)/(m+1)", "Ê_k = Σ_j v_(j)·C(j−1, k−1)/C(N, k)",
                   "IQM = mean of the middle", "P(X > Y)", "collapse rate", "1 failed, 1 incomplete, 1 unreadable",
                   "NonFiniteLossError", "figures/beta_sensitivity.png", "tables/cost_to_reach.csv"):
        assert phrase in text, phrase
    assert "Skipped:" not in text  # every section had what it needs


def test_report_tables_hold_the_expected_rows(full_report):
    comparison = pd.read_csv(full_report / "tables" / "comparison.csv")
    assert {"dpo (tuned)", "dpo (default β)", "rmipo", "imi_dpo", "simpo (tuned)"} <= set(comparison["entry"])
    assert (comparison.loc[comparison["entry"] == "dpo (tuned)", "delta_mean"] == 0).all()
    costs = pd.read_csv(full_report / "tables" / "cost_to_reach.csv")
    assert set(costs["tolerance"]) == {0.0, 0.05}
    imi = costs[(costs["arm"] == "imi_dpo") & (costs["tolerance"] == 0.05)]
    assert len(imi) == 2 and imi["reaches"].all() and (imi["savings_device_hours"] > 0.3).all()
    grid = pd.read_csv(full_report / "tables" / "grid.csv")
    assert set(grid["method.name"]) == {"dpo", "ipo", "simpo"}
    curves = pd.read_csv(full_report / "tables" / "expected_best.csv")
    dpo = curves[(curves["arm"] == "dpo") & (curves["setting"] == "arithmetic")]
    assert list(dpo["k"]) == [1, 2, 3, 4, 5, 6]


def test_per_run_convention_charges_more_and_says_so(small_sweep, tmp_path):
    loaded = load_runs(small_sweep)
    amortized = build_report(loaded, tmp_path / "a", ReportOptions(n_boot=50))
    per_run = build_report(loaded, tmp_path / "p", ReportOptions(n_boot=50, convention="per_run"))
    assert "Cost convention: **per_run**" in per_run.report_md.read_text()
    cost_a = pd.read_csv(amortized.out_dir / "tables" / "configurations.csv")["charged.device_hours"]
    cost_p = pd.read_csv(per_run.out_dir / "tables" / "configurations.csv")["charged.device_hours"]
    assert (cost_p > cost_a).all()


def test_only_dpo_runs_degrade_to_notes(tmp_path):
    fabricate.write_sweep(tmp_path / "runs", datasets=("arithmetic",), seeds=(0, 1), grids={"dpo": (0.1, 1.0, 3.0)},
                          failures=False)
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50))
    text = report.report_md.read_text()
    assert "Only `dpo` was run" in text
    assert any("ΔPMI" in note for note in report.notes)
    assert (tmp_path / "out" / "figures" / "beta_sensitivity.png").exists()
    assert not (tmp_path / "out" / "figures" / "imi_traces.png").exists()


def test_only_imi_runs_degrade_to_notes(tmp_path):
    fabricate.write_sweep(tmp_path / "runs", datasets=("arithmetic",), seeds=(0, 1, 2), grids={"rmipo": (2.0,)},
                          failures=False)
    history = tmp_path / "runs" / "sweep-a" / "rmipo-arithmetic-cpu-b2-s2" / "history.jsonl"
    history.write_text(history.read_text() + "{truncated\n")  # a corrupt history costs its trace, not the report
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50))
    notes = " ".join(report.notes)
    assert "no `dpo` grid" in notes and "no baseline method was swept" in notes
    assert "rmipo-arithmetic-cpu-b2-s2/history.jsonl, line 41" in notes
    assert_image(tmp_path / "out" / "figures" / "imi_traces.png")
    assert (tmp_path / "out" / "tables" / "comparison.csv").exists()


def test_no_completed_runs_still_writes_a_report(tmp_path):
    (tmp_path / "runs" / "s" / "killed").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "killed" / "history.jsonl").write_text('{"step": 0, "loss": 0.7}\n')
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50))
    assert "no completed runs" in report.report_md.read_text()
    assert (tmp_path / "out" / "tables" / "skipped_runs.csv").exists()


def test_cli_rejects_unknown_and_lower_is_better_metrics(small_sweep, tmp_path, capsys):
    assert main(["report", str(small_sweep), "--out", str(tmp_path), "--metric", "rouge"]) == 2
    assert "'rouge' is not in the run records" in capsys.readouterr().err
    assert main(["report", str(small_sweep), "--out", str(tmp_path), "--metric", "kl"]) == 2
    assert "lower-is-better" in capsys.readouterr().err
    assert main(["runs", str(tmp_path / "missing")]) == 2


def test_cli_report_prints_where_files_landed(small_sweep, tmp_path, capsys):
    assert main(["report", str(small_sweep), "--out", str(tmp_path / "r"), "--per-run", "--metric", "win_rate",
                 "--tolerance", "0.02", "--n-boot", "50", "--stat", "median"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {tmp_path / 'r' / 'report.md'}" in printed and "figures:" in printed
    text = (tmp_path / "r" / "report.md").read_text()
    assert "# Tuning-cost report: win_rate" in text and "**median** over its seeds" in text


def test_cli_runs_lists_every_run_with_its_status(full_sweep, capsys):
    assert main(["runs", str(full_sweep)]) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0].split()
    assert header[:2] == ["sweep_id", "run_id"]
    assert {"method", "dataset", "beta", "seed", "gold_reward", "status"} <= set(header)
    assert "dpo-failed" in printed and "NonFiniteLossError" in printed and "incomplete" in printed
    assert "84 completed runs loaded; 3 skipped" in printed
    assert main(["runs", str(full_sweep), "--csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 1 + 84 + 3


def test_help_lists_the_options():
    result = subprocess.run([sys.executable, "-m", "analysis", "report", "--help"], capture_output=True, text=True, check=True)
    for option in ("--out", "--metric", "--baseline", "--tolerance", "--amortize", "--per-run", "--wandb", "--n-boot"):
        assert option in result.stdout


def test_a_setting_without_the_baseline_is_left_out_of_baseline_tables(tmp_path):
    fabricate.write_sweep(tmp_path / "runs", datasets=("arithmetic",), seeds=(0, 1),
                          grids={"dpo": (0.1, 1.0), "rmipo": (2.0,)}, failures=False)
    fabricate.write_sweep(tmp_path / "runs", sweep_id="sweep-b", datasets=("sentiment",), seeds=(0, 1),
                          grids={"rmipo": (2.0,)}, failures=False)
    report = build_report(load_runs(tmp_path / "runs"), tmp_path / "out", ReportOptions(n_boot=50))
    assert "Left out of the IQM (no `dpo` grid, or a flat one, to normalise by): sentiment." in report.report_md.read_text()
    iqm = pd.read_csv(tmp_path / "out" / "tables" / "aggregate_iqm.csv").set_index("entry")
    assert iqm.loc["rmipo", "n_settings"] == 1 and iqm.loc["rmipo", "n_runs"] == 2
    assert set(pd.read_csv(tmp_path / "out" / "tables" / "cost_to_reach.csv")["setting"]) == {"arithmetic"}
    comparison = pd.read_csv(tmp_path / "out" / "tables" / "comparison.csv")
    assert set(comparison["setting"]) == {"arithmetic", "sentiment"}


@pytest.mark.slow
def test_report_on_records_written_by_the_real_pipeline(make_config, tmp_path):
    """bench's fast-mode pipeline writes a small sweep; the analysis reads it and writes the report."""
    from bench.pipeline import run

    for overrides in (("method=dpo", "method.beta=0.1"), ("method=dpo", "method.beta=1.0"), ("method=rmipo",)):
        assert run(make_config(*overrides, "sweep_id=real")).record["status"] == "completed"
    loaded = load_runs(tmp_path / "runs")
    assert len(loaded.runs) == 3 and loaded.skipped.empty
    report = build_report(loaded, tmp_path / "out", ReportOptions(n_boot=50))
    costs = pd.read_csv(tmp_path / "out" / "tables" / "cost_to_reach.csv")
    assert set(costs["arm"]) == {"dpo", "rmipo"} and costs["expected_device_hours"].notna().all()
    for name in ("beta_sensitivity", "expected_best_vs_device_hours", "reward_kl_frontier", "imi_traces"):
        assert_image(tmp_path / "out" / "figures" / f"{name}.png")
    assert "Skipped:" not in report.report_md.read_text()
