"""The lm-eval bridge runs offline on a tiny in-memory Llama with a word-level tokenizer built from
the tasks' vocabularies, and its accuracies equal a brute-force scoring of the same items in the
trainer's encoding (<bos> + query + choice), whatever the tokenizer's post-processor adds. The
real-model task's items, rendered with a chat template by a byte-level BPE tokenizer, are scored in
the trainer's encoding too: one BOS (the template's own), the prompt's final newline kept."""
from __future__ import annotations

import json
import os
from pathlib import Path

# Nothing here may touch the network; set before lm-eval/datasets are imported by the tests.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from bench.data.tasks import TASKS, available_tasks, build_task
from bench.lm_eval_harness import flatten_results, run_lm_eval, write_local_tasks
from helpers import tiny_llama, word_tokenizer

N_ITEMS = 30


@pytest.fixture(scope="module")
def tasks():
    """The synthetic tasks: their words make up the word-level tokenizer."""
    return [build_task(name) for name in available_tasks() if not TASKS[name].requires_pretrained_model]


@pytest.fixture(scope="module")
def words(tasks):
    return [w for task in tasks for w in task.vocabulary]


@pytest.fixture(scope="module")
def tokenizer(words):
    return word_tokenizer(words)  # like the suite's: encode() adds no special tokens


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


@pytest.fixture(scope="module")
def local_tasks(tasks, tmp_path_factory):
    directory = tmp_path_factory.mktemp("lm_eval_tasks")
    names = [name for task in tasks for name in write_local_tasks(task, directory, N_ITEMS, seed=0)]
    return directory, names


@torch.no_grad()
def brute_force_accuracy(model, tokenizer, data_path: Path) -> tuple[float, float]:
    """acc and acc_norm (log-likelihood over choice length in characters), scored one choice at a
    time: the log-prob of the choice's tokens after <bos> + query."""

    def encode(text: str) -> list[int]:
        return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]

    correct = correct_norm = n = 0
    for line in data_path.read_text().splitlines():
        item = json.loads(line)
        context_len = len(encode(item["query"]))
        lls = []
        for choice in item["choices"]:
            ids = encode(f"{item['query']} {choice}")
            logps = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
            lls.append(sum(logps[t - 1, ids[t]].item() for t in range(context_len, len(ids))))
        normed = [ll / len(c) for ll, c in zip(lls, item["choices"])]
        correct += max(range(len(lls)), key=lls.__getitem__) == item["gold"]
        correct_norm += max(range(len(normed)), key=normed.__getitem__) == item["gold"]
        n += 1
    return correct / n, correct_norm / n


def test_write_local_tasks_writes_a_reproducible_multiple_choice_task(tasks, tmp_path):
    task = tasks[0]
    names = write_local_tasks(task, tmp_path / "a", 10, seed=3)
    again = write_local_tasks(task, tmp_path / "b", 10, seed=3)
    assert names == again == [f"imibench_{task.name}"]
    data_a, data_b = (tmp_path / d / f"{names[0]}.jsonl" for d in ("a", "b"))
    assert data_a.read_text() == data_b.read_text()
    config = yaml.safe_load((tmp_path / "a" / f"{names[0]}.yaml").read_text())
    assert config["task"] == names[0]
    assert config["dataset_path"] == "json"
    assert config["dataset_kwargs"]["data_files"]["test"] == str(data_a.resolve())
    assert config["output_type"] == "multiple_choice"
    assert config["target_delimiter"] == " "
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]
    items = [json.loads(line) for line in data_a.read_text().splitlines()]
    assert len(items) == 10 and all(set(i) == {"query", "choices", "gold"} for i in items)


