"""The KV-cache sampler (bench.generation, docs/design.md §7): greedy answers are transformers' `generate`
token for token, samples follow the model's own distribution (chi-square against softmax probabilities
computed without a cache), seeds reproduce, sets sampled together equal the sets sampled alone, and no
global RNG moves. The real SmolLM2 checks need the smollm2 extra and its converted model."""
from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from scipy.stats import chisquare
from transformers import LlamaConfig, LlamaForCausalLM

from bench.data.encoding import encode_text, with_boundary
from bench.generation import generate_responses, sample_responses, sample_sets
from bench.models import build_word_tokenizer

WORDS = ["a", "b", "c", "d", "="]
# prompts of different lengths with a common start: the prefix is shared, the rest left-padded
PROMPTS = ["a b =", "c =", "a b c d a =", "d d =", "a =", "b c d =", "a b c =", "c c c c c c ="]


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def llama(tokenizer):
    """A tiny random Llama whose greedy answers to PROMPTS end at 3 to 7 tokens or hit a cap of 12 (this
    seed and logit scale were picked for that), so rows leave the batch at different steps."""
    torch.manual_seed(38)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    return model.eval()


def _ids(samples):
    return [(s.response_ids, s.truncated) for s in samples]


def test_greedy_answers_are_generate_token_for_token(llama, tokenizer):
    ours = sample_responses(llama, tokenizer, PROMPTS, 12, greedy=True)
    assert _ids(ours) == _ids(generate_responses(llama, tokenizer, PROMPTS, 12, greedy=True))
    # both ways of ending, at several steps, are exercised
    assert {s.truncated for s in ours} == {True, False} and len({len(s.response_ids) for s in ours}) >= 4
    assert [s.response for s in ours] == [tokenizer.decode(s.response_ids, skip_special_tokens=True) for s in ours]
    # chunked into batches of 3 prompts: the same answers
    assert _ids(sample_responses(llama, tokenizer, PROMPTS, 12, greedy=True, batch_size=3)) == _ids(ours)


