"""marginal_context=chat (docs/design.md §4) against RMiPO's own extraction, on SmolLM2-135M-Instruct's real tokenizer
and chat template.

`authors_rows` below is a re-implementation, written for this test from a reading of their code (scripts/run_rmipo.py
`apply_chat_template`, task "simpo"; scripts/rmipo_trainer.py `build_tokenized_answer`, `tokenize_row`,
`concatenated_forward`, `get_batch_logps`): the strings they build, how they tokenise and truncate them, which
labels they mask, and the response-only rows they gather. The suite's conditional and response-only sequences and
their scored masks must equal it token by token, untruncated and truncated at the prompt and at the response.
One thing is not reproduced, and the test names it: on SmolLM2 their lone assistant-turn rendering would also
carry the default system turn the template inserts before a conversation's first message.
"""
from __future__ import annotations

import pytest

from bench.cache import DiskCache
from bench.data.encoding import ChatTurns, encode_pairs
from bench.methods import build_method
from bench.models import build_word_tokenizer, convert_gguf
from omegaconf import OmegaConf
from tests.conftest import CONF_DIR

IGNORE = -100  # their label_pad_token_id
# SmolLM2's template renders this before any conversation whose first message is not a system message.
DEFAULT_SYSTEM_TURN = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"

PAIRS = [  # (instruction, chosen, rejected): different lengths, so the pair's longer response matters
    ("Write one sentence about the sea, in lowercase.", "the sea is wide and calm today.", "The Sea!"),
    ("Name three fruits, separated by commas.", "apple, banana, cherry", "Apples and also some bananas, I think."),
    ("Answer with a single word: what colour is the sky?", "Blue.", "It is usually blue during the day."),
]


@pytest.fixture(scope="module")
def tokenizer(shared_cache):
    from transformers import AutoTokenizer

    gguf = OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/model/smollm2.yaml"))
    return AutoTokenizer.from_pretrained(convert_gguf(gguf, DiskCache(shared_cache)).path)


def authors_rows(tok, instruction: str, answers: tuple[str, str], max_length: int, max_prompt_length: int):
    """Per side (chosen, rejected): (input ids, labels, response-only input ids, response-only labels), as their
    code builds them (auto_insert_empty_system_msg=false: the prompt is the task's own rendering)."""
    prompt = tok.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False)
    sides = []
    for answer in answers:
        text = tok.apply_chat_template([{"role": "assistant", "content": answer}], tokenize=False)
        assert text.startswith(DEFAULT_SYSTEM_TURN)  # the template's insertion: the one thing not reproduced
        text = text[len(DEFAULT_SYSTEM_TURN):]
        if text.startswith(tok.bos_token):
            text = text[len(tok.bos_token):]
        whole = tok(prompt + text, add_special_tokens=False)["input_ids"]
        alone = tok(prompt, add_special_tokens=False)["input_ids"]
        cut = len(alone) - (alone != whole[: len(alone)])
        prompt_ids, answer_ids = whole[:cut], whole[cut:]
        if not prompt_ids or prompt_ids[0] != tok.bos_token_id:
            prompt_ids = [tok.bos_token_id] + prompt_ids
        if not answer_ids or answer_ids[-1] != tok.eos_token_id:
            answer_ids = answer_ids + [tok.eos_token_id]
        sides.append([prompt_ids, answer_ids])
    longest = max(len(a) for _, a in sides)
    for side in sides:  # keep_end (their default truncation_mode), then the response
        if len(side[0]) + longest > max_length:
            side[0] = side[0][-max_prompt_length:]
    for side in sides:
        if len(side[0]) + longest > max_length:
            side[1] = side[1][: max_length - max_prompt_length]
    rows = []
    for prompt_ids, answer_ids in sides:
        ids = prompt_ids + answer_ids
        labels = [IGNORE] * len(prompt_ids) + answer_ids
        start = next(i for i, label in enumerate(labels) if label != IGNORE)
        n = sum(label != IGNORE for label in labels)
        rows.append((ids, labels, ids[start:start + n], labels[start:start + n]))
    return rows


def scored(labels: list[int]) -> list[bool]:
    """Which tokens get_batch_logps scores: labels shifted by one, the ignored ones masked."""
    return [label != IGNORE for label in labels[1:]]


