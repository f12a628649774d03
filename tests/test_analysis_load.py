"""Loading run records (analysis.load, analysis.wandb_runs): the tidy frame (schema 2 with validation
metrics and the validation curve kept whole; schema 1 still read), runs skipped with their reasons,
and the W&B adapter's conversion, on records fabricated with bench's own record writer."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from analysis.load import (curve_frame, find_run_dirs, load_runs, read_history, record_to_row,
                           records_to_frame)
from analysis.wandb_runs import load_wandb_runs, wandb_run_to_record

_spec = importlib.util.spec_from_file_location("analysis_fabricate", Path(__file__).parent / "fixtures/analysis/fabricate.py")
fabricate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fabricate)

SMALL = {"dpo": (0.1, 1.0), "rmipo": (2.0,)}


@pytest.fixture
def sweep(tmp_path):
    counts = fabricate.write_sweep(tmp_path, datasets=("arithmetic",), seeds=(0, 1), grids=SMALL)
    return tmp_path, counts


def test_tidy_frame_has_one_row_per_completed_run_with_flat_columns(sweep):
    root, counts = sweep
    loaded = load_runs(root)
    runs = loaded.runs
    assert len(runs) == counts["completed"] == 6
    for column in ("run_id", "sweep_id", "config_hash", "run_dir", "method.name", "method.beta", "dataset.name",
                   "model.name", "hardware.name", "seed", "train.lr", "gold_reward", "kl", "collapsed",
                   "lm_eval/arith_mc/acc,none", "cost.device_hours", "cost.flops", "cost.shared.sft.key",
                   "cost.shared.sft.hit", "cost.shared.reference.wall_s", "provenance.git_commit",
                   "val/gold_reward", "reference_gold_reward", "val/reference_gold_reward", "val/win_rate",
                   "cost.wait_s", "dataset.trap", "budget", "method_info.imi", "method_info.defaults.beta",
                   "method_info.family", "schema_version", "val_curve"):
        assert column in runs.columns, column
    assert set(runs["schema_version"]) == {2} and runs["val/gold_reward"].dtype.kind == "f"
    assert "val/gold_reward" in loaded.metric_columns and "dataset.trap" in loaded.config_columns
    assert set(runs["method.name"]) == {"dpo", "rmipo"}
    assert sorted(runs.loc[runs["method.name"] == "dpo", "method.beta"].unique()) == [0.1, 1.0]
    assert runs["gold_reward"].dtype.kind == "f"
    assert "gold_reward" in loaded.metric_columns and "method.beta" in loaded.config_columns
    assert "cost.flops" not in loaded.config_columns


def test_the_validation_curve_stays_one_structured_column(sweep):
    root, _ = sweep
    runs = load_runs(root).runs
    curve = runs.iloc[0]["val_curve"]
    assert isinstance(curve, list) and [p["fraction"] for p in curve] == [0.25, 0.5, 0.75, 1.0]
    assert {"step", "n_prompts", "val/gold_reward", "flops", "device_hours", "train_s"} <= set(curve[0])
    assert curve[0]["flops"] < curve[-1]["flops"]                            # cumulative
    assert not any(c.startswith("val_curve.") for c in runs.columns)        # not flattened into noise
    long = curve_frame(runs)
    assert len(long) == 4 * len(runs) and set(long["run"]) == set(runs.index)
    assert long.loc[long["run"] == runs.index[0], "val/gold_reward"].tolist() == [p["val/gold_reward"] for p in curve]


def test_older_records_without_validation_data_still_load(tmp_path):
    fabricate.write_sweep(tmp_path, datasets=("arithmetic",), seeds=(0, 1), grids=SMALL, schema=1, failures=False)
    runs = load_runs(tmp_path).runs
    assert len(runs) == 6 and set(runs["schema_version"]) == {1}
    assert "val/gold_reward" not in runs.columns and "method_info.imi" not in runs.columns
    assert all(c == [] for c in runs["val_curve"]) and curve_frame(runs).empty
    assert "reference_gold_reward" in runs.columns  # schema 1 records already carried the SFT level


def test_a_malformed_validation_curve_names_the_field(tmp_path):
    good = fabricate.write_run(tmp_path, "s", "dpo", "arithmetic", "cpu", 0.1, 0, dict.fromkeys(("sft", "dataset", "reference"), True),
                               fabricate.np.random.default_rng(0))
    record = json.loads((good / "record.json").read_text())
    for name, curve in {"no-fraction": [{"val/gold_reward": 0.1}], "not-a-list": {"fraction": 1.0},
                        "text": [{"fraction": 0.5, "flops": "many"}]}.items():
        (tmp_path / "s" / name).mkdir()
        (tmp_path / "s" / name / "record.json").write_text(json.dumps({**record, "val_curve": curve, "config_hash": name,
                                                                        "run_id": name}))
    skipped = load_runs(tmp_path).skipped.set_index("run_id")
    assert "val_curve[0].fraction" in skipped.loc["no-fraction", "reason"]
    assert "'val_curve' is not a list" in skipped.loc["not-a-list", "reason"]
    assert "val_curve[0].flops" in skipped.loc["text", "reason"]


def test_failed_killed_and_broken_runs_are_skipped_with_reasons(sweep):
    root, _ = sweep
    loaded = load_runs(root)
    assert loaded.skip_counts() == {"failed": 1, "incomplete": 1, "unreadable": 1}
    reasons = loaded.skipped.set_index("run_id")["reason"]
    assert "NonFiniteLossError" in reasons["dpo-failed"] and "step 17" in reasons["dpo-failed"]
    assert "no record.json" in reasons["dpo-killed"]
    assert "dpo-broken/record.json" in reasons["dpo-broken"] and "JSON" in reasons["dpo-broken"]
    failed = loaded.skipped.set_index("run_id").loc["dpo-failed"]
    assert failed["method.name"] == "dpo" and failed["method.beta"] == 10.0  # identity kept for the runs table
    assert "6 completed runs loaded; 3 skipped (1 failed, 1 incomplete, 1 unreadable)" == loaded.skip_summary()


def test_malformed_and_unsupported_records_name_the_file_and_field(tmp_path):
    good = fabricate.write_run(tmp_path, "s", "dpo", "arithmetic", "cpu", 0.1, 0, dict.fromkeys(("sft", "dataset", "reference"), True),
                               fabricate.np.random.default_rng(0))
    record = json.loads((good / "record.json").read_text())
    variants = {
        "no-method": {**record, "config": {**record["config"], "method": {"beta": 0.1}}},
        "bad-metric": {**record, "metrics": {**record["metrics"], "gold_reward": "high"}},
        "future": {**record, "schema_version": 99},
        "running": {**record, "status": "running"},
    }
    for name, variant in variants.items():
        (tmp_path / "s" / name).mkdir()
        (tmp_path / "s" / name / "record.json").write_text(json.dumps({**variant, "run_id": name, "config_hash": name}))
    loaded = load_runs(tmp_path)
    assert list(loaded.runs["run_id"]) == [good.name]
    skipped = loaded.skipped.set_index("run_id")
    assert skipped.loc["no-method", "skip"] == "malformed"
    assert "config.method.name" in skipped.loc["no-method", "reason"] and "no-method/record.json" in skipped.loc["no-method", "reason"]
    assert skipped.loc["bad-metric", "skip"] == "malformed" and "metrics.gold_reward" in skipped.loc["bad-metric", "reason"]
    assert skipped.loc["future", "skip"] == "unsupported" and "99" in skipped.loc["future", "reason"]
    assert skipped.loc["running", "skip"] == "incomplete"



@pytest.mark.parametrize("field", ["metrics", "cost", "method_info", "data"])
def test_an_object_field_that_is_not_an_object_is_named(field):
    record = {"config": {"method": {"name": "dpo"}, "dataset": {"name": "arithmetic"}}, "metrics": {"gold_reward": 1.0}}
    row, _, _ = record_to_row({**record, field: None}, "r.json")  # absent or empty: nothing to flatten
    assert row["method.name"] == "dpo"
    with pytest.raises(ValueError, match=f"^r.json: field '{field}' is not an object$"):
        record_to_row({**record, field: [1]}, "r.json")

def test_the_same_run_in_two_sweeps_is_counted_once(sweep):
    root, _ = sweep
    original = root / "sweep-a" / "dpo-arithmetic-cpu-b0.1-s0"
    copy = root / "sweep-b" / original.name
    shutil.copytree(original, copy)
    record = json.loads((copy / "record.json").read_text())
    record["provenance"]["finished_at"] = "2026-11-28T00:00:00Z"  # the re-run finished later: it is kept
    (copy / "record.json").write_text(json.dumps(record))
    loaded = load_runs(root)
    assert len(loaded.runs) == 6
    kept = loaded.runs[loaded.runs["run_id"] == original.name]
    assert list(kept["run_dir"]) == [str(copy)]
    duplicate = loaded.skipped[loaded.skipped["skip"] == "duplicate"].iloc[0]
    assert duplicate["run_dir"] == str(original) and record["config_hash"] in duplicate["reason"]


def test_a_sweep_folder_or_a_single_run_folder_can_be_loaded(sweep):
    root, _ = sweep
    assert len(load_runs(root / "sweep-a").runs) == 6
    one = load_runs(root / "sweep-a" / "rmipo-arithmetic-cpu-b2-s1")
    assert list(one.runs["run_id"]) == ["rmipo-arithmetic-cpu-b2-s1"] and one.skipped.empty


def test_folders_without_run_artifacts_are_not_runs(sweep):
    root, _ = sweep
    (root / "sweep-a" / "report" / "tables").mkdir(parents=True)      # an analysis output folder
    (root / "sweep-a" / "report" / "report.md").write_text("# report")
    (root / ".cache" / "sft" / "abc").mkdir(parents=True)               # hidden caches
    dirs = {d.name for d in find_run_dirs(root)}
    assert "report" not in dirs and "abc" not in dirs
    assert len(dirs) == 6 + 3


def test_missing_runs_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_runs(tmp_path / "nowhere")


def test_empty_runs_folder_loads_nothing(tmp_path):
    loaded = load_runs(tmp_path)
    assert loaded.runs.empty and loaded.skipped.empty
    assert {"method.name", "dataset.name", "method.beta", "seed"} <= set(loaded.runs.columns)


def test_read_history(sweep):
    root, _ = sweep
    history = read_history(root / "sweep-a" / "rmipo-arithmetic-cpu-b2-s0")
    assert len(history) == 40 and {"step", "loss", "imi/delta_pmi_mean", "imi/effective_margin_mean"} <= set(history.columns)
    bad = root / "sweep-a" / "dpo-killed" / "history.jsonl"
    bad.write_text(bad.read_text() + "{not json\n")
    with pytest.raises(ValueError, match="line 4"):
        read_history(bad.parent)


def test_wandb_runs_convert_to_the_same_columns_as_records(sweep):
    """A W&B run as bench's logger leaves it (final metrics at the top of the summary, cost under
    "cost/<key>", last values of per-step keys, W&B's own "_" keys) gives the record's row."""
    root, _ = sweep
    directory = root / "sweep-a" / "rmipo-arithmetic-cpu-b2-s0"
    record = json.loads((directory / "record.json").read_text())
    summary = {**record["metrics"], **{f"cost/{k}": v for k, v in record["cost"].items()},
               "loss": 0.3, "lr": 1e-4, "rewards/chosen": -0.1, "imi/delta_pmi_mean": 0.8, "_step": 39, "_runtime": 20.0,
               "method_info": record["method_info"]}
    converted = wandb_run_to_record(record["run_id"], record["sweep_id"], "finished", record["config"], summary)
    assert converted["status"] == "completed" and converted["metrics"] == record["metrics"]  # val/* kept
    assert converted["method_info"] == record["method_info"]  # bench's W&B logger keeps it in the summary
    assert converted["cost"] == record["cost"]
    from_wandb = records_to_frame([(None, converted, None)], source="wandb:me/proj").runs.iloc[0]
    from_file = load_runs(directory).runs.iloc[0]
    for column in ("method.name", "method.beta", "method_info.imi", "dataset.name", "seed", "gold_reward", "kl", "cost.device_hours",
                   "cost.shared.sft.key", "cost.nograd_tokens/reference"):
        assert from_wandb[column] == from_file[column], column
    assert from_wandb["sweep_id"] == "sweep-a" and from_wandb["source"] == "wandb:me/proj"
    # flat "/"-separated config keys are nested back, and a crashed run is skipped as failed
    flat_config = {"method/name": "dpo", "method/beta": 0.1, "dataset/name": "arithmetic", "seed": 0}
    crashed = wandb_run_to_record("x1", "g", "crashed", flat_config, {"gold_reward": 0.1})
    loaded = records_to_frame([(None, crashed, None)], source="wandb:me/proj")
    assert loaded.runs.empty and loaded.skip_counts() == {"failed": 1}
    assert "crashed" in loaded.skipped.iloc[0]["reason"] and loaded.skipped.iloc[0]["method.beta"] == 0.1


def test_load_wandb_runs_reads_real_wandb_run_objects(sweep):
    """wandb's public `Run` built offline from the attributes its API returns (config as
    {"key": {"value": ...}} JSON, summaryMetrics JSON): the adapter reads id, group, state, config and
    summary_metrics from it. Only the network call behind `Api().runs` is not exercised here."""
    from wandb.apis.public.runs import Run

    root, _ = sweep
    record = json.loads((root / "sweep-a" / "dpo-arithmetic-cpu-b1-s1" / "record.json").read_text())
    summary = {**record["metrics"], **{f"cost/{k}": v for k, v in record["cost"].items()}, "loss": 0.2, "_step": 39}
    attrs = {"name": "w1", "displayName": record["run_id"], "state": "finished", "group": "sweep-a", "jobType": "dpo",
             "tags": [], "config": json.dumps({k: {"value": v, "desc": None} for k, v in record["config"].items()}),
             "summaryMetrics": json.dumps(summary)}
    failed = {**attrs, "name": "w2", "state": "failed"}

    class OfflineApi:  # stands in for the network only; the Run objects are wandb's own
        def runs(self, path, filters=None):
            assert path == "me/proj" and filters == {"group": "sweep-a"}
            return [Run(None, "me", "proj", a["name"], attrs=a) for a in (attrs, failed)]

    loaded = load_wandb_runs("me/proj", {"group": "sweep-a"}, api=OfflineApi())
    assert loaded.skip_counts() == {"failed": 1}
    row = loaded.runs.iloc[0]
    assert row["run_id"] == record["run_id"] and row["provenance.wandb_id"] == "w1"
    assert row["sweep_id"] == "sweep-a" and row["run_dir"] is None
    assert row["method.beta"] == 1.0 and row["gold_reward"] == record["metrics"]["gold_reward"]
    assert row["cost.shared.sft.key"] == record["cost"]["shared"]["sft"]["key"] and "loss" not in loaded.runs
