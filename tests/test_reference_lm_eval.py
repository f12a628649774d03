"""The reference model's lm-eval scores beside every run's (docs/design.md §7): the same items, scored once per
seed in the shared cache, so the analysis can give lm-eval's change after training with a paired interval."""
from __future__ import annotations

import pytest

from bench import records
from bench.pipeline import run

LM_EVAL = ("eval.lm_eval.enabled=true", "eval.lm_eval.n_items=8", "eval.lm_eval.batch_size=8")
ACC = "lm_eval/imibench_sentiment/acc"  # the test configs' dataset


def test_reference_scores_are_the_untrained_policys_and_shared_across_methods(make_config):
    # lr 1e-12: the policy does not leave the reference (lr 0 is refused), so its accuracies equal the reference's
    still = records.read_record(run(make_config(*LM_EVAL, "method=dpo", "train.lr=1e-12")).directory)
    assert still["status"] == "completed", still["error"]
    metrics = still["metrics"]
    scored = [k for k in metrics if k.startswith("lm_eval/")]
    assert ACC in scored and all(metrics[f"reference_{k}"] == metrics[k] for k in scored)
    # another method at the same seed reads the same entry; a trained policy may score differently
    trained = records.read_record(run(make_config(*LM_EVAL, "method=ipo")).directory)
    assert trained["status"] == "completed", trained["error"]
    shared = trained["cost"]["shared"]["reference_lm_eval"]
    assert (shared["hit"], shared["key"]) == (True, still["cost"]["shared"]["reference_lm_eval"]["key"])
    assert trained["metrics"][f"reference_{ACC}"] == metrics[ACC]
    # a different seed draws other items: another entry
    other = records.read_record(run(make_config(*LM_EVAL, "method=dpo", "seed=1")).directory)
    assert other["cost"]["shared"]["reference_lm_eval"]["key"] != shared["key"]


def test_without_lm_eval_there_is_no_reference_entry(make_config):
    record = records.read_record(run(make_config("method=dpo")).directory)
    assert "reference_lm_eval" not in record["cost"]["shared"]
    assert not any(k.startswith("reference_lm_eval/") for k in record["metrics"])


@pytest.mark.parametrize("key", ["hit", "key"])
def test_the_shared_entry_is_described_like_the_others(make_config, key):
    record = records.read_record(run(make_config(*LM_EVAL, "method=dpo")).directory)
    assert key in record["cost"]["shared"]["reference_lm_eval"]
