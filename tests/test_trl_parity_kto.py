"""Parity of our KTO with TRL 1.16's KTOTrainer (loss_type "kto"), the peer for KTO (docs/design.md §3).

Each test runs TRL's own `KTOTrainer._compute_loss` on a collated batch of a real tiny Llama policy and a real
reference model, and feeds our method the log-probs TRL itself computes on that batch: the summed completion
log-probs of the matched sequences (input_ids) and of TRL's mismatched KL sequences (KL_input_ids, whose
completions TRL rotates by +1 within each batch), from the fused LM head TRL patches onto both models. Nothing
of TRL's formulas is re-typed here. Tolerance: 1e-6 absolute.

Facts about TRL 1.16 these tests pin down:
- z₀ is the batch mean of KL_logps − ref_KL_logps, clamped at 0 and detached, and the batch loss is the plain
  mean of the weighted per-example losses (not a weighted mean);
- a batch with no undesirable example logs no rewards/rejected, logps/rejected or rewards/margins;
- the mismatched completion of example i is that of example i − 1 of its batch (the first takes the last),
  which is also what our encoding builds (bench.data.examples.encode_examples).
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from datasets import Dataset
from transformers import ByT5Tokenizer

from bench.data.encoding import surviving_response_ids
from bench.data.examples import encode_examples
from bench.methods import build_method
from bench.methods.base import ExampleLogps
from helpers import perturbed_pair

# trl is a test extra, not a dependency of the suite: without it this module still imports and skips
pytest.importorskip("trl", reason="TRL parity tests need trl 1.16 (pip install -e '.[test]')")
from trl import KTOConfig, KTOTrainer  # noqa: E402

# transformers 5 deprecates `gradient_checkpointing`, which TRL's configs still set.
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")

ATOL = 1e-6
METRICS = ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected")

# Labels interleaved, so TRL's split into desirable then undesirable examples reorders the batch.
RECORDS = {
    "prompt": ["the cat ", "a dog ", "to be ", "x = ", "hello ", "ok "],
    "completion": ["sat on the mat", "sleeps all day long", "or not to be", "forty two", "world", "no"],
    "label": [True, False, True, False, True, True],
}
ALL_DESIRABLE = {
    "prompt": ["the cat ", "to be ", "hello ", "ok "],
    "completion": ["sat on the mat", "or not to be", "world", "fine thanks"],
    "label": [True, True, True, True],
}


@pytest.fixture(scope="module")
def models():
    """A tiny Llama and a perturbed copy of it. As (policy, reference) the policy is far more likely than the
    reference on the mismatched sequences (z₀ > 0); swapped, far less (the clamp at 0): both checked in
    test_fixture_covers_both_reference_point_regimes."""
    tokenizer = ByT5Tokenizer()  # builds with no downloaded files
    return (tokenizer, *perturbed_pair(tokenizer))


@pytest.fixture(scope="module")
def make_trainer(models, tmp_path_factory):
    tokenizer, policy, reference = models
    cache: dict[tuple, KTOTrainer] = {}

    def make(beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             swap: bool = False, records: dict = RECORDS) -> KTOTrainer:
        key = (beta, desirable_weight, undesirable_weight, swap, id(records))
        if key not in cache:
            args = KTOConfig(
                output_dir=str(tmp_path_factory.mktemp("kto")),
                use_cpu=True,
                bf16=False,
                beta=beta,
                loss_type="kto",
                desirable_weight=desirable_weight,
                undesirable_weight=undesirable_weight,
                # the whole dataset is one batch, so TRL's KL rotation runs within the batch tested
                per_device_train_batch_size=len(records["label"]),
                train_sampling_strategy="sequential",
                report_to=[],
                disable_tqdm=True,
            )
            model, ref_model = (reference, policy) if swap else (policy, reference)
            with warnings.catch_warnings():  # incl. TRL's advice on desirable/undesirable weights
                warnings.simplefilter("ignore")
                trainer = KTOTrainer(
                    model=copy.deepcopy(model),
                    ref_model=copy.deepcopy(ref_model),
                    args=args,
                    train_dataset=Dataset.from_dict(records),
                    processing_class=tokenizer,
                )
            trainer.model.eval()
            cache[key] = trainer
        return cache[key]

    return make


def _sequence_logps(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """Summed completion log-probs from the fused LM head TRL patched onto `model` (TRL's own numbers)."""
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True,
                    use_cache=False)
    n_shifted = completion_mask.size(1) - 1
    return out.log_probs[:, -n_shifted:].sum(dim=1)


