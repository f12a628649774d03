"""logger=wandb through the real pipeline (docs/design.md §10): an offline W&B run, read back with W&B's own reader
(`wandb leet inspect`, tests/wandb_runs.py), says what the run record says.

The run record (record.json + history.jsonl) is the source of truth; the W&B run must carry the same
resolved config, the same per-step history, and the final metrics and cost as its summary, grouped by
sweep id with the method as job type. No network and no key: W&B is offline and every directory it
might write to is inside tmp_path.
"""
from __future__ import annotations

import math
import os

import pytest
import wandb

from bench import records
from bench.loggers import COST_PREFIX
from bench.pipeline import run
from wandb_runs import read_offline_run


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """Offline W&B, no key, every W&B and home directory inside tmp_path, a fresh wandb-core."""
    for var in list(os.environ):
        if var.startswith("WANDB_"):
            monkeypatch.delenv(var)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    wandb.teardown()  # a wandb-core started by another test would keep that test's environment
    yield tmp_path
    wandb.teardown()


def _same(a, b) -> bool:
    """Equal as JSON values, floats to 1e-12 relative (W&B stores float64, as the records do)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, bool) or isinstance(b, bool):
            return a == b
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b


@pytest.fixture
def imi_run(make_config, offline_wandb):
    """An imi_dpo run logged to offline W&B: (record, history.jsonl rows, the W&B run read back)."""
    result = run(make_config("method=imi_dpo", "logger=wandb", "logger.tags=[sweeps-test]", "sweep_id=wandb-test"))
    record = records.read_record(result.directory)
    assert record["status"] == "completed", record["error"]
    return record, records.read_history(result.directory), read_offline_run(result.directory)


@pytest.fixture
def failed_run(make_config, offline_wandb):
    """A DPO run whose loss goes non-finite (lr 1e12), logged to offline W&B: (record, history, W&B run)."""
    result = run(make_config("method=dpo", "logger=wandb", "train.lr=1e12", "train.max_steps=5"))
    record = records.read_record(result.directory)
    assert record["status"] == "failed" and "NonFiniteLossError" in record["error"]
    return record, records.read_history(result.directory), read_offline_run(result.directory)


def test_wandb_run_has_the_records_config_identity_and_summary(imi_run):
    record, history, logged = imi_run
    assert logged["run"]["exit_code"] == 0
    assert logged["run"]["group"] == "wandb-test" == record["sweep_id"]
    assert logged["run"]["job_type"] == "imi_dpo" and logged["run"]["name"] == record["run_id"]
    assert logged["run"]["project"] == "imi-bench" and logged["run"]["tags"] == ["sweeps-test"]
    assert _same(logged["config"], record["config"]), "W&B config differs from the record's resolved config"

    summary = logged["summary"]
    for key, value in record["metrics"].items():
        assert _same(summary[key], value), key
    for key, value in record["cost"].items():
        assert _same(summary[COST_PREFIX + key], value), key
    # nothing in the summary that the record does not have: final metrics, cost, last per-step values
    assert summary["method_info"] == record["method_info"]  # what the analysis reads from W&B runs too
    per_step = {key for row in history for key in row}
    unexplained = {k for k in summary if k not in record["metrics"] and not k.startswith(COST_PREFIX)
                   and k not in per_step and k != "method_info"}
    assert not unexplained, unexplained


# Known gap, closed by the patch to bench/trainer.py in the sweeps report: the trainer adds
# train_tokens_per_s to the last history row after logging the row, so W&B's last row lacks it. Remove
# the marker with the patch (strict: this test fails once the gap is closed and the marker stays).
def test_wandb_history_is_history_jsonl(imi_run):
    _, history, logged = imi_run
    assert len(logged["history"]) == len(history) == 3  # budget=fast: 3 optimizer steps
    assert any(key.startswith("imi/delta_pmi") for key in history[0]), "the IMI traces reach both"
    for wandb_row, record_row in zip(logged["history"], history):
        assert _same(wandb_row, record_row), (sorted(set(wandb_row) ^ set(record_row)), wandb_row["step"])


def test_failed_run_is_a_failed_wandb_run_with_the_same_config_and_cost(failed_run):
    record, _, logged = failed_run
    assert logged["run"]["exit_code"] == 1
    assert _same(logged["config"], record["config"])
    cost = {k[len(COST_PREFIX):]: v for k, v in logged["summary"].items() if k.startswith(COST_PREFIX)}
    assert _same(cost, record["cost"])


# Known gap, closed by the patch to bench/trainer.py + bench/pipeline.py in the sweeps report: a failed
# run's history.jsonl is empty although W&B got the steps before the failure. Remove with the patch.
def test_failed_run_keeps_the_steps_before_the_failure_in_both(failed_run):
    _, history, logged = failed_run
    assert history, "history.jsonl holds the steps before the non-finite loss"
    assert len(logged["history"]) == len(history)
    for wandb_row, record_row in zip(logged["history"], history):
        assert _same(wandb_row, record_row)
