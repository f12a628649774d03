"""End to end on the embedded default (fast mode): every kind of method trains and writes a valid record.

Methods differ in the pipeline only by what the trainer must compute for them (`Needs`: reference
log-probs or none, a marginal from the policy or from the reference, in which context) and by whether
they carry state of their own (β-DPO's running statistics); their losses are checked by hand in
tests/test_methods.py. So CI runs one method of each kind, checks that every method is of a kind it
ran, and the run of every method is `slow`.
"""
from __future__ import annotations

import json
import math

import pytest
import yaml

from bench import records
from bench.config import ConfigError
from bench.methods import available_methods, build_method, method_info
from bench.pipeline import run
from helpers import CONF_DIR

TRL_NAMES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
# Step 0 is logged before the first update, when the policy is still the SFT model, which is also the
# reference: every Δ = 0, so the reward β(s − s_ref) of the dpo and ipo families is 0 and these losses
# are their value at Δ = 0 (docs/design.md §3; the default β = 0.1). float32 log-probs: 1e-5.
STEP0_LOSS = {"dpo": math.log(2), "cdpo": math.log(2), "robust": math.log(2), "beta_dpo": math.log(2),
              "hinge": 1.0, "ipo": (1 / (2 * 0.1)) ** 2}
GOLD_METRICS = ("gold_reward", "win_rate", "kl", "length", "no_eos_rate", "collapsed", "pref_acc")


# One method per kind of pipeline path (see pipeline_path): reference, no reference, the reference's
# marginal, the policy's marginal, a method with state, unpaired examples without and with the reference's marginal.
ONE_OF_EACH_KIND = ("dpo", "simpo", "imi_dpo", "rmipo", "beta_dpo", "kto", "imi_kto")
# What an unpaired method logs instead of TRL DPOTrainer's names (TRL KTOTrainer's), and has no pairs for.
UNPAIRED_NAMES = ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins")


def pipeline_path(name: str) -> tuple:
    """What the pipeline does differently for `method=<name>` (its conf/method YAML): its Needs, and
    whether it has state for checkpoints to carry."""
    method = build_method(yaml.safe_load((CONF_DIR / "method" / f"{name}.yaml").read_text()))
    return (method.needs.reference, method.needs.marginal, method.needs.marginal_context,
            hasattr(method, "state_dict"), method.needs.unpaired)


def test_every_method_is_of_a_kind_that_runs_in_ci():
    ran = {pipeline_path(name): name for name in ONE_OF_EACH_KIND}
    assert len(ran) == len(ONE_OF_EACH_KIND), "two of the representatives take the same path"
    for name in available_methods():
        assert pipeline_path(name) in ran, (
            f"{name} takes a pipeline path no CI run takes ({pipeline_path(name)}): add it to ONE_OF_EACH_KIND")


@pytest.mark.parametrize("method", ONE_OF_EACH_KIND)
def test_one_method_of_each_kind_writes_a_completed_record(make_config, method):
    _assert_completed_record(make_config, method)


@pytest.mark.slow
@pytest.mark.parametrize("method", available_methods())
def test_every_method_writes_a_completed_record(make_config, method):
    """Every method through the whole pipeline. In CI, test_one_method_of_each_kind_writes_a_completed_record
    runs one method of each pipeline path and test_every_method_is_of_a_kind_that_runs_in_ci checks that
    no method takes another; the losses themselves are tests/test_methods.py's."""
    _assert_completed_record(make_config, method)


def _assert_completed_record(make_config, method: str) -> None:
    result = run(make_config(f"method={method}"))
    record = records.read_record(result.directory)
    assert record["status"] == "completed", record["error"]
    assert record["schema_version"] == records.SCHEMA_VERSION
    assert record["config"]["method"]["name"] == method
    assert record["method_info"] == method_info(method), "the record says what the method is"
    # what these metrics are depends on the trained weights; only that they exist and are numbers is known
    unpaired = build_method(record["config"]["method"]).needs.unpaired
    for key in GOLD_METRICS:
        if not (unpaired and key == "pref_acc"):  # no pairs, no preference accuracy
            assert math.isfinite(record["metrics"][key]), key
    assert 0.0 <= record["metrics"]["win_rate"] <= 1.0
    threshold = record["config"]["eval"]["collapse_no_eos_rate"]
    for prefix in ("", "val/"):
        no_eos = record["metrics"][f"{prefix}no_eos_rate"]
        assert record["metrics"][f"{prefix}collapsed"] == float(no_eos >= threshold), prefix
    cost = record["cost"]
    assert cost["train_tokens"] > 0 and cost["flops"] > 0 and cost["device_hours"] > 0
    assert set(cost["shared"]) == {"sft", "dataset", "reference", "reference_samples"}
    assert record["provenance"]["seed"] == 0 and record["provenance"]["packages"]["torch"]
    history = records.read_history(result.directory)
    assert [row["step"] for row in history] == [0, 1, 2]
    for name in UNPAIRED_NAMES if unpaired else TRL_NAMES:
        assert all(math.isfinite(row[name]) for row in history if name in row), name
        assert any(name in row for row in history), name
    if method_info(method)["family"] in ("dpo", "ipo"):
        for name in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
            assert history[0][name] == pytest.approx(0.0, abs=1e-5), name
    if method in STEP0_LOSS:
        assert history[0]["loss"] == pytest.approx(STEP0_LOSS[method], abs=1e-5)
    if unpaired:  # at step 0 the policy is the reference: r = 0 and z₀ = 0, so plain KTO's loss is 1 − σ(0)
        assert history[0]["kl"] == pytest.approx(0.0, abs=1e-5) and "eval/kl" in record["metrics"]
        if method == "kto":
            assert history[0]["loss"] == pytest.approx(0.5, abs=1e-5)
        else:
            assert {"imi/signed_pmi_mean", "imi/signal_mean", "imi/corr_length"} <= set(history[0])
            assert math.isfinite(record["metrics"]["imi/corr_length"])
        return
    if method.startswith("imi_") or method == "rmipo":
        assert {"imi/delta_pmi_mean", "imi/delta_pmi_min", "imi/delta_pmi_max", "imi/signal_mean"} <= set(history[0])
        # the signal diagnostics: per logged step in the history, their run mean among the record's metrics
        for key in ("imi/corr_length", "imi/corr_margin"):
            logged = [row[key] for row in history if key in row]
            assert logged and all(-1 <= v <= 1 for v in logged), key
            assert record["metrics"][key] == pytest.approx(sum(logged) / len(logged)), key


