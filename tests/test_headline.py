"""The headline tables (analysis.headline, `python -m analysis headline`): the comparison's cells equal the
report's comparison table, the savings view's its savings table (`--optuna-tuners`: its optuna_lead table)
and the mechanism view's its signal verdicts; their numbers are checked by hand on records whose seeds agree
(so every interval is its point, Wilson's floor aside), and every table embedded in README.md and the results
READMEs is what the command prints on the committed records — one test per embedded block."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.headline import Computer, HeadlineOptions, comparison, headline_markdown
from analysis.headline_docs import find_blocks, refresh
from analysis.headline_views import (NONE_REACHES, _against_cheapest, arm_columns, mechanism_table, report_runs,
                                     savings_table)
from analysis.load import load_runs
from analysis.report import ReportOptions, build_report

ROOT = Path(__file__).resolve().parents[1]
# document -> how many headline blocks it embeds (a marker deleted by mistake fails here, not silently)
EMBEDDED = {"README.md": 5, "results/baselines/v1/README.md": 3,
            "results/baselines/v2/README.md": 6, "results/beta_sensitivity/README.md": 1,
            "results/kto/README.md": 1, "results/smollm2/README.md": 3}

_spec = importlib.util.spec_from_file_location("analysis_fabricate",
                                               Path(__file__).parent / "fixtures/analysis/fabricate.py")
fabricate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fabricate)


def write_run(root: Path, method: str, beta: float, seed: int, test: float, val: float, *, dataset: str = "arith",
              trap: str | None = None, imi: bool = False, reference: float = 0.1, flops: float | None = None,
              signal: str | None = None, defaults: dict | None = None) -> None:
    """One completed schema-2 record with the given test and validation gold reward (and, given them, its
    FLOPs, device-hours = FLOPs / 1e15, the signal its IMI regulator reads and its method's declared defaults)."""
    run_id = f"{method}-{dataset}-b{beta:g}{'-' + signal if signal else ''}-s{seed}"
    record = {"run_id": run_id, "sweep_id": "hand", "config_hash": run_id, "status": "completed", "schema_version": 2,
              "config": {"method": {"name": method, "beta": beta, **({"signal": signal} if signal else {})},
                         "dataset": {"name": dataset, "trap": trap},
                         "model": {"name": "tiny"}, "hardware": {"name": "cpu"}, "seed": seed},
              "metrics": {"gold_reward": test, "val/gold_reward": val, "reference_gold_reward": reference},
              "method_info": {"imi": imi, "defaults": defaults or {"beta": 0.1 if method == "dpo" else beta}}}
    if flops is not None:
        record["cost"] = {"flops": flops, "device_hours": flops / 1e15}
    directory = root / "hand" / run_id
    directory.mkdir(parents=True)
    (directory / "record.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def hand_runs(tmp_path_factory) -> Path:
    """Every seed of a configuration scores the same, so every bootstrap replicate equals the observed
    value and each interval is its point. On "arith" validation picks dpo β=1 (0.5 > 0.2) although
    β=0.1 is better on test (the oracle's choice): the headline must report β=1's test score 0.4."""
    root = tmp_path_factory.mktemp("hand")
    for seed in (0, 1, 2):
        write_run(root, "dpo", 0.1, seed, test=0.6, val=0.2)
        write_run(root, "dpo", 1.0, seed, test=0.4, val=0.5)
        write_run(root, "rmipo", 2.0, seed, test=0.45, val=0.3, imi=True)
        write_run(root, "beta_dpo", 0.1, seed, test=0.35, val=0.3)
        write_run(root, "dpo", 0.1, seed, test=0.3, val=0.1, dataset="noisy", trap="label noise", reference=0.2)
        write_run(root, "dpo", 1.0, seed, test=0.25, val=0.4, dataset="noisy", trap="label noise", reference=0.2)
    return root


def test_hand_computed_cells(hand_runs):
    text = headline_markdown(load_runs(hand_runs), HeadlineOptions(report=ReportOptions(n_boot=50)))
    lines = text.splitlines()
    assert lines[0] == "| setting | SFT | tuned dpo (config) | Δ vs SFT | rmipo | beta_dpo (default) |"
    # tuned = 0.4 (β=1, by validation); Δ vs SFT = 0.4 − 0.1; rmipo 0.45 − 0.4; beta_dpo 0.35 − 0.4
    assert lines[2] == ("| arith | 0.100 | 0.400 (β=1) | +0.300 [+0.300, +0.300] | +0.050 [+0.050, +0.050] | "
                        "-0.050 [-0.050, -0.050] |")
    # the trap setting comes after the clean ones; its tuned dpo is β=1 (val 0.4) at 0.25, 0.05 above SFT 0.2
    assert lines[3] == "| noisy (trap) | 0.200 | 0.250 (β=1) | +0.050 [+0.050, +0.050] | – | – |"
    assert len(lines) == 6 and "50 replicates, random seed 0" in lines[5]


def test_clean_and_arms_choose_rows_and_columns(hand_runs):
    loaded = load_runs(hand_runs)
    text = headline_markdown(loaded, HeadlineOptions(arms=("beta_dpo",), clean=True, report=ReportOptions(n_boot=50)))
    lines = text.splitlines()
    assert lines[0] == "| setting | SFT | tuned dpo (config) | Δ vs SFT | beta_dpo (default) |"
    assert lines[2].startswith("| arith |") and lines[3] == ""  # one row: the trap setting is left out
    with pytest.raises(ValueError, match=r"--arms imi_ipo: no untuned run of that method.*'rmipo'"):
        headline_markdown(loaded, HeadlineOptions(arms=("imi_ipo",), report=ReportOptions(n_boot=50)))
    with pytest.raises(ValueError, match=r"no setting has a tuned 'ipo'.*tuned methods there: \['dpo'\]"):
        headline_markdown(loaded, HeadlineOptions(baseline="ipo", report=ReportOptions(n_boot=50)))


def test_an_imi_method_shows_its_declared_defaults_as_one_column(tmp_path):
    """An IMI method with an ablation (here its length control) shows its runs at its declared defaults alone,
    under its own name, and names what it left out; --all-configs shows every configuration."""
    declared = {"beta": 2.0, "signal": "pmi"}
    for seed in (0, 1, 2):
        write_run(tmp_path, "dpo", 0.1, seed, test=0.6, val=0.2)
        write_run(tmp_path, "dpo", 1.0, seed, test=0.4, val=0.5)
        write_run(tmp_path, "rmipo", 2.0, seed, test=0.45, val=0.3, imi=True, signal="pmi", defaults=declared)
        write_run(tmp_path, "rmipo", 2.0, seed, test=0.3, val=0.3, imi=True, signal="length", defaults=declared)
    loaded = load_runs(tmp_path)
    lines = headline_markdown(loaded, HeadlineOptions(report=ReportOptions(n_boot=50))).splitlines()
    assert lines[0] == "| setting | SFT | tuned dpo (config) | Δ vs SFT | rmipo |"
    assert lines[2] == "| arith | 0.100 | 0.400 (β=1) | +0.300 [+0.300, +0.300] | +0.050 [+0.050, +0.050] |"
    assert "its other configurations are left out (rmipo (β=2, signal=length); `--all-configs` shows them)" in lines[4]
    every = headline_markdown(loaded, HeadlineOptions(report=ReportOptions(n_boot=50), all_configs=True)).splitlines()
    assert every[0] == ("| setting | SFT | tuned dpo (config) | Δ vs SFT | rmipo (β=2, signal=length) | "
                        "rmipo (β=2, signal=pmi) |")
    assert every[2].endswith("| -0.100 [-0.100, -0.100] | +0.050 [+0.050, +0.050] |") and "left out" not in every[4]


def test_arm_columns_keep_entries_where_no_single_declared_default_exists():
    """A method with no entry at its declared defaults, or two on one setting, keeps one column per entry."""
    untuned = pd.DataFrame({"setting": ["a", "a", "b", "a"], "entry": ["m (x=1)", "m (x=2)", "m (x=1)", "k (y=1)"],
                            "method": ["m", "m", "m", "k"], "is_imi": True, "declared": [True, False, True, False]})
    columns, left_out = arm_columns(untuned, None, all_configs=False)
    assert columns == {"k (y=1)": {"a": "k (y=1)"}, "m": {"a": "m (x=1)", "b": "m (x=1)"}} and left_out == ["m (x=2)"]
    twice = untuned.assign(declared=[True, True, True, False])
    columns, left_out = arm_columns(twice, None, all_configs=False)
    assert list(columns) == ["k (y=1)", "m (x=1)", "m (x=2)"] and left_out == []


# The report the fabricated sweep's headlines are compared with: Optuna's replays kept few so it takes seconds;
# at tolerance 0.1 the savings' intervals depend on the bootstrap's draws, at 0.05 the cheapest tuner on the setting.
REPORT = ReportOptions(n_boot=300, seed=7, figures=False, tolerances=(0.05, 0.1), optuna_tuners=True,
                       optuna_replicates=3)


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory) -> tuple:
    """A fabricated sweep (a clean and a trap setting, a dpo grid, two IMI arms, costs and validation curves)
    and the tables of its report."""
    root = tmp_path_factory.mktemp("fabricated")
    fabricate.write_sweep(root / "runs", datasets=("sentiment", "sentiment_noisy"), seeds=(0, 1, 2),
                          grids={"dpo": (0.03, 0.1, 0.3), "rmipo": (2.0,), "imi_dpo": (0.1,)}, failures=False)
    loaded = load_runs(root / "runs")
    build_report(loaded, root / "report", REPORT)
    return loaded, root / "report" / "tables"


def test_the_cells_are_the_reports_comparison_table(fabricated):
    """Same records, same options: the headline's numbers are the report's comparison.csv, to the bit."""
    loaded, tables = fabricated
    report = pd.read_csv(tables / "comparison.csv")
    ours, metric = comparison(loaded, HeadlineOptions(report=REPORT))
    assert metric == "gold_reward" and list(ours["entry"]) == list(report["entry"])
    numbers = ["score", "score_ci_low", "score_ci_high", "delta_sft", "delta_sft_ci_low", "delta_sft_ci_high",
               "delta_tuned", "delta_tuned_ci_low", "delta_tuned_ci_high"]
    np.testing.assert_array_equal(ours[numbers].to_numpy(float), report[numbers].to_numpy(float))


SAVINGS_NUMBERS = ["p_reach", "p_reach_ci_low", "p_reach_ci_high", "arm_flops", "tuner_flops", "savings_flops",
                   "savings_flops_ci_low", "savings_flops_ci_high"]


def savings_of(loaded, report: ReportOptions) -> pd.DataFrame:
    options = HeadlineOptions(view="savings", report=report)
    return savings_table(report_runs(loaded, None, report.n_boot, report.seed), options).table


@pytest.mark.parametrize("tolerance", [0.05, 0.1])
def test_the_savings_cells_are_the_reports_savings_table(fabricated, tolerance):
    """Each row is the report's savings.csv row against the tuner that its tuner_reach.csv says is cheapest in
    FLOPs at τ (found here from the CSV), with that table's τ and budget — the same numbers, to the bit."""
    loaded, tables = fabricated
    report = replace(REPORT, tolerances=(tolerance,), optuna_tuners=False)
    ours = savings_of(loaded, report)
    reach = pd.read_csv(tables / "tuner_reach.csv").query(f"tolerance == {tolerance}")
    saved = pd.read_csv(tables / "savings.csv").query(f"tolerance == {tolerance}")
    expected = []
    for setting, rows in reach.groupby("setting", sort=True):
        finite = rows[np.isfinite(rows["flops"])]
        cheapest = finite.sort_values("flops", kind="stable").iloc[0] if len(finite) else rows.iloc[0]
        against = saved[(saved["setting"] == setting) & (saved["tuner"] == cheapest["tuner"])]
        expected.append(against.assign(tau=cheapest["tau"], budget=cheapest["budget"],
                                       tuner=cheapest["tuner"] if len(finite) else NONE_REACHES))
    expected = pd.concat(expected, ignore_index=True)
    assert list(zip(ours["setting"], ours["arm"])) == list(zip(expected["setting"], expected["arm"])) and len(ours) == 4
    assert list(ours["tuner"]) == list(expected["tuner"]) and np.isfinite(ours["savings_flops"]).any()
    numbers = ["tau", "budget", *SAVINGS_NUMBERS]
    np.testing.assert_array_equal(ours[numbers].to_numpy(float), expected[numbers].to_numpy(float))
    if tolerance == 0.05:  # the two settings' cheapest tuners differ
        assert ours["tuner"].nunique() == 2
    else:  # the intervals are the bootstrap's: another draw of replicates changes them
        other = savings_of(loaded, replace(report, seed=REPORT.seed + 1))
        assert not np.array_equal(other[SAVINGS_NUMBERS].to_numpy(float), ours[SAVINGS_NUMBERS].to_numpy(float))


def test_the_optuna_savings_cells_are_the_reports_lead_table(fabricated):
    loaded, tables = fabricated
    ours = savings_of(loaded, replace(REPORT, tolerances=(0.05,)))
    lead = pd.read_csv(tables / "optuna_lead.csv").query("tolerance == 0.05").rename(columns=lambda c: c.replace(
        "arm_p_reach", "p_reach"))
    assert len(ours) == len(lead) == 2 and list(ours["tuner"]) == list(lead["best_tuner"])  # the clean setting's arms
    numbers = [*SAVINGS_NUMBERS, "tuner_flops_ci_low", "tuner_flops_ci_high", "tau"]
    np.testing.assert_array_equal(ours[numbers].to_numpy(float), lead[numbers].to_numpy(float))


@pytest.fixture(scope="module")
def cost_runs(tmp_path_factory) -> Path:
    """Seeds agree. On "arith" dpo's validation picks β=1 (test 0.4), so τ = 0.4 − 0.05 = 0.35; random search
    with k = 1 expects (0.6 + 0.4) / 2 = 0.5 ≥ τ for one run's FLOPs (1e12), the cheapest (grid search pays
    2e12; there are no curves, so no successive halving). rmipo (0.45, 5e11 FLOPs) saves 1 − 5e11/1e12 = 50%;
    imi_dpo (0.3) misses τ. On the trap "noisy", τ = 0.25 − 0.05 and rmipo (0.1) misses it. P(reach τ) over 3
    seeds: the bootstrap gives the point, Wilson's interval at n = 3 the floor: 3/3 → lower 3/(3 + z²) = 43.9%,
    0/3 → upper z²/(3 + z²) = 56.1% (z = 1.96)."""
    root = tmp_path_factory.mktemp("costs")
    for seed in (0, 1, 2):
        write_run(root, "dpo", 0.1, seed, test=0.6, val=0.2, flops=1e12)
        write_run(root, "dpo", 1.0, seed, test=0.4, val=0.5, flops=1e12)
        write_run(root, "rmipo", 2.0, seed, test=0.45, val=0.3, imi=True, flops=5e11)
        write_run(root, "imi_dpo", 0.1, seed, test=0.3, val=0.3, imi=True, flops=4e11)
        for beta, test, val in ((0.1, 0.3, 0.1), (1.0, 0.25, 0.4)):
            write_run(root, "dpo", beta, seed, test=test, val=val, dataset="noisy", trap="label noise", flops=1e12)
        write_run(root, "rmipo", 2.0, seed, test=0.1, val=0.1, dataset="noisy", trap="label noise", imi=True, flops=5e11)
    return root


def test_hand_computed_savings(cost_runs):
    loaded = load_runs(cost_runs)
    options = HeadlineOptions(view="savings", report=ReportOptions(n_boot=50, tolerances=(0.05,)))
    lines = headline_markdown(loaded, options).splitlines()
    assert lines[0] == ("| setting | arm | τ | cheapest tuner to τ (budget) | its FLOPs | arm P(reach τ) [CI] | arm FLOPs | "
                        "saving, FLOPs [CI] |")
    assert lines[2:5] == [
        "| arith | imi_dpo | 0.350 | random search (1) | 1e+12 | 0.0% [0.0%, 56.1%] | 4e+11 | misses τ |",
        "| arith | rmipo | 0.350 | random search (1) | 1e+12 | 100.0% [43.9%, 100.0%] | 5e+11 | 50.0% [50.0%, 50.0%] |",
        "| noisy (trap) | rmipo | 0.200 | random search (1) | 1e+12 | 0.0% [0.0%, 56.1%] | 5e+11 | misses τ |"]
    caption = lines[6]
    assert "− 0.05" in caption and "per_procedure" in caption and "50 replicates, random seed 0" in caption
    assert "Tuner unavailable: successive halving" in caption  # the report's note: no validation curves
    chosen = headline_markdown(loaded, replace(options, arms=("rmipo",), clean=True)).splitlines()
    assert chosen[2].startswith("| arith | rmipo |") and chosen[3] == ""


def test_the_cheapest_tuner_first_on_ties_and_none_when_all_miss():
    reach = pd.DataFrame({"setting": ["a", "a", "a", "b", "b"], "tolerance": 0.05, "tau": [0.3, 0.3, 0.3, 0.2, 0.2],
                          "tuner": ["grid search", "random search", "successive halving η=2", "grid search",
                                    "random search"], "budget": [3, 2, 2, np.nan, np.nan],
                          "flops": [3.0, 2.0, 2.0, np.inf, np.inf]})
    saved = pd.DataFrame({"setting": ["a"] * 3 + ["b"] * 2, "tolerance": 0.05, "arm": "rmipo",
                          "tuner": list(reach["tuner"]), "savings_flops": [0.7, 0.5, 0.5, 1.0, 1.0]})
    table = _against_cheapest(reach, saved)
    assert list(table["tuner"]) == ["random search", NONE_REACHES]
    assert list(table["savings_flops"]) == [0.5, 1.0] and list(table["budget"].fillna(-1)) == [2, -1]


@pytest.fixture(scope="module")
def signal_runs(tmp_path_factory) -> Path:
    """Seeds agree, so each pmi − control interval is its point. arith: imi_dpo's pmi (0.5) beats length
    (0.45) and constant (0.4), ties shuffled and pmi_residual (0.5): "more than a length prior here"; rmipo
    ties every control and has no pmi_residual run. The trap "noisy": imi_dpo beats shuffled, length not run."""
    root = tmp_path_factory.mktemp("signals")
    arms = [("arith", None, "imi_dpo", {"pmi": 0.5, "length": 0.45, "shuffled": 0.5, "constant": 0.4,
                                        "pmi_residual": 0.5}),
            ("arith", None, "rmipo", {"pmi": 0.5, "length": 0.5, "shuffled": 0.5, "constant": 0.5}),
            ("noisy", "label noise", "imi_dpo", {"pmi": 0.5, "shuffled": 0.45})]
    for dataset, trap, method, scores in arms:
        for signal, test in scores.items():
            for seed in (0, 1, 2):
                write_run(root, method, 0.1, seed, test=test, val=test, dataset=dataset, trap=trap, imi=True,
                          signal=signal)
    return root


def test_hand_computed_mechanism(signal_runs):
    loaded = load_runs(signal_runs)
    options = HeadlineOptions(view="mechanism", report=ReportOptions(n_boot=50))
    lines = headline_markdown(loaded, options).splitlines()
    assert lines[0] == ("| setting | method | seeds | controls | pmi beats | pmi_residual keeps what pmi does | "
                        "reading |")
    assert lines[2:5] == [
        "| arith | imi_dpo | 3 | length, shuffled, constant, pmi_residual | length, constant | yes | "
        "more than a length prior here |",
        "| arith | rmipo | 3 | length, shuffled, constant | none | – | per-pair values not shown to matter here |",
        "| noisy (trap) | imi_dpo | 3 | shuffled | shuffled | – | not shown to be more than a length prior here |"]
    assert "50 replicates, random seed 0" in lines[6]
    chosen = headline_markdown(loaded, replace(options, arms=("rmipo",), clean=True)).splitlines()
    assert chosen[2].startswith("| arith | rmipo |") and chosen[3] == ""


def test_the_mechanism_is_the_reports_signal_verdicts(tmp_path):
    """Seeds that disagree, so the intervals are the bootstrap's: the same verdicts as the report's CSV."""
    rng = np.random.default_rng(3)
    means = {"rmipo": {"pmi": 0.5, "length": 0.47, "shuffled": 0.42, "constant": 0.5, "pmi_residual": 0.49},
             "imi_dpo": {"pmi": 0.5, "length": 0.42, "shuffled": 0.45, "constant": 0.4, "pmi_residual": 0.44}}
    for method, scores in means.items():
        for seed in range(4):
            shared = rng.normal(0, 0.03)  # one seed effect across the signals: the comparisons are paired
            for signal, mean in scores.items():
                test = mean + shared + rng.normal(0, 0.01)
                write_run(tmp_path / "runs", method, 0.1, seed, test, test, imi=True, signal=signal)
    loaded = load_runs(tmp_path / "runs")
    build_report(loaded, tmp_path / "report", ReportOptions(n_boot=200, seed=5, figures=False))
    report = pd.read_csv(tmp_path / "report" / "tables" / "signal_verdicts.csv", keep_default_na=False)
    ours = mechanism_table(report_runs(loaded, None, 200, 5), HeadlineOptions(report=ReportOptions(n_boot=200, seed=5)))
    assert list(ours["method"]) == list(report["method"]) == ["imi_dpo", "rmipo"]
    assert list(ours["beats"]) == list(report["beats"]) and list(ours["reading"]) == list(report["reading"])
    assert [str(v) for v in ours["residual_keeps"]] == list(report["residual_keeps"].astype(str))
    assert list(ours["reading"]) == ["more than length, but not its length-free part alone",
                                     "not shown to be more than a length prior here"]


def test_views_without_what_they_need_say_what_is_missing(hand_runs, signal_runs, tmp_path):
    options = HeadlineOptions(view="mechanism", report=ReportOptions(n_boot=50))
    with pytest.raises(ValueError, match=r"no IMI run in the records has `method.signal` \(no signal-control runs\); the "
                                         r"mechanism view needs .*`experiment=ablation_signal`"):
        headline_markdown(load_runs(hand_runs), options)
    for seed in (0, 1):
        write_run(tmp_path, "imi_dpo", 0.1, seed, test=0.5, val=0.5, imi=True, signal="pmi")
    with pytest.raises(ValueError, match=r"the IMI runs' signals are \['pmi'\], none is a control"):
        headline_markdown(load_runs(tmp_path), options)
    savings = HeadlineOptions(view="savings", report=ReportOptions(n_boot=50, tolerances=(0.05,)))
    with pytest.raises(ValueError, match=r"no setting has a 'dpo' grid .* methods with a grid: \[\]"):
        headline_markdown(load_runs(signal_runs), savings)
    with pytest.raises(ValueError, match=r"the records carry no cost.flops"):
        headline_markdown(load_runs(hand_runs), savings)
    with pytest.raises(ValueError, match=r"one tolerance, got \[0.0, 0.05\]"):
        HeadlineOptions(view="savings")


def test_the_views_in_markers_and_help(cost_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(cost_runs)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- headline: python -m analysis headline . --n-boot 50 --savings -->\n<!-- /headline -->\n")
    assert main(["headline", "--write", str(doc)]) == 0
    assert "| arith | rmipo | 0.350 | random search (1) |" in doc.read_text()
    # the same command spelled out (the default tolerance and convention) is the same block; another is not
    assert main(["headline", ".", "--savings", "--tolerance", "0.05", "--per-procedure", "--n-boot", "50",
                 "--check", str(doc)]) == 0
    assert main(["headline", ".", "--savings", "--tolerance", "0", "--n-boot", "50", "--check", str(doc)]) == 2
    assert "no headline block holds this command" in capsys.readouterr().err
    assert main(["headline", ".", "--tolerance", "0.1"]) == 2
    assert "--tolerance: applies to --savings only" in capsys.readouterr().err
    doc.write_text("<!-- headline: python -m analysis headline . --mechanism -->\n<!-- /headline -->\n"
                   "<!-- headline: python -m analysis headline . --amortize -->\n<!-- /headline -->\n")
    assert main(["headline", "--check", str(doc)]) == 2
    assert "line 3: the headline marker `python -m analysis headline . --amortize`: " \
           "--per-procedure/--amortize/--per-run: applies to --savings only" in capsys.readouterr().err
    assert main(["headline", ".", "--mechanism"]) == 2
    assert "no IMI run in the records has `method.signal`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["headline", "--help"])
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--savings", "--mechanism", "--tolerance", "--optuna-tuners", "--amortize"))


def blocks() -> list[tuple[str, int]]:
    return [(name, i) for name in EMBEDDED for i in range(len(find_blocks((ROOT / name).read_text(), name)))]


def test_each_document_embeds_its_blocks():
    for name, count in EMBEDDED.items():
        assert len(find_blocks((ROOT / name).read_text(), name)) == count, name


@pytest.fixture(scope="module")
def committed() -> Computer:
    """Loads each committed results folder once for all the embedded blocks."""
    return Computer(ROOT)


@pytest.mark.parametrize("name, index", blocks(), ids=lambda v: str(v))
def test_embedded_headline_is_what_the_command_prints(name, index, tmp_path, committed):
    """Regenerate with `python -m analysis headline --write <document>` from the repository root."""
    text = (ROOT / name).read_text()
    block = find_blocks(text, name)[index]
    # the block alone, so each embedding is its own test
    alone = tmp_path / "doc.md"
    alone.write_text(f"<!-- headline: {block.command} -->\n{block.body}<!-- /headline -->\n")
    _, diffs = refresh(alone, root=ROOT, computer=committed)
    assert not diffs, (f"{name}: the block `{block.command}` differs from the records; run "
                       f"`python -m analysis headline --write {name}`\n" + "\n".join(diffs))


def test_check_and_write_a_document(hand_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(hand_runs)
    command = "python -m analysis headline . --n-boot 50 --clean"
    other = "python -m analysis headline . --n-boot 50"
    doc = tmp_path / "doc.md"
    doc.write_text(f"Intro.\n\n<!-- headline: {command} -->\nstale\n<!-- /headline -->\n\nMiddle.\n\n"
                   f"<!-- headline: {other} -->\n<!-- /headline -->\nEnd.\n")
    assert main(["headline", "--check", str(doc)]) == 1
    out = capsys.readouterr()
    assert "-stale" in out.out and "+| arith | 0.100 | 0.400 (β=1) |" in out.out
    assert f"2 headline block(s) differ from the records; refresh with `python -m analysis headline --write {doc}`" \
        in out.err
    # with a folder and options, only the block holding the same command (options in any order)
    assert main(["headline", ".", "--clean", "--n-boot", "50", "--write", str(doc)]) == 0
    text = doc.read_text()
    assert "stale" not in text and text.count("| arith |") == 1
    assert main(["headline", ".", "--clean", "--n-boot", "50", "--check", str(doc)]) == 0
    assert main(["headline", "--write", str(doc)]) == 0
    assert main(["headline", "--check", str(doc)]) == 0
    capsys.readouterr()
    assert main(["headline", ".", "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    assert printed == find_blocks(doc.read_text())[1].body
    assert text.startswith("Intro.\n\n<!-- headline: ") and doc.read_text().endswith("<!-- /headline -->\nEnd.\n")


@pytest.mark.parametrize("document, message", [
    ("<!-- headline: python -m analysis headline . -->\nno close\n", "1 headline markers open and 0 close"),
    ("<!-- headline: python -m analysis report . -->\n<!-- /headline -->\n", "line 1: a headline marker must hold"),
    ("<!-- headline: python -m analysis headline . --check x.md -->\n<!-- /headline -->\n", "have no --check/--write"),
    ("<!-- headline: python -m analysis headline . --bogus -->\n<!-- /headline -->\n",
     "cannot parse the headline marker"),
])
def test_bad_markers_exit_2_naming_the_file(hand_runs, tmp_path, capsys, monkeypatch, document, message):
    monkeypatch.chdir(hand_runs)
    doc = tmp_path / "doc.md"
    doc.write_text(document)
    assert main(["headline", "--check", str(doc)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {doc}") and message in err


def test_bad_input_exits_2(hand_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(hand_runs)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- headline: python -m analysis headline . --clean -->\n<!-- /headline -->\n")
    assert main(["headline", ".", "--check", str(doc)]) == 2
    assert "no headline block holds this command; its blocks: `python -m analysis headline . --clean`" \
        in capsys.readouterr().err
    assert main(["headline", ".", "--check", str(tmp_path / "absent.md")]) == 2
    assert "absent.md: no such file" in capsys.readouterr().err
    assert main(["headline", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert main(["headline"]) == 2
    assert "a results folder is required" in capsys.readouterr().err
    assert main(["headline", ".", "--metric", "kl"]) == 2
    assert "'kl' is lower-is-better" in capsys.readouterr().err
