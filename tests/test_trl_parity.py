"""Parity with TRL 1.16, the peer for the losses we share with it (docs/design.md §3).

Each test runs TRL's own loss code — `DPOTrainer._compute_loss` on a real tiny Llama and a real
reference model, or `CPOTrainer.cpo_loss` for SimPO — and feeds our method the log-probs TRL itself
computes on the same batch (the fused LM head TRL patches onto the model, so both sides see the same
float32 numbers). Nothing of TRL's formulas is re-typed here. Tolerance: 1e-6 absolute.

Facts about TRL 1.16 these tests pin down:
- `loss_type="sigmoid"` ignores `label_smoothing` (older TRL turned it into cDPO); the cDPO formula
  lives on in its "aot" loss, which on a one-pair batch (sorting one element is the identity) is
  exactly cDPO — so cdpo is checked against "aot" pair by pair.
- "ipo" divides the log-ratios by the completion-token count, so our ipo gets the same lengths.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from datasets import Dataset
from transformers import ByT5Tokenizer

from bench.methods import PairLogps, build_method
from helpers import perturbed_pair

# trl is a test extra, not a dependency of the suite: without it this module still imports and skips
pytest.importorskip("trl", reason="TRL parity tests need trl 1.16 (pip install -e '.[test]')")
from trl import DPOConfig, DPOTrainer  # noqa: E402

# transformers 5 deprecates `gradient_checkpointing`, which TRL's configs still set.
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")

ATOL = 1e-6

PROMPTS = ["the cat ", "a dog ", "to be ", "x = ", "hello ", "ok "]
CHOSEN = ["sat on the mat", "barks", "or not to be", "42", "world", "fine thanks"]
REJECTED = ["ran", "sleeps all day long", "!", "forty two", "there friend", "no"]
N_PAIRS = len(PROMPTS)


@pytest.fixture(scope="module")
def models():
    """A tiny Llama policy and a perturbed copy as the reference, so Δ spans both signs and both
    sides of the hinge (checked in test_fixture_covers_both_hinge_regions)."""
    tokenizer = ByT5Tokenizer()  # builds with no downloaded files
    return (tokenizer, *perturbed_pair(tokenizer))


@pytest.fixture(scope="module")
def make_trainer(models, tmp_path_factory):
    tokenizer, policy, reference = models
    dataset = Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    cache: dict[tuple, DPOTrainer] = {}

    def make(loss_type: str, beta: float = 0.1, label_smoothing: float = 0.0) -> DPOTrainer:
        key = (loss_type, beta, label_smoothing)
        if key not in cache:
            args = DPOConfig(
                output_dir=str(tmp_path_factory.mktemp("trl")),
                use_cpu=True,
                bf16=False,
                beta=beta,
                loss_type=[loss_type],
                label_smoothing=label_smoothing,
                report_to=[],
                disable_tqdm=True,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer = DPOTrainer(
                    model=copy.deepcopy(policy),
                    ref_model=copy.deepcopy(reference),
                    args=args,
                    train_dataset=dataset,
                    processing_class=tokenizer,
                )
            trainer.model.eval()
            cache[key] = trainer
        return cache[key]

    return make


def _sequence_logps(model, inputs) -> torch.Tensor:
    """Summed completion log-probs from the fused LM head TRL patched onto `model` (TRL's own numbers)."""
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    with torch.no_grad():
        out = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            fused_lm_head=True,
            use_cache=False,
        )
    n_shifted = inputs["completion_mask"].size(1) - 1
    return out.log_probs[:, -n_shifted:].sum(dim=1)


def run_trl(trainer: DPOTrainer, indices: list[int]) -> tuple[float, dict[str, float], PairLogps]:
    """TRL's loss and reward metrics on pairs `indices`, and the PairLogps of that same batch."""
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in indices])
    mode = "train" if trainer.model.training else "eval"
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False).item()
    metrics = {k: v[-1] for k, v in trainer._metrics[mode].items() if k.startswith("rewards/")}

    chosen, rejected = _sequence_logps(trainer.model, inputs).chunk(2)
    ref_chosen, ref_rejected = _sequence_logps(trainer.ref_model, inputs).chunk(2)
    lengths = inputs["completion_mask"].sum(dim=1).float()
    chosen_token_counts, rejected_token_counts = lengths.chunk(2)
    batch = PairLogps(chosen, rejected, chosen_token_counts, rejected_token_counts, ref_chosen, ref_rejected)
    return loss, metrics, batch


# (our method config, TRL loss_type, TRL label_smoothing)
SHARED_LOSSES = [
    ({"name": "dpo", "beta": 0.1}, "sigmoid", 0.0),
    ({"name": "robust", "beta": 0.1, "epsilon": 0.1}, "robust", 0.1),
    ({"name": "robust", "beta": 0.5, "epsilon": 0.3}, "robust", 0.3),
    ({"name": "ipo", "beta": 0.1, "average_logps": True}, "ipo", 0.0),
    ({"name": "ipo", "beta": 0.5, "average_logps": True}, "ipo", 0.0),
    ({"name": "hinge", "beta": 0.1}, "hinge", 0.0),
]