@pytest.mark.parametrize(
    "post_processor, boundary_token",
    [(None, True), ("bos", True), ("bos_eos", True), ("bos", False)],
)
def test_run_lm_eval_offline_matches_brute_force(model, words, local_tasks, post_processor, boundary_token):
    """With the boundary encoding the tokenizer's post-processor does not matter; without it, a
    tokenizer that adds <bos> itself gives the same scores."""
    directory, names = local_tasks
    assert names == ["imibench_arithmetic", "imibench_sentiment", "imibench_verbosity"]
    tokenizer = word_tokenizer(words, post_processor)
    model.train()
    metrics = run_lm_eval(
        model, tokenizer, names, include_path=directory, batch_size=8, device="cpu", boundary_token=boundary_token
    )
    assert model.training, "run_lm_eval must restore the model's train mode"
    for name in names:
        for metric in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr"):
            assert 0.0 <= metrics[f"lm_eval/{name}/{metric}"] <= 1.0
        acc, acc_norm = brute_force_accuracy(model, tokenizer, directory / f"{name}.jsonl")
        assert metrics[f"lm_eval/{name}/acc"] == pytest.approx(acc)
        assert metrics[f"lm_eval/{name}/acc_norm"] == pytest.approx(acc_norm)
    assert all(key.startswith("lm_eval/") for key in metrics)


def test_run_lm_eval_limit(model, tokenizer, local_tasks):
    directory, names = local_tasks
    metrics = run_lm_eval(model, tokenizer, names[:1], include_path=directory, limit=4)
    # With 4 items accuracy is a multiple of 1/4.
    assert (metrics[f"lm_eval/{names[0]}/acc"] * 4) % 1 == 0


@pytest.mark.parametrize("boundary_token", [True, False])
def test_run_lm_eval_is_quiet_unless_asked_and_restores_the_libraries_settings(model, words, local_tasks, capfd,
                                                                              boundary_token):
    """Without show_progress: no lm-eval warning (it warns on every in-memory model), no datasets bar, no
    scoring bar; with it, the scoring bars show. lm-eval's log level and datasets' bar setting come back."""
    import logging

    import datasets

    directory, names = local_tasks
    tokenizer = word_tokenizer(words, None if boundary_token else "bos")
    lm_eval_logger = logging.getLogger("lm_eval")
    level, bars = lm_eval_logger.level, datasets.is_progress_bar_enabled()
    capfd.readouterr()
    run_lm_eval(model, tokenizer, names[:1], include_path=directory, limit=4, boundary_token=boundary_token)
    quiet = capfd.readouterr().err
    for noise in ("pretrained", "Generating test split", "Tokenizing inputs", "Running loglikelihood requests"):
        assert noise not in quiet, noise
    assert (lm_eval_logger.level, datasets.is_progress_bar_enabled()) == (level, bars)
    run_lm_eval(model, tokenizer, names[:1], include_path=directory, limit=4, boundary_token=boundary_token,
                show_progress=True)
    assert "Running loglikelihood requests" in capfd.readouterr().err
    assert (lm_eval_logger.level, datasets.is_progress_bar_enabled()) == (level, bars)


def test_without_boundary_encoding_a_tokenizer_that_appends_eos_is_refused(model, words, local_tasks):
    directory, names = local_tasks
    with pytest.raises(ValueError, match="EOS"):
        run_lm_eval(model, word_tokenizer(words, "bos_eos"), names, include_path=directory, boundary_token=False)


@pytest.mark.slow  # indexes lm-eval's own ~thousands of task configs: ~10 s on 2 cores
def test_run_lm_eval_unknown_task_is_named(model, tokenizer, local_tasks):
    """A name not in include_path is looked up among lm-eval's own tasks (include_defaults=True)."""
    directory, _ = local_tasks
    with pytest.raises(ValueError, match="imibench_nope"):
        run_lm_eval(model, tokenizer, ["imibench_nope"], include_path=directory)


def test_run_lm_eval_checks_the_device(model, tokenizer, local_tasks):
    directory, names = local_tasks
    with pytest.raises(ValueError, match="device"):
        run_lm_eval(model, tokenizer, names, include_path=directory, device="cuda")


def test_flatten_results_by_hand():
    results = {
        "imibench_arithmetic": {"alias": "imibench_arithmetic", "acc,none": 0.5, "acc_stderr,none": 0.1},
        "gsm8k": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A"},
    }
    assert flatten_results(results) == {
        "lm_eval/imibench_arithmetic/acc": 0.5,
        "lm_eval/imibench_arithmetic/acc_stderr": 0.1,
        "lm_eval/gsm8k/exact_match_strict-match": 0.25,
    }