def run_trl(trainer: KTOTrainer) -> tuple[float, dict[str, float], ExampleLogps]:
    """TRL's loss and the KTO metrics it logged on the whole training set as one batch, and the ExampleLogps
    of that same batch (matched and KL sequences exactly as TRL collated them)."""
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    mode = "train" if trainer.model.training else "eval"
    logged_before = {name: len(trainer._metrics[mode][name]) for name in METRICS}
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False).item()
    # only what this call appended: the lists accumulate over calls
    metrics = {name: trainer._metrics[mode][name][-1] for name in METRICS
               if len(trainer._metrics[mode][name]) > logged_before[name]}

    matched = (inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"])
    mismatched = (inputs["KL_input_ids"], inputs["KL_attention_mask"], inputs["KL_completion_mask"])
    batch = ExampleLogps(
        logps=_sequence_logps(trainer.model, *matched),
        token_counts=inputs["completion_mask"].sum(dim=1).float(),
        labels=inputs["label"].bool(),
        reference_logps=_sequence_logps(trainer.ref_model, *matched),
        kl_logps=_sequence_logps(trainer.model, *mismatched),
        reference_kl_logps=_sequence_logps(trainer.ref_model, *mismatched),
    )
    return loss, metrics, batch


def kto(beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    return build_method({"name": "kto", "beta": beta, "desirable_weight": desirable_weight,
                         "undesirable_weight": undesirable_weight})


# (beta, desirable_weight, undesirable_weight); 4 desirable and 2 undesirable examples, so 0.75 / 1.5 is the
# paper's balanced weighting and 1 / 1.33 is outside it (TRL warns, and computes the loss all the same).
SETTINGS = [(0.1, 1.0, 1.0), (0.5, 1.0, 1.0), (0.1, 0.75, 1.5), (0.5, 1.0, 1.33)]


def _max_abs_diff(ours: dict[str, float], theirs: dict[str, float]) -> float:
    return max(abs(ours[k] - theirs[k]) for k in theirs)


@pytest.mark.parametrize("swap", [False, True], ids=["z0_positive", "z0_clamped"])
@pytest.mark.parametrize("beta, desirable_weight, undesirable_weight", SETTINGS)
def test_full_batch_loss_matches_trl(make_trainer, beta, desirable_weight, undesirable_weight, swap):
    trainer = make_trainer(beta, desirable_weight, undesirable_weight, swap)
    trl_loss, _, batch = run_trl(trainer)
    out = kto(beta, desirable_weight, undesirable_weight)(batch)
    assert out.losses.shape == (len(RECORDS["label"]),)
    assert out.losses.mean().item() == pytest.approx(trl_loss, abs=ATOL, rel=0)


@pytest.mark.parametrize("swap", [False, True], ids=["z0_positive", "z0_clamped"])
@pytest.mark.parametrize("beta, desirable_weight, undesirable_weight", SETTINGS)
def test_metrics_match_trl(make_trainer, beta, desirable_weight, undesirable_weight, swap):
    trainer = make_trainer(beta, desirable_weight, undesirable_weight, swap)
    _, trl_metrics, batch = run_trl(trainer)
    assert set(trl_metrics) == set(METRICS)  # both labels in the batch: TRL logs all six
    out = kto(beta, desirable_weight, undesirable_weight)(batch)
    for name in METRICS:
        assert out.metrics[name] == pytest.approx(trl_metrics[name], abs=ATOL, rel=0), name


def test_fixture_covers_both_reference_point_regimes(make_trainer):
    """The parity data must exercise z₀ > 0 (the reference point moves every reward) and the clamp at 0 (a
    negative KL estimate, which an unclamped z₀ would turn into a shift of more than 0.1 nats·β here)."""
    for swap in (False, True):
        trl_loss, trl_metrics, batch = run_trl(make_trainer(0.1, swap=swap))
        raw_kl = (batch.kl_logps - batch.reference_kl_logps).mean().item()
        out = kto(0.1)(batch)
        if swap:
            assert raw_kl < -1.0
            assert trl_metrics["kl"] == 0.0 and out.metrics["kl"] == 0.0
        else:
            assert raw_kl > 1.0
            assert trl_metrics["kl"] == pytest.approx(raw_kl, abs=ATOL, rel=0)
            assert out.metrics["kl"] == pytest.approx(raw_kl, abs=ATOL, rel=0)
        assert out.losses.mean().item() == pytest.approx(trl_loss, abs=ATOL, rel=0), f"swap={swap}"
        # z₀ matters: the same loss with z₀ = 0 is far from TRL's
        if not swap:
            rewards = 0.1 * (batch.logps - batch.reference_logps)
            sign = batch.labels.float() * 2 - 1
            without_z0 = (1 - torch.sigmoid(sign * rewards)).mean().item()
            assert abs(without_z0 - trl_loss) > 1e-2


def test_only_desirable_batch_leaves_rejected_metrics_out(make_trainer):
    trainer = make_trainer(0.1, records=ALL_DESIRABLE)
    trl_loss, trl_metrics, batch = run_trl(trainer)
    assert set(trl_metrics) == {"kl", "rewards/chosen", "logps/chosen"}
    out = kto(0.1)(batch)
    assert set(out.metrics) == set(trl_metrics)
    assert out.losses.mean().item() == pytest.approx(trl_loss, abs=ATOL, rel=0)
    for name, value in trl_metrics.items():
        assert out.metrics[name] == pytest.approx(value, abs=ATOL, rel=0), name


@pytest.mark.parametrize("block_size", [3, 6])
def test_mismatched_completions_follow_trl_rotation(models, tmp_path_factory, block_size):
    """Our encoding pairs each prompt with the same mismatched completion TRL's `add_kl_completion_ids` does,
    block by block: TRL is given our examples in our (shuffled) row order with our block size as its batch
    size, and its KL completion tokens must be our KL rows' scored tokens (EOS included on both sides)."""
    tokenizer, policy, _ = models
    records = [{"prompt": p, "completion": c, "label": y}
               for p, c, y in zip(RECORDS["prompt"], RECORDS["completion"], RECORDS["label"])]
    tensors, _, stats = encode_examples(records, tokenizer, max_length=64, source="parity", block_size=block_size,
                                        seed=3)
    assert stats["n_kept"] == len(records)
    ours_completion = surviving_response_ids(tensors.completions)
    ours_kl = surviving_response_ids(tensors.kl)
    eos = tokenizer.eos_token_id
    by_completion = {tuple(tokenizer(r["completion"], add_special_tokens=False)["input_ids"] + [eos]): r for r in records}
    ordered = [by_completion[tuple(ids)] for ids in ours_completion]
    assert [r["completion"] for r in ordered] != RECORDS["completion"]  # the shuffle is real, not the identity

    args = KTOConfig(output_dir=str(tmp_path_factory.mktemp("kto_rotation")), use_cpu=True, bf16=False,
                     per_device_train_batch_size=block_size, train_sampling_strategy="sequential", report_to=[],
                     disable_tqdm=True)
    dataset = Dataset.from_dict({k: [r[k] for r in ordered] for k in ("prompt", "completion", "label")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = KTOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(policy), args=args,
                             train_dataset=dataset, processing_class=tokenizer)
    trl_rows = list(trainer.train_dataset)
    assert [row["completion_ids"] for row in trl_rows] == ours_completion
    assert [row["KL_completion_ids"] for row in trl_rows] == ours_kl
    assert ours_kl != ours_completion