@pytest.mark.parametrize("cfg, loss_type, label_smoothing", SHARED_LOSSES, ids=lambda v: str(v))
def test_full_batch_loss_and_rewards_match_trl(make_trainer, cfg, loss_type, label_smoothing):
    trainer = make_trainer(loss_type, cfg["beta"], label_smoothing)
    trl_loss, trl_metrics, batch = run_trl(trainer, list(range(N_PAIRS)))
    out = build_method(cfg)(batch)
    assert out.losses.mean().item() == pytest.approx(trl_loss, abs=ATOL, rel=0)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert out.metrics[key] == pytest.approx(trl_metrics[key], abs=ATOL, rel=0), key


@pytest.mark.parametrize("cfg, loss_type, label_smoothing", SHARED_LOSSES, ids=lambda v: str(v))
def test_per_pair_loss_matches_trl(make_trainer, cfg, loss_type, label_smoothing):
    trainer = make_trainer(loss_type, cfg["beta"], label_smoothing)
    method = build_method(cfg)
    for i in range(N_PAIRS):
        trl_loss, _, batch = run_trl(trainer, [i])
        assert method(batch).losses.item() == pytest.approx(trl_loss, abs=ATOL, rel=0), f"pair {i}"


@pytest.mark.parametrize("epsilon", [0.1, 0.25])
def test_cdpo_matches_trl_aot_on_single_pairs(make_trainer, epsilon):
    trainer = make_trainer("aot", 0.1, epsilon)
    method = build_method({"name": "cdpo", "beta": 0.1, "epsilon": epsilon})
    for i in range(N_PAIRS):
        trl_loss, _, batch = run_trl(trainer, [i])
        assert method(batch).losses.item() == pytest.approx(trl_loss, abs=ATOL, rel=0), f"pair {i}"


def test_trl_sigmoid_ignores_label_smoothing(make_trainer):
    """TRL 1.16 'sigmoid' + label_smoothing is plain DPO, not cDPO: our dpo matches it, cdpo does not."""
    trainer = make_trainer("sigmoid", 0.1, 0.1)
    trl_loss, _, batch = run_trl(trainer, list(range(N_PAIRS)))
    assert build_method({"name": "dpo", "beta": 0.1})(batch).losses.mean().item() == pytest.approx(trl_loss, abs=ATOL)
    cdpo = build_method({"name": "cdpo", "beta": 0.1, "epsilon": 0.1})(batch).losses.mean().item()
    assert abs(cdpo - trl_loss) > 1e-3


def test_ipo_summed_flag_differs_from_trl(make_trainer):
    """average_logps: false is the summed form, which TRL's ipo is not (guards the flag doing something)."""
    trl_loss, _, batch = run_trl(make_trainer("ipo", 0.1), list(range(N_PAIRS)))
    summed = build_method({"name": "ipo", "beta": 0.1, "average_logps": False})(batch).losses.mean().item()
    assert abs(summed - trl_loss) > 1e-2


def test_fixture_covers_both_hinge_regions(make_trainer):
    """The parity data must exercise both branches of max(0, 1 − βΔ) and both signs of Δ."""
    _, _, batch = run_trl(make_trainer("hinge", 0.1), list(range(N_PAIRS)))
    chosen_logratios = batch.chosen_logps - batch.reference_chosen_logps
    rejected_logratios = batch.rejected_logps - batch.reference_rejected_logps
    beta_delta = 0.1 * (chosen_logratios - rejected_logratios)
    assert (beta_delta > 1).any() and (beta_delta < 1).any()
    assert (beta_delta < 0).any() and (beta_delta > 0).any()


def test_simpo_matches_trl_cpo_simpo_loss(models, make_trainer, tmp_path_factory):
    """SimPO against trl.experimental.cpo's CPOTrainer.cpo_loss (loss_type="simpo", cpo_alpha=0), which
    takes length-averaged log-probs and an absolute γ = simpo_gamma; ours takes γ/β."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    tokenizer, policy, _ = models
    beta, gamma_beta_ratio = 2.0, 0.5
    args = CPOConfig(
        output_dir=str(tmp_path_factory.mktemp("cpo")),
        use_cpu=True,
        bf16=False,
        beta=beta,
        loss_type="simpo",
        cpo_alpha=0.0,
        simpo_gamma=beta * gamma_beta_ratio,
        report_to=[],
        max_length=64,
        disable_tqdm=True,
    )
    dataset = Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpo = CPOTrainer(model=copy.deepcopy(policy), args=args, train_dataset=dataset, processing_class=tokenizer)

    _, _, batch = run_trl(make_trainer("sigmoid", 0.1), list(range(N_PAIRS)))  # real model log-probs
    chosen_avg = batch.chosen_logps / batch.chosen_token_counts
    rejected_avg = batch.rejected_logps / batch.rejected_token_counts
    trl_losses, trl_chosen_rewards, trl_rejected_rewards = cpo.cpo_loss(chosen_avg, rejected_avg)

    out = build_method({"name": "simpo", "beta": beta, "gamma_beta_ratio": gamma_beta_ratio})(batch)
    torch.testing.assert_close(out.losses, trl_losses, atol=ATOL, rtol=0)
    assert out.metrics["rewards/chosen"] == pytest.approx(trl_chosen_rewards.mean().item(), abs=ATOL)
    assert out.metrics["rewards/rejected"] == pytest.approx(trl_rejected_rewards.mean().item(), abs=ATOL)