# --------------------------------------------------------------------------- a chat-template task

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def chat_tokenizer():
    """A byte-level BPE trained here on the constraints task's own texts, with SmolLM2's conventions:
    BOS = <|im_start|>, EOS = <|im_end|>, a chat template that renders the BOS itself."""
    task = build_task("constraints")
    rng = __import__("random").Random(0)
    texts = []
    for item in task.multiple_choice_items(rng, 40):
        texts += [item["query"], *item["choices"]]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_chat_task_items_are_scored_in_the_trainers_encoding(chat_tokenizer, tmp_path):
    tokenizer = chat_tokenizer
    task = build_task("constraints")
    task.bind_tokenizer(tokenizer)
    names = write_local_tasks(task, tmp_path, 12, seed=1)
    assert yaml.safe_load((tmp_path / f"{names[0]}.yaml").read_text())["target_delimiter"] == ""
    model = tiny_llama(tokenizer, max_position_embeddings=512)
    metrics = run_lm_eval(model, tokenizer, names, include_path=tmp_path, batch_size=4, device="cpu")

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    from bench.lm_eval_harness import _lm_class

    lm = _lm_class(boundary_token=True)(pretrained=model, tokenizer=tokenizer, batch_size=1, device="cpu")
    correct = n = 0
    with torch.no_grad():
        for line in (tmp_path / f"{names[0]}.jsonl").read_text().splitlines():
            item = json.loads(line)
            prompt = encode(item["query"])  # the trainer's prompt: the template's own BOS, nothing added
            assert prompt.count(tokenizer.bos_token_id) == 2 and prompt[0] == tokenizer.bos_token_id
            assert item["query"].endswith("assistant\n")
            # exactly the (prompt, response) token split the trainer scores
            assert lm._encode_pair(item["query"], item["choices"][0]) == (prompt, encode(item["choices"][0]))
            lls = []
            for choice in item["choices"]:
                ids = prompt + encode(choice)
                logps = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
                lls.append(sum(logps[t - 1, ids[t]].item() for t in range(len(prompt), len(ids))))
            correct += max(range(len(lls)), key=lls.__getitem__) == item["gold"]
            n += 1
    assert metrics[f"lm_eval/{names[0]}/acc"] == pytest.approx(correct / n)


# --------------------------------------------------------------------------- scoring each context once

def _requests(pairs):
    from lm_eval.api.instance import Instance

    return [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0) for pair in pairs]


def _greedy_text(model, tokenizer, lm, context: str, n_tokens: int, delimiter: str = " ") -> str:
    """The model's greedy continuation of `context` in the LM's encoding, as text that (after `delimiter`)
    encodes back to it."""
    ids = lm._encode_pair(context, "x")[0]
    new = []
    with torch.no_grad():
        for _ in range(n_tokens):
            new.append(int(model(torch.tensor([ids + new])).logits[0, -1].argmax()))
    text = delimiter + tokenizer.decode(new)
    assert lm._encode_pair(context, text)[1] == new, "the greedy tokens must encode back to themselves"
    return text


def _lm_eval_own_scores(lm, pairs):
    """The scores of lm-eval's own HFLM path (one forward per request) for the same requests."""
    lm.shared_context_scoring = False
    try:
        return lm.loglikelihood(_requests(pairs))
    finally:
        lm.shared_context_scoring = True


def _assert_same_scores(ours, theirs, tol=1e-4):
    assert len(ours) == len(theirs)
    for i, ((ll, greedy), (ll_ref, greedy_ref)) in enumerate(zip(ours, theirs)):
        assert abs(ll - ll_ref) <= tol, (i, ll, ll_ref)
        assert greedy == greedy_ref, (i, greedy, greedy_ref)


