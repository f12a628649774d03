"""Token-level conventions: which tokens are scored, truncation, and log-probs against a manual sum."""
import pytest
import torch

from bench.data.encoding import encode_pairs
from bench.logps import score_all, sequence_logps
from bench.models import build_tiny_model, build_word_tokenizer

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_length=16)


@pytest.fixture
def tokenizer():
    return build_word_tokenizer(["a", "b", "c", "d", "="])


def test_pairs_score_response_and_eos_only(tokenizer):
    pairs, kept, stats = encode_pairs([{"prompt": "a b =", "chosen": "c", "rejected": "d d"}], tokenizer, 16, "fixture")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids = tokenizer.convert_tokens_to_ids(["a", "b", "=", "c", "d"])
    assert pairs.chosen.input_ids[0, :6].tolist() == [bos, ids[0], ids[1], ids[2], ids[3], eos]
    assert pairs.chosen.response_mask[0, :6].tolist() == [0, 0, 0, 0, 1, 1]
    assert pairs.rejected.response_mask[0, :7].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert pairs.both().token_counts().tolist() == [2.0, 3.0]
    assert stats["n_kept"] == 1 and stats["n_truncated"] == 0


def test_overlong_prompt_errors_with_row_and_field_or_drops(tokenizer):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a " * 20, "chosen": "b", "rejected": "c"}]
    with pytest.raises(ValueError, match=r"fixture row 1: field 'prompt' is over-long"):
        encode_pairs(rows, tokenizer, 8, "fixture")
    _, kept, stats = encode_pairs(rows, tokenizer, 8, "fixture", on_bad_row="drop")
    assert len(kept) == 1 and stats["dropped"]["over_long"] == 1


def test_truncated_response_loses_eos_and_is_counted(tokenizer):
    pairs, _, stats = encode_pairs([{"prompt": "a", "chosen": "b b b b b b", "rejected": "c"}], tokenizer, 6, "fixture")
    assert tokenizer.eos_token_id not in pairs.chosen.input_ids[0].tolist()
    assert stats["n_truncated"] == 1


def test_marginal_contexts(tokenizer):
    """The response-only pass scores the conditional sequence's response tokens (EOS included when it
    survived): after a BOS every one ("bos"), or alone with the first unscored ("authors")."""
    pairs, _, _ = encode_pairs([{"prompt": "a =", "chosen": "b b", "rejected": "c"}], tokenizer, 16, "fixture")
    b, c = tokenizer.convert_tokens_to_ids(["b", "c"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    marginal = pairs.marginal(tokenizer, 16, "bos")
    assert marginal.input_ids[0, :4].tolist() == [bos, b, b, eos] and marginal.response_mask[0, :4].tolist() == [0, 1, 1, 1]
    assert marginal.input_ids[1, :3].tolist() == [bos, c, eos]
    marginal = pairs.marginal(tokenizer, 16, "authors")
    assert marginal.input_ids[0, :3].tolist() == [b, b, eos]
    assert marginal.response_mask[0, :3].tolist() == [0, 1, 1]  # first token has no context: unscored
    assert marginal.token_counts().tolist() == [2.0, 1.0]


def test_a_prompt_that_starts_with_bos_is_not_counted_as_truncated(tokenizer):
    """Chat templates render their own BOS: the sequence then has no added boundary token, and an
    untruncated pair must not be counted as truncated for it."""
    bos = tokenizer.bos_token
    pairs, _, stats = encode_pairs([{"prompt": f"{bos} a =", "chosen": "b", "rejected": "c c"}], tokenizer, 16, "fixture")
    assert pairs.chosen.input_ids[0].tolist().count(tokenizer.bos_token_id) == 1
    assert stats["n_truncated"] == 0
    _, _, stats = encode_pairs([{"prompt": f"{bos} a =", "chosen": "b", "rejected": "c c"}], tokenizer, 5, "fixture")
    assert stats["n_truncated"] == 1  # [bos a = c c eos] is 6 tokens


def test_sequence_logps_equals_manual_sum(tokenizer):
    torch.manual_seed(0)
    model = build_tiny_model(TINY, tokenizer)
    pairs, _, _ = encode_pairs([{"prompt": "a b =", "chosen": "c", "rejected": "d d"}], tokenizer, 16, "fixture")
    both = pairs.both()
    sums, counts = sequence_logps(model, both)
    logits = model(input_ids=both.input_ids, attention_mask=both.attention_mask).logits
    for row in range(2):
        manual = 0.0
        for t in range(1, both.input_ids.shape[1]):
            if both.response_mask[row, t]:
                manual += torch.log_softmax(logits[row, t - 1], -1)[both.input_ids[row, t]].item()
        assert sums[row].item() == pytest.approx(manual, abs=1e-5)
    no_grad_sums, _ = score_all(model, both, batch_size=1)
    torch.testing.assert_close(no_grad_sums, sums.detach(), atol=1e-5, rtol=0)
    assert counts.tolist() == [2.0, 3.0]
