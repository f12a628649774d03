"""The packed layout computes what the padded one does: log-probs and gradients, on batches of varied
lengths, for the policy pair batch, the reference (no-grad) pass and the response-only marginal pass.

Measured (float32, CPU): on these fixtures log-prob sums agree to 1e-6 absolute (1e-7 relative) and
parameter gradients to 2.4e-7 relative (norm of the difference over the norm); on the throughput
benchmark's batch (4 layers, hidden 128) to 7.6e-6 absolute and 3.9e-7 relative. The tolerances below
leave an order of magnitude over that; a layout in which packed sequences see each other is off by
~0.1 per token (test_a_leak_between_packed_sequences_is_caught), far outside them.
"""
from __future__ import annotations

import random

import pytest
import torch

from bench.data.encoding import SequenceTensors, encode_pairs
from bench.logps import (
    PACKED_ROW_WIDTH,
    PADDED,
    Layout,
    check_packed_layout,
    choose_layout,
    first_fit_decreasing,
    layout_positions,
    pack,
    resolve_layout,
    score_all,
    sequence_logps,
)
from bench.models import build_tiny_model, build_word_tokenizer

MODEL = dict(hidden_size=48, num_layers=2, num_heads=4, intermediate_size=96, max_length=28)
WORDS = ["a", "b", "c", "d", "e", "f", "="]
LOGPS_TOL = dict(atol=1e-4, rtol=1e-5)
GRAD_REL_TOL = 1e-5
LAYOUTS = {
    "rows_of_8": Layout("packed", 8),  # narrower than the longest sequence: those get rows of their own
    "rows_default": Layout("packed", PACKED_ROW_WIDTH),
    "one_row": Layout("packed", None),
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def pairs(tokenizer):
    """24 pairs, prompts of 1-12 words and responses of 1-20 (some cut by max_length 28)."""
    rng = random.Random(0)
    words = lambda k: " ".join(rng.choice(WORDS[:-1]) for _ in range(k))  # noqa: E731
    records = [{"prompt": words(rng.randint(1, 12)) + " =", "chosen": words(rng.randint(1, 20)),
                "rejected": words(rng.randint(1, 20))} for _ in range(24)]
    encoded, _, stats = encode_pairs(records, tokenizer, MODEL["max_length"], "fixture")
    assert stats["n_truncated"] > 0  # some responses lose their EOS: the layouts must agree there too
    return encoded


def _model(tokenizer, attention: str = "sdpa"):
    torch.manual_seed(0)
    model = build_tiny_model(MODEL, tokenizer).float()
    model.set_attn_implementation(attention)
    return model


def _batches(pairs, tokenizer):
    """The three kinds of batch the suite scores: policy pairs, response-only (both contexts)."""
    index = torch.tensor([3, 0, 17, 9, 22, 5, 11, 14])
    lengths = pairs.batch(index).attention_mask.sum(-1)
    assert lengths.min() < 10 and lengths.max() == MODEL["max_length"]  # short ones and a truncated one
    return {
        "pairs": pairs.batch(index),
        "marginal_bos": pairs.marginal(tokenizer, MODEL["max_length"], "bos").select(index),
        "marginal_authors": pairs.marginal(tokenizer, MODEL["max_length"], "authors").select(index),
    }


def _gradients(model, seqs, layout):
    model.zero_grad(set_to_none=True)
    sums, _ = sequence_logps(model, seqs, layout)
    # distinct weights per sequence, of both signs: a gradient mixed up between sequences shows
    (sums * torch.linspace(-1.0, 2.0, len(sums))).sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("layout_name", list(LAYOUTS))
def test_packed_logps_and_gradients_equal_padded(tokenizer, pairs, attention, layout_name):
    model = _model(tokenizer, attention)
    layout = LAYOUTS[layout_name]
    for kind, seqs in _batches(pairs, tokenizer).items():
        padded_sums, padded_counts = sequence_logps(model, seqs, PADDED)
        packed_sums, packed_counts = sequence_logps(model, seqs, layout)
        torch.testing.assert_close(packed_sums, padded_sums, **LOGPS_TOL, msg=kind)
        assert torch.equal(packed_counts, padded_counts), kind
        assert torch.equal(padded_counts, seqs.token_counts()), kind
        expected, got = _gradients(model, seqs, PADDED), _gradients(model, seqs, layout)
        relative = ((got - expected).norm() / expected.norm()).item()
        assert relative < GRAD_REL_TOL, (kind, relative)


def test_reference_scoring_in_both_layouts_agrees_across_batch_boundaries(tokenizer, pairs):
    model = _model(tokenizer)
    both = pairs.both()
    padded, padded_counts = score_all(model, both, batch_size=7)
    for layout in ("packed", "auto", LAYOUTS["one_row"]):
        packed, counts = score_all(model, both, batch_size=5, layout=layout)
        torch.testing.assert_close(packed, padded, **LOGPS_TOL)
        assert torch.equal(counts, padded_counts)
    assert model.training  # score_all restores the mode it found


def test_a_leak_between_packed_sequences_is_caught(tokenizer, pairs):
    """Negative control: the same packed rows with an all-ones attention mask hide the sequence
    boundaries; the sums move far outside the tolerance, and the setup check refuses such a model."""

    class IgnoresPositionBoundaries(torch.nn.Module):
        """A model whose attention sees whole rows (as custom attention code might)."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, attention_mask=None, **kwargs):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    model = _model(tokenizer)
    seqs = _batches(pairs, tokenizer)["pairs"]
    leaky = IgnoresPositionBoundaries(model)
    padded, counts = sequence_logps(model, seqs, PADDED)
    leaked, _ = sequence_logps(leaky, seqs, LAYOUTS["rows_default"])
    assert ((leaked - padded).abs() / counts).max() > 1e-2
    check_packed_layout(model, seqs, LAYOUTS["rows_default"])  # the real model passes
    with pytest.raises(RuntimeError, match="train.layout=padded"):
        check_packed_layout(leaky, seqs, LAYOUTS["rows_default"])
    with pytest.raises(RuntimeError, match="train.layout=padded"):
        score_all(leaky, seqs, layout="packed")


def test_the_packed_check_runs_once_per_model_and_layout(tokenizer, pairs):
    """A model that passed is not probed again for the same layout (score_all checks at every call); a
    new layout, or another model object, is."""
    model = _model(tokenizer)
    seqs = pairs.both()
    forwards = []
    model.register_forward_hook(lambda *args: forwards.append(1))
    check_packed_layout(model, seqs, LAYOUTS["rows_of_8"])
    assert len(forwards) == 2  # one padded, one packed forward
    score_all(model, seqs, layout=LAYOUTS["rows_of_8"])
    score_all(model, seqs, layout=LAYOUTS["rows_of_8"])
    assert len(forwards) == 4  # the two scoring passes, no probe
    check_packed_layout(model, seqs, LAYOUTS["one_row"])
    assert len(forwards) == 6
    other = _model(tokenizer)
    other_forwards = []
    other.register_forward_hook(lambda *args: other_forwards.append(1))
    check_packed_layout(other, seqs, LAYOUTS["rows_of_8"])
    assert len(other_forwards) == 2


def test_pack_lays_out_a_hand_built_batch():
    # three sequences of 3, 5 and 2 tokens, scored tokens marked 1 (the first one is never scored)
    seqs = SequenceTensors(
        input_ids=torch.tensor([[11, 12, 13, 0, 0], [21, 22, 23, 24, 25], [31, 32, 0, 0, 0]]),
        attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]),
        response_mask=torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 1, 1], [1, 1, 0, 0, 0]]),
    )
    packed = pack(seqs, row_width=6)
    # longest first: [21..25] opens row 0, [11 12 13] opens row 1, [31 32] fits after it
    assert packed.input_ids.tolist() == [[21, 22, 23, 24, 25, 0], [11, 12, 13, 31, 32, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 1, 0]]
    # logits kept where the next token is scored: 24 and 25 (after 23, 24), 12 and 13, and 32
    assert packed.keep.tolist() == [[False, False, True, True, False, False], [True, True, False, True, False, False]]
    assert packed.targets.tolist() == [24, 25, 12, 13, 32]
    assert packed.target_rows.tolist() == [1, 1, 0, 0, 2]
    assert packed.target_cols.tolist() == [2, 3, 0, 1, 0]
    assert packed.counts.tolist() == [2.0, 2.0, 1.0] == seqs.token_counts().tolist()
    one_row = pack(seqs, row_width=None)
    assert one_row.input_ids.shape == (1, 10) and one_row.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1]]
    wide = pack(seqs, row_width=4)  # the 5-token sequence is wider than a row: rows become 5 wide
    assert wide.input_ids.shape[1] == 5
    assert layout_positions(seqs, Layout("packed", 6)) == 12 and layout_positions(seqs, PADDED) == 15


def test_first_fit_decreasing_on_hand_computed_rows():
    rows, offsets, used = first_fit_decreasing([3, 5, 2, 4, 1, 4], width=6)
    # order 5, 4, 4, 3, 2, 1 (ties keep input order): 5->r0, 4->r1, 4->r2, 3->r3, 2->r1, 1->r0
    assert rows == [3, 0, 1, 1, 0, 2]
    assert offsets == [0, 0, 4, 0, 5, 0]
    assert used == [6, 6, 4, 3]


@pytest.mark.parametrize("name, device, attention, expected", [
    ("auto", "cpu", "sdpa", Layout("packed", PACKED_ROW_WIDTH)),
    ("auto", "cpu", "eager", Layout("packed", PACKED_ROW_WIDTH)),
    ("auto", "cuda", "flash_attention_2", Layout("packed", None)),  # varlen kernel: one row
    ("auto", "cuda", "sdpa", PADDED),  # a materialised mask leaves sdpa's fused kernel: not measured
    ("packed", "cuda", "sdpa", Layout("packed", PACKED_ROW_WIDTH)),
    ("packed", "cuda", "flash_attention_3", Layout("packed", None)),
    ("padded", "cpu", "sdpa", PADDED),
])
def test_layout_selection(name, device, attention, expected):
    assert choose_layout(name, device, attention) == expected


def test_layout_resolution_for_a_model_and_bad_names(tokenizer):
    model = _model(tokenizer, "eager")
    assert resolve_layout("auto", model) == Layout("packed", PACKED_ROW_WIDTH)
    assert resolve_layout(PADDED, model) is PADDED
    with pytest.raises(ValueError, match="train.layout must be one of auto, packed, padded; got 'pakced'"):
        resolve_layout("pakced", model)
