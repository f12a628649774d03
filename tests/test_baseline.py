"""Committed baselines: subsets select the runs they name, every number of a reproduction is compared
within the manifest's tolerances, and a changed number (a run's metric or a report cell) fails."""
import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main as analysis_main
from bench.baseline import BaselineError, describe, main, matches, select_records, subset_filter, table_rows
from bench.pipeline import run
from bench.reproduce import completed_records


def test_a_subset_selects_runs_by_dotted_config_keys_or_by_part():
    config = {"method": {"name": "dpo", "beta": 0.1}, "dataset": {"name": "arithmetic"}, "seed": 0}
    assert matches(config, {"method.name": ["dpo"], "seed": [0, 1]})
    assert not matches(config, {"method.name": ["dpo"], "method.beta": [1.0]})
    assert not matches(config, {"model.name": ["tiny"]})  # an absent key matches nothing
    assert matches(config, [{"method.beta": [1.0]}, {"dataset.name": ["arithmetic"]}])  # any clause of a list
    assert not matches(config, [{"method.beta": [1.0]}, {"seed": [3]}])
    manifest = {"parts": {"clean": {"where": {"dataset.name": ["arithmetic"]}}},
                "subsets": {"clean": {"part": "clean"}, "one": {"where": {"seed": [0]}}, "bad": {"part": "gone"}}}
    assert subset_filter(manifest, "clean") == {"dataset.name": ["arithmetic"]}
    assert subset_filter(manifest, "one") == {"seed": [0]}
    with pytest.raises(BaselineError, match="unknown subset 'two'; this baseline has: bad, clean, one"):
        subset_filter(manifest, "two")
    with pytest.raises(BaselineError, match="names part 'gone'"):
        subset_filter(manifest, "bad")


def test_report_cells_compare_within_atol_and_ignore_wall_clock_columns():
    committed = pd.DataFrame({"setting": ["a", "b"], "score": [0.5, math.nan], "device_hours": [1.0, 2.0],
                              "savings": [-math.inf, 0.25]})
    same = committed.assign(score=[0.5 + 5e-7, math.nan], device_hours=[9.0, 9.0])
    rows = table_rows("t.csv", committed, same, atol=1e-6, ignore="device_hours")
    assert [(r["where"], r["number"], r["ok"]) for r in rows] == [
        ("t.csv row 0", "setting", True), ("t.csv row 1", "setting", True),
        ("t.csv row 0", "score", True), ("t.csv row 1", "score", True),
        ("t.csv row 0", "savings", True), ("t.csv row 1", "savings", True)]  # equal infinities agree
    assert rows[2]["diff"] == pytest.approx(5e-7)

    moved = committed.assign(score=[0.5 + 2e-6, 0.1], setting=["a", "c"], savings=[0.1, 0.25])
    failed = [(r["where"], r["number"]) for r in table_rows("t.csv", committed, moved, 1e-6, "device_hours") if not r["ok"]]
    assert failed == [("t.csv row 1", "setting"), ("t.csv row 0", "score"), ("t.csv row 1", "score"),
                      ("t.csv row 0", "savings")]

    shape = table_rows("t.csv", committed, committed.iloc[:1], 1e-6)
    assert len(shape) == 1 and shape[0]["number"] == "shape" and not shape[0]["ok"]