def test_rerun_skips_completed_and_same_seed_is_deterministic(make_config, tmp_path):
    first = run(make_config("method=imi_dpo"))
    again = run(make_config("method=imi_dpo"))
    assert again.skipped and again.record["run_id"] == first.record["run_id"]
    # a fresh runs folder forces a recomputation: CPU results must be identical
    fresh = run(make_config("method=imi_dpo", f"paths.runs_root={tmp_path / 'other'}"))
    assert not fresh.skipped
    assert fresh.record["metrics"] == first.record["metrics"]


def test_nonfinite_loss_fails_the_run_with_step_and_stats(make_config):
    result = run(make_config("method=dpo", "train.lr=1e12", "train.max_steps=5"))
    record = records.read_record(result.directory)
    assert record["status"] == "failed"
    assert "NonFiniteLossError" in record["error"] and "at step" in record["error"]
    # a failed run is redone, not skipped, when launched again
    assert not run(make_config("method=dpo", "train.lr=1e12", "train.max_steps=5")).skipped


@pytest.mark.parametrize(
    "override, key",
    [
        ("method.beta=-1", "method.beta"),
        ("method=nope", None),
        ("train.lr=0", "train.lr"),
        ("dataset.on_bad_row=ignore", "dataset.on_bad_row"),
        ("dataset.task=chess", "dataset.task"),
    ],
)
def test_config_errors_name_the_key_before_any_compute(make_config, tmp_path, override, key):
    if key is None:  # an unknown group option is Hydra's own error, also before any compute
        with pytest.raises(Exception, match="nope"):
            make_config(override)
        return
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(make_config(override))
    assert not (tmp_path / "runs").exists()


def test_record_is_plain_json_and_a_secret_in_the_config_is_refused(make_config, tmp_path):
    text = (run(make_config("method=simpo")).directory / records.RECORD_FILE).read_text()
    json.loads(text)
    # A secret-looking key is refused before anything is written (bench.preflight): no record to redact.
    from bench.config import ConfigError

    with pytest.raises(ConfigError, match="dataset.hf_token: a secret-looking config key is refused"):
        run(make_config("method=simpo", "+dataset.hf_token=hf_SECRET", "sweep_id=secret"))
    assert not (tmp_path / "runs" / "secret").exists()


def test_built_in_datasets_are_deterministic_given_the_seed(make_config, tmp_path, shared_cache):
    """Two independent builds (separate caches: SFT, sampling, labelling) give byte-identical pairs: one in
    the session's cache (built there by whichever test or worker needed it first), one in a fresh cache."""
    builds = []
    for name, cache in (("shared", shared_cache), ("fresh", tmp_path / "fresh")):
        result = run(make_config("dataset=verbosity", f"paths.cache_root={cache}", f"paths.runs_root={tmp_path / name}"))
        assert not result.skipped
        key = result.record["cost"]["shared"]["dataset"]["key"]
        builds.append((key, (cache / "dataset" / key / "train.jsonl").read_bytes()))
    assert not result.record["cost"]["shared"]["dataset"]["hit"], "the second build must not come from a cache"
    assert builds[0][0] == builds[1][0]
    assert builds[0][1] == builds[1][1]
    # one line per labelled pair: every sampled pair is labelled or dropped as identical or tied
    train = result.record["data"]["source"]["train"]
    assert train["n_pairs"] == result.record["config"]["dataset"]["n_train_prompts"]  # one pair per prompt
    assert train["n_pairs"] == train["n_labelled"] + train["n_identical_dropped"] + train["n_ties_dropped"]
    assert builds[0][1].count(b"\n") == train["n_labelled"] > 0
