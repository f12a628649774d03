"""The headline table (analysis.headline, `python -m analysis headline`): its cells equal the report's
comparison table, its numbers are checked by hand on records whose seeds agree (so every interval is
its point), and every table embedded in README.md and the results READMEs is what the
command prints on the committed records — one test per embedded block."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.headline import Computer, HeadlineOptions, comparison, find_blocks, headline_markdown, refresh
from analysis.load import load_runs
from analysis.report import ReportOptions, build_report

ROOT = Path(__file__).resolve().parents[1]
# document -> how many headline blocks it embeds (a marker deleted by mistake fails here, not silently)
EMBEDDED = {"README.md": 3, "results/baselines/v1/README.md": 3, "results/beta_sensitivity/README.md": 1,
            "results/kto/README.md": 1}

_spec = importlib.util.spec_from_file_location("analysis_fabricate",
                                               Path(__file__).parent / "fixtures/analysis/fabricate.py")
fabricate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fabricate)


def write_run(root: Path, method: str, beta: float, seed: int, test: float, val: float, *, dataset: str = "arith",
              trap: str | None = None, imi: bool = False, reference: float = 0.1) -> None:
    """One completed schema-2 record with the given test and validation gold reward."""
    run_id = f"{method}-{dataset}-b{beta:g}-s{seed}"
    record = {"run_id": run_id, "sweep_id": "hand", "config_hash": run_id, "status": "completed", "schema_version": 2,
              "config": {"method": {"name": method, "beta": beta}, "dataset": {"name": dataset, "trap": trap},
                         "model": {"name": "tiny"}, "hardware": {"name": "cpu"}, "seed": seed},
              "metrics": {"gold_reward": test, "val/gold_reward": val, "reference_gold_reward": reference},
              "method_info": {"imi": imi, "defaults": {"beta": 0.1 if method == "dpo" else beta}}}
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


def test_the_cells_are_the_reports_comparison_table(tmp_path):
    """Same records, same options: the headline's numbers are the report's comparison.csv, to the bit."""
    fabricate.write_sweep(tmp_path / "runs", datasets=("sentiment", "sentiment_noisy"), seeds=(0, 1, 2),
                          grids={"dpo": (0.03, 0.1, 0.3), "rmipo": (2.0,), "imi_dpo": (0.1,)}, failures=False)
    loaded = load_runs(tmp_path / "runs")
    options = ReportOptions(n_boot=300, seed=7, figures=False)
    build_report(loaded, tmp_path / "report", options)
    report = pd.read_csv(tmp_path / "report" / "tables" / "comparison.csv")
    ours, metric = comparison(loaded, HeadlineOptions(report=options))
    assert metric == "gold_reward" and list(ours["entry"]) == list(report["entry"])
    numbers = ["score", "score_ci_low", "score_ci_high", "delta_sft", "delta_sft_ci_low", "delta_sft_ci_high",
               "delta_tuned", "delta_tuned_ci_low", "delta_tuned_ci_high"]
    np.testing.assert_array_equal(ours[numbers].to_numpy(float), report[numbers].to_numpy(float))


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