@pytest.mark.parametrize("boundary_token", [True, False])
def test_each_context_is_computed_once_and_scores_equal_lm_evals_own(model, words, local_tasks, boundary_token):
    """Contexts with one and with four continuations of different lengths, interleaved and repeated, one
    request lm-eval truncates (its own path scores it): the same (log-likelihood, is_greedy) as lm-eval's
    HFLM, in request order; each distinct context runs once (batch 1, after the common prefix) and its
    continuations in batches of `batch_size`."""
    from bench.lm_eval_harness import _lm_class

    directory, names = local_tasks
    tokenizer = word_tokenizer(words, None if boundary_token else "bos")
    queries = [json.loads(line)["query"] for line in (directory / f"{names[0]}.jsonl").read_text().splitlines()[:3]]
    lm = _lm_class(boundary_token)(pretrained=model.eval(), tokenizer=tokenizer, batch_size=2, device="cpu")
    a, b, c = queries
    greedy_a, greedy_b = _greedy_text(model, tokenizer, lm, a, 1), _greedy_text(model, tokenizer, lm, b, 3)
    long_context = " ".join(words[:5] * 14)  # 70 words: over the model's 64 positions
    pairs = [(a, " yes"), (b, greedy_b), (a, " the answer is no"), (c, " maybe so"), (a, greedy_a),
             (b, " no"), (long_context, " yes"), (a, " yes"), (a, " not at all")]
    assert all(len(lm._encode_pair(*p)[0]) + len(lm._encode_pair(*p)[1]) <= lm.max_length + 1 for p in pairs[:6])
    assert len(lm._encode_pair(*pairs[6])[0]) > lm.max_length

    shapes = []  # of every forward's input_ids (lm-eval passes them positionally, the suite's path by name)
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: shapes.append(tuple((args[0] if args else kwargs["input_ids"]).shape)),
        with_kwargs=True)
    try:
        ours = lm.loglikelihood(_requests(pairs))
    finally:
        hook.remove()
    theirs = _lm_eval_own_scores(lm, pairs)
    _assert_same_scores(ours, theirs)
    assert ours[1][1] and ours[4][1], "the greedy continuations are flagged greedy"
    assert not all(greedy for _, greedy in ours)
    assert ours[0] == ours[7]  # a repeated request: the same answer

    # the forwards of the suite's path, computed by hand: lm-eval's own for the truncated request (one
    # row of max_length tokens), the prefix the three contexts share, each context's own tokens once,
    # then its continuations minus their last token, right-padded, `batch_size` (2) at a time
    contexts = {a: [], b: [], c: []}
    for context, continuation in pairs[:6] + pairs[7:]:
        contexts[context].append(lm._encode_pair(context, continuation)[1])
    encoded = [lm._encode_pair(q, "x")[0] for q in (a, b, c)]
    prefix = min(len(os.path.commonprefix(encoded)), min(len(e) for e in encoded) - 1)
    expected = [(1, lm.max_length)] + ([(1, prefix)] if prefix else [])
    for context, enc in zip((a, b, c), encoded):
        expected.append((1, len(enc) - prefix))
        conts = contexts[context]
        for start in range(0, len(conts), 2):
            batch = conts[start:start + 2]
            if max(len(t) for t in batch) > 1:
                expected.append((len(batch), max(len(t) for t in batch) - 1))
    assert shapes[:len(expected)] == expected


@pytest.mark.slow  # SmolLM2-135M on CPU: ~10 s on one core
@pytest.mark.extra("smollm2")
def test_smollm2_constraints_items_score_as_lm_evals_own():
    """The real-model lane's items (chat-rendered query, three answers each) and greedy answers of one
    and of three tokens, interleaved: the same (log-likelihood, is_greedy) as lm-eval's HFLM, within 1e-4."""
    import random

    from bench.benchmark.real_model import load_smollm2
    from bench.lm_eval_harness import _lm_class

    model, tokenizer, _ = load_smollm2(os.environ.get("IMI_BENCH_CACHE", ".cache/imi-bench"))
    model.eval()
    task = build_task("constraints")
    task.bind_tokenizer(tokenizer)
    items = task.multiple_choice_items(random.Random(0), 3)
    lm = _lm_class(boundary_token=True)(pretrained=model, tokenizer=tokenizer, batch_size=2, device="cpu")
    pairs = [(item["query"], choice) for choice_index in range(3) for item in items
             for choice in item["choices"][choice_index:choice_index + 1]]
    pairs.insert(1, (items[0]["query"], _greedy_text(model, tokenizer, lm, items[0]["query"], 3, delimiter="")))
    pairs.append((items[2]["query"], _greedy_text(model, tokenizer, lm, items[2]["query"], 1, delimiter="")))
    ours = lm.loglikelihood(_requests(pairs))
    _assert_same_scores(ours, _lm_eval_own_scores(lm, pairs))
    assert ours[1][1] and ours[-1][1] and not ours[0][1]