def test_greedy_through_a_peft_model_is_generate(llama, tokenizer):
    peft = pytest.importorskip("peft")
    wrapped = peft.get_peft_model(LlamaForCausalLM(llama.config), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    wrapped.base_model.model.load_state_dict(llama.state_dict(), strict=False)
    wrapped.eval()
    assert _ids(sample_responses(wrapped, tokenizer, PROMPTS, 8, greedy=True)) == \
        _ids(generate_responses(wrapped, tokenizer, PROMPTS, 8, greedy=True))


def _outcome_probabilities(model, tokenizer, prompt: str, temperature: float = 1.0) -> dict[tuple, float]:
    """Exact probabilities of every 2-token outcome (EOS first, a then EOS, or a b truncated), from
    full forward passes without a cache, at `temperature`."""
    eos = tokenizer.eos_token_id
    prefix = with_boundary(tokenizer, encode_text(tokenizer, prompt))
    with torch.no_grad():
        first = torch.softmax(model(torch.tensor([prefix])).logits[0, -1].double() / temperature, -1)
        out = {((), False): first[eos].item()}
        for a in range(len(first)):
            if a == eos or first[a] == 0:
                continue
            second = torch.softmax(model(torch.tensor([prefix + [a]])).logits[0, -1].double() / temperature, -1)
            for b in range(len(second)):
                key = ((a,), False) if b == eos else ((a, b), True)
                out[key] = out.get(key, 0.0) + (first[a] * second[b]).item()
    return out


def test_samples_follow_the_model_distribution(tokenizer):
    """4,000 two-token samples of one prompt against the exact outcome probabilities: a chi-square test
    (cells with expected count < 5 pooled). The decode step after the prefill is checked, not only the first token."""
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # far from uniform: some outcomes common, some rare
        model.lm_head.weight.mul_(30.0)
    prompt, n = "a b =", 4000
    # other prompts around it: their rows share the batch and leave it at other steps
    prompts = [prompt if i % 2 == 0 else "c d d =" for i in range(2 * n)]
    samples = sample_responses(model, tokenizer, prompts, 2, seed=11)[::2]
    counts = Counter((tuple(s.response_ids), s.truncated) for s in samples)

    def pvalue(probs: dict) -> float:
        assert set(counts) <= set(probs)
        expected = {k: p * n for k, p in probs.items()}
        big = sorted(k for k in expected if expected[k] >= 5)
        small = [k for k in expected if expected[k] < 5]
        assert len(big) >= 10
        pooled = [small] if small else []  # one cell for the rare outcomes, if any
        observed = [counts[k] for k in big] + [sum(counts[k] for k in cell) for cell in pooled]
        wanted = [expected[k] for k in big] + [sum(expected[k] for k in cell) for cell in pooled]
        return chisquare(observed, wanted).pvalue

    assert pvalue(_outcome_probabilities(model, tokenizer, prompt)) > 1e-3
    # the test has power: the same draws are rejected against the model at temperature 0.8
    assert pvalue(_outcome_probabilities(model, tokenizer, prompt, temperature=0.8)) < 1e-6


def test_seeds_reproduce_and_differ(llama, tokenizer):
    first = sample_responses(llama, tokenizer, PROMPTS, 10, seed=5)
    assert _ids(sample_responses(llama, tokenizer, PROMPTS, 10, seed=5)) == _ids(first)
    assert _ids(sample_responses(llama, tokenizer, PROMPTS, 10, seed=6)) != _ids(first)
    # a prompt's sample does not depend on the batch around it: chunks of 3 prompts give the same
    assert _ids(sample_responses(llama, tokenizer, PROMPTS, 10, seed=5, batch_size=3)) == _ids(first)


def test_sets_sampled_together_equal_the_sets_alone(llama, tokenizer):
    sampled, greedy, other = sample_sets(llama, tokenizer, PROMPTS, 10, [5, None, 9])
    assert _ids(sampled) == _ids(sample_responses(llama, tokenizer, PROMPTS, 10, seed=5))
    assert _ids(greedy) == _ids(sample_responses(llama, tokenizer, PROMPTS, 10, greedy=True))
    assert _ids(other) == _ids(sample_responses(llama, tokenizer, PROMPTS, 10, seed=9))
    # batch_size counts rows: 7 rows are 2 prompts of 3 sets per chunk, and the answers stay the same
    assert [_ids(x) for x in sample_sets(llama, tokenizer, PROMPTS, 10, [5, None, 9], batch_size=7)] == \
        [_ids(sampled), _ids(greedy), _ids(other)]


def test_sampling_moves_no_global_rng_and_keeps_the_training_mode(llama, tokenizer):
    llama.train()
    torch.manual_seed(123)
    state = torch.get_rng_state().clone()
    sample_responses(llama, tokenizer, PROMPTS, 6, seed=5)
    assert torch.equal(torch.get_rng_state(), state) and llama.training
    llama.eval()


def test_bad_arguments_are_named(llama, tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_responses(llama, tokenizer, PROMPTS, 0)
    with pytest.raises(ValueError, match="seeds"):
        sample_sets(llama, tokenizer, PROMPTS, 4, [])


@pytest.fixture(scope="module")
def smollm2():
    from tests.conftest import missing_extra

    problem = missing_extra("smollm2")
    if problem:
        pytest.skip(problem)
    import os

    from bench.benchmark.real_model import load_smollm2
    from bench.data.tasks import build_task

    model, tokenizer, _ = load_smollm2(os.environ.get("IMI_BENCH_CACHE", ".cache/imi-bench"))
    task = build_task("constraints")
    task.bind_tokenizer(tokenizer)
    rng = random.Random(0)
    return model.eval(), tokenizer, [task.sample_prompt(rng) for _ in range(6)]


@pytest.mark.slow
@pytest.mark.extra("smollm2")
def test_smollm2_greedy_is_generate_and_samples_reproduce(smollm2):
    model, tokenizer, prompts = smollm2
    ours = sample_responses(model, tokenizer, prompts, 24, greedy=True)
    assert _ids(ours) == _ids(generate_responses(model, tokenizer, prompts, 24, greedy=True))
    sampled, greedy = sample_sets(model, tokenizer, prompts, 24, [3, None])
    assert _ids(greedy) == _ids(ours)
    assert _ids(sampled) == _ids(sample_responses(model, tokenizer, prompts, 24, seed=3))


def test_the_sampling_benchmark_draws_the_same_sets_on_both_paths(llama, tokenizer):
    """What python -m bench.benchmark.sampling times: each path draws every set of a case, generate set by set
    and the decode loop in one call; greedy answers agree, and a disagreement would be reported."""
    from bench.benchmark.sampling import CASES, _greedy_identical, draw, timed

    runs = []
    for path in ("generate", "decode_loop"):
        result = timed(path, llama, tokenizer, PROMPTS, 10, CASES["evaluation"], seed=4)
        sets = draw(path, llama, tokenizer, PROMPTS, 10, CASES["evaluation"], seed=4)  # seeded: the same draw
        assert len(sets) == 2 and result["tokens"] == sum(len(s.response_ids) for x in sets for s in x)
        assert result["tokens_per_s"] > 0 and len(result["greedy_ids"]) == 1
        runs.append({"case": "evaluation", "path": path, **result})
    assert _greedy_identical(runs)
    runs[1]["greedy_ids"] = [[ids + [0] for ids in runs[1]["greedy_ids"][0]]]
    assert not _greedy_identical(runs)


def test_non_finite_logits_are_an_error_when_sampling(tokenizer):
    """A diverged model's logits are no distribution: sampling fails (ValidationCurve then records NaN), as
    generate's multinomial does."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="not finite"):
        sample_responses(model, tokenizer, PROMPTS, 4, seed=1)
