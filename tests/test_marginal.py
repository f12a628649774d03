"""log p(y | ∅) on truncated pairs (docs/design.md §4): the response-only pass scores exactly the response tokens
that survived truncation in the prompted sequence, as RMiPO's code gathers them.

`authors_marginal_average` below is a re-implementation, written for this test, of what their
`concatenated_forward` (scripts/rmipo_trainer.py, github.com/liavonpenn/rmipo) does for loss_type
"rmipo": from the prompted sequence's labels (the prompt masked out), take the first labelled position
and the number of labelled tokens, gather those tokens into a response-only row (no BOS), run the model
on it and average the log-probs of every token but the first (their get_batch_logps shifts by one).
The suite's "bos" context is the same gathered tokens after a BOS, every one scored. Every IMI method
(rmipo; imi_dpo, imi_ipo, imi_simpo with pmi_source policy and reference) must hand its loss exactly
that average, through the trainer (policy side) or the cached reference terms (reference side).
"""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from bench.cache import DiskCache
from bench.cost import CostMeter
from bench.data.encoding import encode_pairs, marginal_sequence
from bench.loggers import NoneLogger
from bench.methods import build_method
from bench.models import build_tiny_model, build_word_tokenizer
from bench.pipeline import build_setup
from bench.reference import marginal_per_conditional_token
from bench.trainer import PreferenceTrainer

IGNORE = -100  # their label_pad_token_id


@torch.no_grad()
def authors_marginal_average(model, input_ids: torch.Tensor, response_mask: torch.Tensor, bos: int | None = None):
    """Mean log p(y | ∅) per sequence [N] as their code computes it (bos=None), or after a BOS (bos=id,
    every gathered token scored: the suite's "bos" context), from prompted sequences [N, L]."""
    labels = torch.where(response_mask.bool(), input_ids, torch.full_like(input_ids, IGNORE))
    labelled = labels != IGNORE
    lengths = labelled.sum(1)
    starts = labelled.int().argmax(1)
    width = int(lengths.max())
    offsets = torch.arange(width).unsqueeze(0)
    positions = (starts.unsqueeze(1) + offsets).clamp(max=input_ids.shape[1] - 1)
    inside = offsets < lengths.unsqueeze(1)
    rows = input_ids.gather(1, positions)
    row_labels = torch.where(inside, labels.gather(1, positions), torch.full_like(rows, IGNORE))
    attention = inside.long()
    if bos is not None:
        n = len(rows)
        rows = torch.cat([torch.full((n, 1), bos), rows], 1)
        row_labels = torch.cat([torch.full((n, 1), IGNORE), row_labels], 1)
        attention = torch.cat([torch.ones(n, 1, dtype=torch.long), attention], 1)
    logits = model(input_ids=rows, attention_mask=attention, use_cache=False).logits.float()
    targets, logits = row_labels[:, 1:].clone(), logits[:, :-1]
    scored = targets != IGNORE
    targets[~scored] = 0
    token_logps = logits.log_softmax(-1).gather(2, targets.unsqueeze(2)).squeeze(2)
    return (token_logps * scored).sum(-1) / scored.sum(-1)


# ------------------------------------------------------------------ encoding level, by hand


@pytest.fixture
def tokenizer():
    return build_word_tokenizer(["a", "b", "c", "d", "="])


