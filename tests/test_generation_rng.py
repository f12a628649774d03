"""Sampling leaves the global random state of every device as it found it (docs/design.md §14): evaluation between
training steps must not move the stream that training and β-DPO draw from."""
from __future__ import annotations

import torch

from bench.data.tasks import build_task
from bench.generation import sample_responses
from bench.models import build_tiny_model, build_word_tokenizer


def _cuda_states():
    return [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []


def test_sampling_restores_every_rng_and_is_reproducible():
    task = build_task("verbosity")
    tokenizer = build_word_tokenizer(task.vocabulary)
    torch.manual_seed(0)
    model = build_tiny_model({"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                              "max_length": 32}, tokenizer)
    prompts = ["largest of 3 7 2", "largest of 1 9 4 4"]
    torch.manual_seed(123)
    cpu, cuda = torch.get_rng_state().clone(), _cuda_states()
    first = sample_responses(model, tokenizer, prompts, 6, seed=5)
    assert torch.equal(torch.get_rng_state(), cpu)
    assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all() if cuda else [], cuda))
    expected_next = torch.rand(3)  # what the caller draws next is what it would have drawn without sampling
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), expected_next)
    again = sample_responses(model, tokenizer, prompts, 6, seed=5)
    assert [s.response_ids for s in again] == [s.response_ids for s in first]