def prompt_and_longer(tok, i: int) -> tuple[int, int]:
    """(prompt tokens with BOS, longer response tokens with EOS) of PAIRS[i], untruncated."""
    rows = authors_rows(tok, PAIRS[i][0], PAIRS[i][1:], 10_000, 9_999)
    return len(rows[0][0]) - len(rows[0][2]), max(len(r[2]) for r in rows)


@pytest.mark.extra("smollm2")
@pytest.mark.parametrize("case", ["untruncated", "prompt_cut", "response_cut"])
def test_chat_sequences_equal_the_authors_extraction(tokenizer, case):
    for i, (instruction, chosen, rejected) in enumerate(PAIRS):
        n_prompt, longer = prompt_and_longer(tokenizer, i)
        max_prompt_length = 12
        max_length = {"untruncated": n_prompt + longer, "prompt_cut": n_prompt + longer - 1,
                      "response_cut": max_prompt_length + longer - 3}[case]
        # the prompt as the constraints task renders it: with the generation header
        record = {"prompt": tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                                          add_generation_prompt=True),
                  "chosen": chosen, "rejected": rejected}
        pairs, _, stats = encode_pairs([record], tokenizer, max_length, "test", turns=ChatTurns(tokenizer, max_prompt_length, max_length))
        expected = authors_rows(tokenizer, instruction, (chosen, rejected), max_length, max_prompt_length)
        marginal = pairs.marginal(tokenizer, max_length, "chat")
        for row, (ids, labels, response_ids, response_labels) in enumerate(expected):
            seqs = pairs.chosen if row == 0 else pairs.rejected
            width = int(seqs.attention_mask[0].sum())
            assert seqs.input_ids[0, :width].tolist() == ids
            assert seqs.response_mask[0, 1:width].bool().tolist() == scored(labels)
            m_width = int(marginal.attention_mask[row].sum())
            assert marginal.input_ids[row, :m_width].tolist() == response_ids
            assert marginal.response_mask[row, 1:m_width].bool().tolist() == scored(response_labels)
        # the response starts at the assistant header (BOS text "<|im_start|>" stripped, as theirs) and ends with
        # the end-of-turn text plus their EOS; the header is the response-only pass's context
        if case == "untruncated":
            assert tokenizer.decode(expected[0][2]) == f"assistant\n{chosen}<|im_end|>\n<|im_end|>"
        truncated = {"untruncated": 0, "prompt_cut": 2, "response_cut": 2}[case]
        assert stats["n_truncated"] == truncated
        if case == "prompt_cut":
            assert len(expected[0][0]) - len(expected[0][2]) == max_prompt_length
        if case == "response_cut":
            assert max(len(r[2]) for r in expected) == max_length - max_prompt_length


@pytest.mark.extra("smollm2")
def test_chat_refuses_a_prompt_without_the_generation_header(tokenizer):
    bare = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    with pytest.raises(ValueError, match=r"src row 7: field 'prompt' does not end with the chat template's generation"):
        encode_pairs([{"prompt": bare, "chosen": "a", "rejected": "b", "meta": {"row": 7}}], tokenizer, 64, "src",
                     turns=ChatTurns(tokenizer, 32, 64))


def test_chat_needs_a_chat_template_and_a_prompt_cap():
    words = build_word_tokenizer(["a", "b"])
    with pytest.raises(ValueError, match=r"method\.marginal_context=chat .* has none: use bos or authors"):
        ChatTurns(words, 4, 16)
    rmipo = {"name": "rmipo", "beta": 2.0, "g_min": 0.3, "g_max": 1.6, "margin_units": "ratio", "signal": "pmi",
             "marginal_context": "chat", "max_prompt_length": None}
    with pytest.raises(ValueError, match=r"method\.max_prompt_length must be a positive integer with method\.marginal_context=chat"):
        build_method(rmipo)
    needs = build_method({**rmipo, "max_prompt_length": 24}).needs
    assert (needs.marginal, needs.marginal_context, needs.max_prompt_length) == ("policy", "chat", 24)
    # the prompt cap is unused outside chat: it does not enter Needs (nor, through it, any cache key)
    assert build_method({**rmipo, "marginal_context": "bos", "max_prompt_length": 24}).needs.max_prompt_length is None
    words.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match=r"method\.max_prompt_length must be an integer in \[1, model\.max_length\)"):
        ChatTurns(words, 16, 16)