def test_truncated_response_only_sequence_holds_exactly_the_surviving_tokens(tokenizer):
    # BOS + 5 prompt tokens leave 3 of the 7 response tokens (+ EOS) within max_length 9
    record = {"prompt": "a a a a =", "chosen": "b c d b c d b", "rejected": "c"}
    pairs, _, stats = encode_pairs([record], tokenizer, 9, "fixture")
    assert stats["n_truncated"] == 1
    b, c, d = tokenizer.convert_tokens_to_ids(["b", "c", "d"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    authors = pairs.marginal(tokenizer, 9, "authors")
    # chosen: their pass scores 2 tokens (3 survived, the first has no context); the old encoding
    # re-cut the whole response at max_length on its own and scored 7 (b c d b c d b, EOS cut at 9)
    assert authors.input_ids[0, :3].tolist() == [b, c, d] and authors.token_counts()[0] == 2
    # rejected: untruncated, so the EOS survived and is scored too
    assert authors.input_ids[1, :2].tolist() == [c, eos] and authors.token_counts()[1] == 1
    with_bos = pairs.marginal(tokenizer, 9, "bos")
    assert with_bos.input_ids[0, :4].tolist() == [bos, b, c, d]
    assert with_bos.token_counts().tolist() == pairs.both().token_counts().tolist() == [3.0, 2.0]


def test_marginal_sequence_conventions(tokenizer):
    b = tokenizer.convert_tokens_to_ids("b")
    eos = tokenizer.eos_token_id
    assert marginal_sequence(tokenizer, [b, b, eos], "bos") == ([tokenizer.bos_token_id, b, b, eos], [0, 1, 1, 1])
    assert marginal_sequence(tokenizer, [b, b, eos], "authors") == ([b, b, eos], [0, 1, 1])
    with pytest.raises(ValueError, match="marginal_context"):
        marginal_sequence(tokenizer, [b], "none")


def test_marginal_per_conditional_token_by_hand():
    """Their pass scores |y| − 1 tokens: −6 over 2 tokens is an average of −3, which the trainer must
    hand over as −3 × 3 (the conditional count), so that dividing by |y| = 3 gives back −3."""
    sums, marginal_counts, conditional_counts = torch.tensor([-6.0, -4.0]), torch.tensor([2.0, 4.0]), torch.tensor([3.0, 4.0])
    out = marginal_per_conditional_token(sums, marginal_counts, conditional_counts)
    assert out.tolist() == [-9.0, -4.0]
    assert (out / conditional_counts).tolist() == [-3.0, -1.0]


# ------------------------------------------------------------------ through the pipeline, per method

# (method, pmi_source, marginal_context): rmipo in both contexts (only it exposes the authors' one); the
# imi_* methods with both PMI sources, in their fixed "bos" context
IMI_CASES = [("rmipo", None, "authors"), ("rmipo", None, "bos"),
             *((m, s, "bos") for m in ("imi_dpo", "imi_ipo", "imi_simpo") for s in ("policy", "reference"))]


@pytest.fixture(scope="module")
def truncating_config_overrides():
    # sentiment prompts are 6 words: BOS + prompt leave 8 of up to 24 response tokens within 15, so the
    # data holds both truncated responses and short ones that keep their EOS (and no truncated response
    # keeps a single token, which the authors' pass would score as 0 tokens: a 0/0 average)
    return ["dataset=sentiment", "model.max_length=15"]


@pytest.mark.parametrize("method_name, pmi_source, context", IMI_CASES)
def test_every_imi_method_gets_the_authors_marginal_average_on_truncated_pairs(
        make_config, shared_cache, truncating_config_overrides, method_name, pmi_source, context):
    overrides = [*truncating_config_overrides, f"method={method_name}"]
    if method_name == "rmipo":
        overrides.append(f"method.marginal_context={context}")
    if pmi_source is not None:
        overrides.append(f"method.pmi_source={pmi_source}")
    cfg = make_config(*overrides)
    method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
    assert method.needs.marginal_context == context
    setup = build_setup(cfg, method, DiskCache(shared_cache), CostMeter(), "cpu", show_progress=False)
    pairs, tokenizer = setup.train, setup.tokenizer
    both = pairs.both()
    counts = both.token_counts()
    surviving_eos = (both.input_ids == tokenizer.eos_token_id) & both.response_mask.bool()
    truncated = ~surviving_eos.any(1)
    assert truncated.any() and (~truncated).any(), "the data must hold truncated and untruncated responses"

    bos = tokenizer.bos_token_id if context == "bos" else None
    if method.needs.marginal == "reference":
        expected = authors_marginal_average(setup.reference_model, both.input_ids, both.response_mask, bos)
        handed = setup.train_terms.marginal_logps.T.reshape(-1)  # [P, 2] -> chosen rows then rejected rows
    else:
        expected = authors_marginal_average(setup.model, both.input_ids, both.response_mask, bos)
        marginal_seqs = pairs.marginal(tokenizer, cfg.model.max_length, method.needs.marginal_context)
        train_cfg = {**OmegaConf.to_container(cfg.train), "log_every": 1}
        trainer = PreferenceTrainer(method, setup.model, pairs, setup.train_terms, marginal_seqs, train_cfg,
                                    Accelerator(cpu=True), CostMeter(), NoneLogger(), seed=0, show_progress=False)
        index = torch.arange(len(pairs))
        batch = trainer._pair_logps(index, step=0)
        handed = torch.cat([batch.marginal_chosen_logps, batch.marginal_rejected_logps]).detach()
    # the method divides the handed-over sum by the conditional count |y| to get ā(y | ∅). A one-token
    # response (an empty answer's EOS) leaves the authors' pass no token to score: their average is 0/0,
    # where the suite hands over a finite value; those rows are compared for finiteness only.
    defined = ~torch.isnan(expected)
    assert defined.float().mean() > 0.9
    torch.testing.assert_close((handed / counts)[defined], expected[defined], atol=2e-5, rtol=0)
    assert torch.isfinite(handed[~defined]).all()
    if context == "authors":
        # their pass scores one token fewer than the prompted one: the rescaling is really exercised
        marginal_counts = pairs.marginal(tokenizer, cfg.model.max_length, "authors").token_counts()
        assert torch.equal(marginal_counts, counts - 1)


def test_rescaling_is_what_makes_the_policy_side_match(make_config, shared_cache, truncating_config_overrides,
                                                      monkeypatch):
    """With marginal_per_conditional_token returning its input unchanged, the trainer hands over the
    authors' pass's sum over |y| − 1 tokens as if it were over |y|, and the comparison above fails."""
    import bench.reference

    cfg = make_config(*truncating_config_overrides, "method=rmipo", "method.marginal_context=authors")
    method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
    setup = build_setup(cfg, method, DiskCache(shared_cache), CostMeter(), "cpu", show_progress=False)
    both = setup.train.both()
    expected = authors_marginal_average(setup.model, both.input_ids, both.response_mask)
    monkeypatch.setattr(bench.reference, "marginal_per_conditional_token", lambda sums, counts, conditional: sums)
    marginal_seqs = setup.train.marginal(setup.tokenizer, cfg.model.max_length, "authors")
    trainer = PreferenceTrainer(method, setup.model, setup.train, setup.train_terms, marginal_seqs,
                                {**OmegaConf.to_container(cfg.train), "log_every": 1}, Accelerator(cpu=True),
                                CostMeter(), NoneLogger(), seed=0, show_progress=False)
    batch = trainer._pair_logps(torch.arange(len(setup.train)), step=0)
    handed = torch.cat([batch.marginal_chosen_logps, batch.marginal_rejected_logps]).detach()
    assert not torch.allclose(handed / both.token_counts(), expected, atol=1e-3)


def test_reimplementation_agrees_with_a_hand_count(tokenizer):
    """The re-implementation itself, on one truncated row: 3 surviving tokens, 2 scored, by hand."""
    torch.manual_seed(0)
    model = build_tiny_model(dict(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=16), tokenizer)
    pairs, _, _ = encode_pairs([{"prompt": "a a a a =", "chosen": "b c d b c d b", "rejected": "c"}], tokenizer, 9, "f")
    b, c, d = tokenizer.convert_tokens_to_ids(["b", "c", "d"])
    logps = torch.log_softmax(model(input_ids=torch.tensor([[b, c, d]])).logits[0].double(), -1)
    by_hand = (logps[0, c] + logps[1, d]).item() / 2
    got = authors_marginal_average(model, pairs.chosen.input_ids, pairs.chosen.response_mask)
    assert got.item() == pytest.approx(by_hand, abs=1e-5)
