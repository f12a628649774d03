"""The headline's per-seed view (analysis.seed_view, `python -m analysis headline --per-seed`): every cell checked
by hand on records whose seeds differ, the columns following what the records measured, and the view embedded
between headline markers like any other."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.__main__ import main
from analysis.headline import HeadlineOptions, headline_markdown
from analysis.load import load_runs
from analysis.report import ReportOptions

SEEDS_VIEW = dict(view="seeds", report=ReportOptions(n_boot=20))


def write_run(root: Path, method: str, beta: float, seed: int, test: float, reference: float, *,
              dataset: str = "arith", trap: str | None = None, imi: bool = False, keys: dict | None = None,
              defaults: dict | None = None, **extra: float) -> None:
    """A completed record; `keys` more method keys (their defaults: `defaults`, else "bos" for context and None);
    `extra` metrics by name ("kl", "lm_eval/t/acc", ...), "total_s" into its cost."""
    keys = keys or {}
    run_id = f"{method}-{dataset}-b{beta:g}-{'-'.join(map(str, keys.values()))}-s{seed}"
    total_s = extra.pop("total_s", None)
    record = {"run_id": run_id, "sweep_id": "hand", "config_hash": run_id, "status": "completed", "schema_version": 2,
              "config": {"method": {"name": method, "beta": beta, **keys}, "dataset": {"name": dataset, "trap": trap},
                         "model": {"name": "tiny"}, "hardware": {"name": "cpu"}, "seed": seed},
              "metrics": {"gold_reward": test, "val/gold_reward": test, "reference_gold_reward": reference, **extra},
              "method_info": {"imi": imi, "defaults": {"beta": 0.1 if method == "dpo" else beta,
                                                       **{k: ("bos" if k == "context" else None) for k in keys},
                                                       **(defaults or {})}}}
    if total_s is not None:
        record["cost"] = {"total_s": total_s}
    directory = root / "hand" / run_id
    directory.mkdir(parents=True)
    (directory / "record.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """arith: SFT scores 0.1 / 0.2 on seeds 0 / 1 (lm-eval 0.55 / 0.6); dpo at two β on both seeds, rmipo on
    seed 0 only (at its default context and, an ablation, at another with a prompt cap); a trap setting with one
    dpo configuration."""
    root = tmp_path_factory.mktemp("seeds")
    lm, ref_lm = "lm_eval/t/acc", "reference_lm_eval/t/acc"
    for seed, ref, ref_acc in ((0, 0.1, 0.55), (1, 0.2, 0.6)):
        write_run(root, "dpo", 0.1, seed, test=(0.5, 0.4)[seed], reference=ref, kl=(2.0, 4.0)[seed],
                  total_s=(100.0, 130.0)[seed], **{lm: (0.5, 0.6)[seed], ref_lm: ref_acc})
        write_run(root, "dpo", 1.0, seed, test=(0.3, 0.2)[seed], reference=ref, kl=0.5, total_s=90.0,
                  **{lm: 0.5, ref_lm: ref_acc})
        write_run(root, "dpo", 0.1, seed, test=0.0, reference=0.05, dataset="noisy", trap="label noise")
    write_run(root, "rmipo", 2.0, 0, test=0.45, reference=0.1, imi=True, kl=3.0, total_s=120.0,
              keys={"context": "bos", "cap": None}, **{"imi/acting_share": 0.9, lm: 0.625, ref_lm: 0.55})
    write_run(root, "rmipo", 2.0, 0, test=0.15, reference=0.1, imi=True, keys={"context": "chat", "cap": 72})
    write_run(root, "simpo", 2.0, 1, test=0.1, reference=0.2, keys={"gamma_beta_ratio": 0.0},
              defaults={"gamma_beta_ratio": 0.5})
    return root


def test_hand_computed_cells(runs):
    lines = headline_markdown(load_runs(runs), HeadlineOptions(**SEEDS_VIEW)).splitlines()
    assert lines[0] == ("| setting | configuration | seeds | per seed | mean Δ vs SFT | lm-eval t acc | KL (nats) | "
                        "acting share | wall (s) |")
    # the SFT row: its own score per seed, its lm-eval range; Δ per seed = run − that seed's SFT score
    assert lines[2] == "| arith | SFT (reference) | 0,1 | 0.100 / 0.200 | – | 0.550–0.600 | – | – | – |"
    assert lines[3] == "| arith | dpo β=0.1 (default) | 0,1 | +0.400 / +0.200 | +0.300 | 0.500–0.600 | 2–4 | – | 100–130 |"
    assert lines[4] == "| arith | dpo β=1 | 0,1 | +0.200 / +0.000 | +0.100 | 0.500 | 0.5 | – | 90 |"
    # an IMI configuration off one of its declared defaults is not "(default)"; a null key reads "null"
    assert lines[5] == "| arith | rmipo β=2, cap=null, context=bos (default) | 0 | +0.350 | +0.350 | 0.625 | 3 | 0.90 | 120 |"
    assert lines[6] == "| arith | rmipo β=2, cap=72, context=chat | 0 | +0.050 | +0.050 | – | – | – | – |"
    # a label shows the keys a sweep varied; a broken default it would leave unsaid is added
    assert lines[7] == "| arith | simpo β=2, gamma_beta_ratio=0 | 1 | -0.100 | -0.100 | – | – | – | – |"
    # the trap setting after the clean one; what its records lack prints "–"
    assert lines[8] == "| noisy (trap) | SFT (reference) | 0,1 | 0.050 / 0.050 | – | – | – | – | – |"
    assert lines[9] == "| noisy (trap) | dpo β=0.1 (default) | 0,1 | -0.050 / -0.050 | -0.050 | – | – | – | – |"
    assert lines[10] == "" and "acting share = " in lines[11] and len(lines) == 12


def test_arms_and_clean_choose_rows(runs):
    loaded = load_runs(runs)
    lines = headline_markdown(loaded, HeadlineOptions(arms=("rmipo",), clean=True, **SEEDS_VIEW)).splitlines()
    assert [line.split(" | ")[1] for line in lines[2:5]] == ["SFT (reference)", "rmipo β=2, cap=null, context=bos (default)",
                                                             "rmipo β=2, cap=72, context=chat"]
    assert lines[5] == ""
    with pytest.raises(ValueError, match=r"--arms kto: no run of that method.*\['dpo', 'rmipo', 'simpo'\]"):
        headline_markdown(loaded, HeadlineOptions(arms=("kto",), **SEEDS_VIEW))


def test_columns_follow_what_the_records_measured(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "dpo", 0.1, seed, test=0.3, reference=0.1)
        write_run(tmp_path, "dpo", 1.0, seed, test=0.2, reference=0.1)
    lines = headline_markdown(load_runs(tmp_path), HeadlineOptions(**SEEDS_VIEW)).splitlines()
    assert lines[0] == "| setting | configuration | seeds | per seed | mean Δ vs SFT |"
    assert "ranges are" not in lines[-1]


def test_the_view_in_markers_and_on_the_command_line(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(runs)
    assert main(["headline", ".", "--per-seed", "--n-boot", "20"]) == 0
    printed = capsys.readouterr().out
    assert "| arith | dpo β=1 | 0,1 | +0.200 / +0.000 |" in printed
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- headline: python -m analysis headline . --per-seed --n-boot 20 -->\nstale\n<!-- /headline -->\n")
    assert main(["headline", "--check", str(doc)]) == 1
    assert main(["headline", "--write", str(doc)]) == 0
    assert printed in doc.read_text() and main(["headline", "--check", str(doc)]) == 0
    capsys.readouterr()
    assert main(["headline", ".", "--per-seed", "--tolerance", "0.1"]) == 2
    assert "--tolerance: applies to --savings only" in capsys.readouterr().err