@pytest.mark.slow
@pytest.mark.ci
def test_reproduce_a_baseline_passes_then_catches_a_changed_run_and_a_changed_cell(make_config, shared_cache,
                                                                                    tmp_path, capsys):
    folder = tmp_path / "v0"
    runs = []
    for overrides in (("method=dpo", "method.beta=0.1"), ("method=dpo", "method.beta=1.0"), ("method=rmipo",)):
        config = make_config(*overrides, f"paths.runs_root={folder / 'runs'}")
        runs.append(run(config))
        assert runs[-1].record["status"] == "completed"
    assert analysis_main(["report", str(folder / "runs"), "--out", str(folder / "report"), "--n-boot", "200",
                          "--no-figures"]) == 0
    capsys.readouterr()
    manifest = {
        "default_subset": "rmipo",
        "parts": {"all": {"where": {"dataset.name": ["sentiment"]}}},
        "subsets": {"rmipo": {"description": "the IMI run", "where": {"method.name": ["rmipo"]}},
                    "all": {"part": "all"}},
        "tolerances": {"run_metrics": {"atol": 1e-6, "metrics": "all"},
                       "report_tables": {"atol": 1e-6, "tables": ["comparison.csv", "grid.csv"],
                                         "ignore_columns": "device_hours|wall_s|wait_s"}},
        "runs": "runs",
        "reports": [{"out": "report", "args": ["--n-boot", "200", "--no-figures"]}],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    cache = ["--cache-root", str(shared_cache)]

    assert main(["reproduce", str(folder), *cache]) == 0
    out = capsys.readouterr().out
    assert "subset 'rmipo', 1 runs" in out and "comparison.csv" in out and "grid.csv" in out
    assert "within tolerance: PASS" in out and "FAIL" not in out

    record_path = runs[-1].directory / "record.json"
    record = json.loads(record_path.read_text())
    record["metrics"]["kl"] += 0.01
    record_path.write_text(json.dumps(record))
    grid = pd.read_csv(folder / "report" / "tables" / "grid.csv")
    grid.loc[0, "tuned"] += 2.0
    grid.to_csv(folder / "report" / "tables" / "grid.csv", index=False)
    assert main(["reproduce", str(folder), "--subset", "rmipo", *cache]) == 1
    out = capsys.readouterr().out
    assert "within tolerance: FAIL" in out
    run_line = next(line for line in out.splitlines() if line.lstrip().startswith(runs[-1].record["run_id"]) and " kl " in line)
    assert run_line.rstrip().endswith("FAIL")
    assert "report/grid.csv row 0" in out and "tuned" in out

    assert main(["reproduce", str(folder), "--subset", "nope", *cache]) == 2
    assert "unknown subset 'nope'; this baseline has: all, rmipo" in capsys.readouterr().err
    assert main(["reproduce", str(folder), "--set", "train.no_such_key=1", *cache]) == 2
    assert "no key 'train.no_such_key'" in capsys.readouterr().err

    # another setup (--set), judged at a looser tolerance (--atol): the re-run's kl now passes again
    assert main(["reproduce", str(folder), "--set", "hardware.torch_threads=2", "--atol", "0.5", *cache]) == 1
    out = capsys.readouterr().out
    assert "grid.csv" in out and "tuned" in out  # the doctored cell is still 2 off
    run_line = next(line for line in out.splitlines() if line.lstrip().startswith(runs[-1].record["run_id"]) and " kl " in line)
    assert run_line.rstrip().endswith("PASS")

    # a run made by other code is refused before any compute, naming the baseline folder and the commit
    record = json.loads(record_path.read_text())
    record["provenance"].update(code_fingerprint="0" * 16, git_commit="abcdef1234567890")
    record_path.write_text(json.dumps(record))
    assert main(["reproduce", str(folder), *cache]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: {runs[-1].record['run_id']}: made by other code (fingerprint 0000000000000000" in err
    assert "check out commit abcdef123456" in err


BASELINES = sorted((Path(__file__).resolve().parents[1] / "results" / "baselines").glob("*/manifest.json"))


@pytest.mark.parametrize("manifest_path", BASELINES, ids=lambda p: p.parent.name)
def test_a_committed_manifest_says_what_its_records_say(manifest_path):
    """Each part's `recorded` entry (commits, versions, hardware, seeds, counts, times) is what
    `python -m bench.baseline describe` derives from the committed records, every subset selects runs,
    and every table a reproduction compares is committed."""
    folder = manifest_path.parent
    manifest = json.loads(manifest_path.read_text())
    records = completed_records(folder)
    for name, part in manifest["parts"].items():
        assert part["recorded"] == describe(select_records(records, part["where"])), name
    assert sum(part["recorded"]["runs"] for part in manifest["parts"].values()) == len(records)
    assert manifest["default_subset"] in manifest["subsets"]
    for name in manifest["subsets"]:
        assert select_records(records, subset_filter(manifest, name)), f"subset {name} selects no run"
    for report in manifest["reports"]:
        for table in manifest["tolerances"]["report_tables"]["tables"]:
            assert (folder / report["out"] / "tables" / table).is_file(), (report["out"], table)


def test_citation_file_has_what_citation_tools_need():
    """CITATION.cff (Citation File Format 1.2.0) parses, has the required keys, and names the package's version."""
    import re

    import yaml

    root = Path(__file__).resolve().parents[1]
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "version", "date-released"} <= set(citation)
    version = re.search(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M).group(1)
    assert citation["version"] == version
    assert "results/baselines" in citation["message"]


def test_multirun_reproduce_names_what_exists(tmp_path):
    """`./multirun.sh reproduce` needs a version; an unknown one is refused naming the committed ones."""
    from helpers import MULTIRUN, run_command

    env = {"PYTHON": sys.executable}
    bare = run_command([str(MULTIRUN), "reproduce"], cwd=tmp_path, env=env, timeout=60)
    assert bare.returncode == 2 and "needs a baseline version, e.g. ./multirun.sh reproduce v1" in bare.stdout
    unknown = run_command([str(MULTIRUN), "reproduce", "v0"], cwd=tmp_path, env=env, timeout=120)
    assert unknown.returncode == 2, unknown.stdout
    assert "results/baselines/v0/manifest.json: no manifest; baselines beside it: v1" in unknown.stdout


def test_a_superseded_baseline_says_so_where_users_look(tmp_path, capsys):
    from bench.baseline import superseded_note
    assert superseded_note({}) is None
    assert superseded_note({"superseded": {"by": "v9", "why": "its prompts leaked"}}) == "superseded by v9: its prompts leaked"
    assert superseded_note({"superseded": {"why": "x"}}) == "superseded by a later baseline: x"
    # the committed v1 is superseded, and `list` opens with why
    v1 = Path(__file__).resolve().parents[1] / "results" / "baselines" / "v1"
    assert main(["list", str(v1)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("NOTE: superseded by baseline v2") and "training prompts" in first
