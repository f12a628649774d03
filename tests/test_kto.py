"""KTO and IMI-KTO (docs/design.md §3, §4) against hand-computed values, and the unpaired data path: pairs split
into examples, the desirable fraction, the blocks and their KL sequences, and the refusals that name the key."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from bench.data.examples import encode_examples
from bench.data.unpaired import keep_desirable_fraction, label_counts, pairs_to_examples
from bench.methods import ExampleLogps, build_method
from bench.methods.kto import check_imbalance
from helpers import CONF_DIR, word_tokenizer


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def method(name: str, **overrides):
    return build_method({**yaml.safe_load((CONF_DIR / "method" / f"{name}.yaml").read_text()), **overrides})


# Four examples: two desirable, two undesirable. r = s − s_ref = [0.5, −0.5, 0.5, −1.0]; on the KL sequences
# s − s_ref = [0.5, 0.2, 0.1, −0.1], mean 0.175 = z₀.
S, REF = [-2.0, -3.0, -1.0, -4.0], [-2.5, -2.5, -1.5, -3.0]
KL, REF_KL = [-5.0, -6.0, -4.0, -7.0], [-5.5, -6.2, -4.1, -6.9]
LABELS = [True, True, False, False]
LENGTHS = [2.0, 4.0, 5.0, 1.0]
R, Z0 = [0.5, -0.5, 0.5, -1.0], 0.175


def hand_batch(kl=KL, marginal=None, step=0) -> ExampleLogps:
    return ExampleLogps(t(S), t(LENGTHS), torch.tensor(LABELS), reference_logps=t(REF), kl_logps=t(kl),
                        reference_kl_logps=t(REF_KL), marginal_logps=None if marginal is None else t(marginal), step=step)


def test_the_hand_numbers_are_what_the_comments_say():
    assert [s - r for s, r in zip(S, REF)] == pytest.approx(R)
    assert sum(k - r for k, r in zip(KL, REF_KL)) / 4 == pytest.approx(Z0)


@pytest.mark.parametrize("beta, weights", [(0.1, (1.0, 1.0)), (0.5, (2.0, 1.5))])
def test_kto_loss_by_hand(beta, weights):
    out = method("kto", beta=beta, desirable_weight=weights[0], undesirable_weight=weights[1])(hand_batch())
    expected = [weights[0] * (1 - sigmoid(beta * (R[0] - Z0))), weights[0] * (1 - sigmoid(beta * (R[1] - Z0))),
                weights[1] * (1 - sigmoid(beta * (Z0 - R[2]))), weights[1] * (1 - sigmoid(beta * (Z0 - R[3])))]
    torch.testing.assert_close(out.losses, t(expected), atol=1e-12, rtol=0)
    assert out.metrics["kl"] == pytest.approx(Z0)
    assert out.metrics["rewards/chosen"] == pytest.approx(beta * (R[0] + R[1]) / 2)
    assert out.metrics["rewards/rejected"] == pytest.approx(beta * (R[2] + R[3]) / 2)
    assert out.metrics["rewards/margins"] == pytest.approx(beta * ((R[0] + R[1]) / 2 - (R[2] + R[3]) / 2))
    assert out.metrics["logps/chosen"] == pytest.approx(-2.5) and out.metrics["logps/rejected"] == pytest.approx(-2.5)


def test_the_reference_point_is_clamped_at_zero_and_detached():
    # KL sequences the policy finds less likely than the reference: the estimate is negative, z₀ = 0
    out = method("kto")(hand_batch(kl=[-6.0, -7.0, -5.0, -8.0]))
    assert out.metrics["kl"] == 0.0
    torch.testing.assert_close(out.losses[0], t(1 - sigmoid(0.1 * R[0])))
    logps, kl = t(S).requires_grad_(), t(KL).requires_grad_()
    batch = ExampleLogps(logps, t(LENGTHS), torch.tensor(LABELS), t(REF), kl, t(REF_KL))
    method("kto")(batch).losses.sum().backward()
    assert kl.grad is None and logps.grad is not None


def test_a_batch_of_one_label_leaves_the_other_rewards_out():
    batch = ExampleLogps(t(S[:2]), t(LENGTHS[:2]), torch.tensor([True, True]), t(REF[:2]), t(KL[:2]), t(REF_KL[:2]))
    metrics = method("kto")(batch).metrics
    assert "rewards/chosen" in metrics and "rewards/rejected" not in metrics and "rewards/margins" not in metrics


# IMI-KTO: PMI from the reference. ā_ref = REF / |y|; with marginal sums M, ā(y | ∅) = M / |y|.
MARGINAL = [-4.0, -4.0, -10.0, -2.0]
PMI = [(r - m) / n for r, m, n in zip(REF, MARGINAL, LENGTHS)]  # [0.75, 0.375, 1.7, −1.0]
SIGNED = [+(PMI[0] - sum(PMI) / 4), +(PMI[1] - sum(PMI) / 4), -(PMI[2] - sum(PMI) / 4), -(PMI[3] - sum(PMI) / 4)]


def g_of(u: float) -> float:
    return 0.3 + 1.3 * math.exp(-max(0.0, u))


def test_imi_kto_margin_beta_and_weight_regulators_by_hand():
    assert PMI == pytest.approx([0.75, 0.375, 1.7, -1.0])
    signed_gap = [R[0] - Z0, R[1] - Z0, Z0 - R[2], Z0 - R[3]]
    g = [g_of(u) for u in SIGNED]
    out = method("imi_kto")(hand_batch(marginal=MARGINAL))
    torch.testing.assert_close(out.losses, t([1 - sigmoid(0.1 * (x - gi)) for x, gi in zip(signed_gap, g)]),
                               atol=1e-12, rtol=0)
    assert out.metrics["imi/signed_pmi_mean"] == pytest.approx(sum(SIGNED) / 4)
    beta = method("imi_kto", regulator="beta")(hand_batch(marginal=MARGINAL))
    torch.testing.assert_close(beta.losses, t([1 - sigmoid(0.1 * gi * x) for x, gi in zip(signed_gap, g)]),
                               atol=1e-12, rtol=0)
    weight = method("imi_kto", regulator="weight")(hand_batch(marginal=MARGINAL))
    mean_g = sum(g) / 4
    torch.testing.assert_close(weight.losses, t([gi / mean_g * (1 - sigmoid(0.1 * x)) for x, gi in zip(signed_gap, g)]),
                               atol=1e-12, rtol=0)


def test_imi_kto_regulates_down_what_the_model_already_does():
    """The undesirable example with the highest PMI (example 2) is the least learned: its signed signal is
    the lowest, so it gets the largest margin; the desirable one with the highest PMI gets the smallest."""
    out = method("imi_kto")(hand_batch(marginal=MARGINAL))
    assert min(SIGNED) == SIGNED[2] and out.metrics["imi/effective_margin_max"] == pytest.approx(g_of(SIGNED[2]))
    assert max(SIGNED) == SIGNED[3] and out.metrics["imi/effective_margin_min"] == pytest.approx(g_of(SIGNED[3]))


# --- the unpaired data path ---------------------------------------------------------------------------------

PAIRS = [{"prompt": f"p{i}", "chosen": f"good{i} a", "rejected": f"bad{i}", "meta": {"row": i}} for i in range(6)]


def test_pairs_split_into_a_desirable_and_an_undesirable_example_each():
    examples = pairs_to_examples(PAIRS)
    assert [(e["completion"], e["label"]) for e in examples[:2]] == [("good0 a", True), ("bad0", False)]
    assert examples[3]["meta"] == {"row": 1, "pair": 1, "side": "rejected"}
    assert label_counts(examples) == (6, 6)


def test_the_desirable_fraction_keeps_every_undesirable_and_a_seeded_share_of_desirables():
    examples = pairs_to_examples(PAIRS * 5)  # 30 pairs
    kept, stats = keep_desirable_fraction(examples, 0.2, seed=3)
    assert stats == {"n_desirable": 6, "n_undesirable": 30, "dropped_desirable": 24}
    assert kept == keep_desirable_fraction(examples, 0.2, seed=3)[0]  # the seed decides
    assert kept != keep_desirable_fraction(examples, 0.2, seed=4)[0]
    assert [e for e in kept if not e["label"]] == [e for e in examples if not e["label"]]
    with pytest.raises(ValueError, match=r"unpaired\.desirable_fraction must be in \(0, 1\]"):
        keep_desirable_fraction(examples, 0.0, seed=0)


def test_examples_come_in_blocks_whose_kl_sequences_rotate_the_completions():
    examples = pairs_to_examples(PAIRS)  # 12 examples
    words = [w for e in examples for w in (e["prompt"] + " " + e["completion"]).split()]
    tokenizer = word_tokenizer(words)
    tensors, kept, stats = encode_examples(examples, tokenizer, 16, "fixture", block_size=5, seed=0)
    assert len(tensors) == 10 and tensors.n_blocks == 2 and stats["dropped"]["incomplete_block"] == 2
    assert stats["n_desirable"] + stats["n_undesirable"] == 10 == len(kept)
    decode = lambda ids, mask: tokenizer.decode(ids[mask.bool()])  # noqa: E731
    for block in range(2):
        rows = tensors.block_rows(torch.tensor([block])).tolist()
        assert rows == list(range(5 * block, 5 * block + 5))
        for position, row in enumerate(rows):
            previous = rows[position - 1]  # the first takes the block's last
            completion = decode(tensors.completions.input_ids[previous], tensors.completions.response_mask[previous])
            kl = decode(tensors.kl.input_ids[row], tensors.kl.response_mask[row])
            assert kl == completion, (block, position)
            # the KL sequence keeps the example's own prompt
            prompt = tokenizer.decode(tensors.completions.input_ids[row][:2])
            assert tokenizer.decode(tensors.kl.input_ids[row][:2]) == prompt
    # one block of everything for evaluation
    held_out, _, _ = encode_examples(examples, tokenizer, 16, "fixture", block_size=None, seed=0)
    assert held_out.n_blocks == 1 and len(held_out) == 12


def test_a_block_must_hold_two_examples():
    tokenizer = word_tokenizer(["p", "a"])
    with pytest.raises(ValueError, match="at least 2 examples"):
        encode_examples([{"prompt": "p", "completion": "a", "label": True}], tokenizer, 8, "x", block_size=None, seed=0)


def test_the_imbalance_rule_names_the_keys_and_the_weights_that_fit():
    check_imbalance(1.0, 1.0, 50, 50, "data")
    check_imbalance(10.0, 1.0, 10, 100, "data")  # 10·10 / 100 = 1
    with pytest.raises(ValueError, match=r"method\.desirable_weight in \[10, 13\.3\]"):
        check_imbalance(1.0, 1.0, 10, 100, "data")
    with pytest.raises(ValueError, match="needs desirable and undesirable examples"):
        check_imbalance(1.0, 1.0, 0, 100, "data")


@pytest.mark.parametrize("config", [{"name": "kto"}] + [
    {"name": "imi_kto", "regulator": regulator, "pmi_source": source, "warmup_steps": 2}
    for regulator in ("margin", "beta", "weight") for source in ("policy", "reference")], ids=str)
def test_gradient_reaches_only_the_completions_log_probs_and_metrics_are_floats(config):
    name = config.pop("name")
    batch = hand_batch(marginal=MARGINAL, step=1)
    frozen = [batch.reference_logps, batch.kl_logps, batch.reference_kl_logps, batch.marginal_logps, batch.token_counts]
    for tensor in [batch.logps, *frozen]:
        tensor.requires_grad_(True)
    out = method(name, **config)(batch)
    out.losses.sum().backward()
    assert batch.logps.grad is not None and batch.logps.grad.abs().sum() > 0
    assert all(tensor.grad is None for tensor in frozen)
    assert {"kl", "rewards/chosen", "rewards/rejected", "rewards/margins"} <= set(out.metrics)
    assert all(type(v) is float for v in out.metrics.values()), out.metrics


# --- end to end on an unpaired file -------------------------------------------------------------------------

def _unpaired_file_config(make_config, tmp_path, method_name: str, *extra: str):
    """A tiny HF model and an unpaired JSONL in TRL's KTO schema (16 train rows, 8 desirable; 4 held out)."""
    import json

    from helpers import tiny_llama
    tokenizer = word_tokenizer(["a", "b", "c", "d", "e"])
    model_dir = tmp_path / "model"
    tiny_llama(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    prompts = ["a b", "b a", "a a", "b b", "a c", "c a", "b c", "c b"]
    train = [{"prompt": p, "completion": c, "label": c == "d"} for p in prompts for c in ("d", "e")]
    held_out = [{"prompt": p, "completion": c, "label": c == "d"} for p in ("c c", "a d") for c in ("d", "e")]
    for name, rows in (("train", train), ("test", held_out)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return make_config(f"method={method_name}", "dataset=local_file", "dataset.feedback=unpaired", "model=hf",
                       f"model.pretrained={model_dir}", "sft.steps=0", f"dataset.data_files.train={tmp_path / 'train.jsonl'}",
                       f"dataset.data_files.test={tmp_path / 'test.jsonl'}", *extra)


@pytest.mark.parametrize("method_name", ["kto", "imi_kto"])
def test_kto_and_imi_kto_train_on_an_unpaired_file(make_config, tmp_path, method_name):
    from bench.pipeline import run

    record = run(_unpaired_file_config(make_config, tmp_path, method_name)).record
    assert record["status"] == "completed", record["error"]
    encoding = record["data"]["encoding"]
    assert encoding["train"]["n_desirable"] == encoding["train"]["n_undesirable"] == 8  # two blocks of 8
    assert encoding["eval"]["n_kept"] == 4 and record["data"]["source"]["train"]["n_desirable"] == 8
    assert {"eval/loss", "eval/kl", "eval/rewards/chosen", "eval/rewards/rejected"} <= set(record["metrics"])
    assert "pref_acc" not in record["metrics"]  # no pairs


def test_a_paired_method_refuses_unpaired_data_by_name_before_any_compute(make_config, tmp_path):
    from bench.config import ConfigError
    from bench.pipeline import run

    with pytest.raises(ConfigError, match=r"method.name='dpo' learns from pairs, but dataset 'local_file' holds "
                                          r"unpaired examples \(dataset.feedback=unpaired\)"):
        run(_unpaired_file_config(make_config, tmp_path, "dpo"))
    assert not any((tmp_path / "runs").rglob("record.json"))


def test_an_unpaired_file_outside_the_imbalance_rule_is_refused_naming_the_weights(make_config, tmp_path):
    from bench.pipeline import run

    cfg = _unpaired_file_config(make_config, tmp_path, "kto", "method.desirable_weight=2.0")
    record = run(cfg).record
    assert record["status"] == "failed"
    assert "= 2·8 / (1·8) = 2 is outside [1, 4/3]" in record["error"] and "method.desirable_weight in [1, 1.33]" in record["error"]
