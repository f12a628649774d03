"""Sampling responses from a causal LM (pair generation and evaluation).

Pure ancestral sampling at temperature 1 (top-k and top-p off — transformers' defaults would
truncate the distribution and bias the Monte-Carlo KL) or greedy decoding, via `model.generate`.
A sample that reaches the length cap without EOS is returned with `truncated=True`; it is scored
like any other, never dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.data.encoding import encode_text, with_boundary


@dataclass
class Sample:
    prompt: str
    response: str
    response_ids: list[int]  # without EOS
    truncated: bool  # hit the cap without emitting EOS


@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    greedy: bool = False,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[Sample]:
    """Samples for `prompts` (one each), in order. `device`: where the inputs go; None = the model's
    own device (so a caller that moved the model, e.g. a GPU reference building pairs, needs no flag)."""
    # here, not at the top: config validation imports this module's users and needs no transformers
    from transformers import GenerationConfig

    device = next(model.parameters()).device if device is None else device
    was_training = model.training
    model.eval()
    config = GenerationConfig(
        do_sample=not greedy,
        temperature=1.0,
        top_k=0,  # 0 = off; None would fall back to transformers' default of 50 (it warns that 0 "may be ignored": it is honoured)
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Sampling is reproducible given (model, prompts, seed) and leaves every device's RNG as it found it:
    # torch.manual_seed reseeds the CUDA generators too, so all of them are forked, not only the CPU's
    # (training and β-DPO draw from them between evaluations).
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        samples = _generate(model, tokenizer, prompts, config, batch_size, device)
    model.train(was_training)
    return samples


def _generate(model, tokenizer, prompts: list[str], config, batch_size: int, device) -> list[Sample]:
    samples: list[Sample] = []
    for first in range(0, len(prompts), batch_size):
        chunk = prompts[first : first + batch_size]
        encoded = [with_boundary(tokenizer, encode_text(tokenizer, p)) for p in chunk]
        width = max(len(e) for e in encoded)
        # left-pad so every prompt ends at the same position and generation continues all of them
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            input_ids[i, width - len(e) :] = torch.tensor(e)
            attention[i, width - len(e) :] = 1
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config
        )
        for prompt, row in zip(chunk, out[:, width:].tolist()):
            if tokenizer.eos_token_id in row:
                ids, truncated = row[: row.index(tokenizer.eos_token_id)], False
            else:
                ids, truncated = row, True
            text = tokenizer.decode(ids, skip_special_tokens=True)
            samples.append(Sample(prompt, text, ids, truncated))
    return samples
