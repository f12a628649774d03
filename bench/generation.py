"""Sampling responses from a causal LM (pair generation and evaluation).

Pure ancestral sampling at temperature 1 (top-k and top-p off: truncating the distribution would bias the
Monte-Carlo KL) or greedy decoding, by a KV-cache decode loop (docs/design.md §7, "Sampling"): the prompts'
common prefix (the chat template's system turn) is computed once, sets that sample the same prompts (a
sample and a greedy answer) share one prefill, finished rows leave the batch, and a token is drawn by
inverse CDF from one pre-drawn uniform per (prompt, position) of the set's own generator, so a sample
depends on its model, prompt, seed and row only, never on the batch around it. `generate_responses`
is the same contract through transformers' `model.generate`, kept as the reference the loop is tested
and benchmarked against. A sample that reaches the length cap without EOS is returned with
`truncated=True`; it is scored like any other, never dropped.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch

from bench.data.encoding import encode_text, with_boundary


@dataclass
class Sample:
    prompt: str
    response: str
    response_ids: list[int]  # without EOS
    truncated: bool  # hit the cap without emitting EOS


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
    return sample_sets(model, tokenizer, prompts, max_new_tokens, [None if greedy else seed], batch_size, device)[0]


@torch.no_grad()
def sample_sets(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    seeds: Sequence[int | None],
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> list[list[Sample]]:
    """One list of samples of `prompts` per entry of `seeds`: temperature-1 samples drawn with that seed,
    or greedy answers for None. The sets share each prompt's prefill; each set's samples are the ones
    `sample_responses` gives alone with the same seed (up to float rounding of the batched matmuls).
    `batch_size`: rows decoded together, one per (set, prompt): batch_size // len(seeds) prompts at a time,
    so the KV cache holds as many rows as one set of `batch_size` prompts would."""
    if max_new_tokens < 1:
        raise ValueError(f"sampling: max_new_tokens must be >= 1, got {max_new_tokens}")
    if not seeds:
        raise ValueError("sampling: seeds must name at least one set (an int seed, or None for greedy)")
    device = next(model.parameters()).device if device is None else device
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("sampling: the tokenizer has no eos_token_id, so no answer could end")
    encoded = [with_boundary(tokenizer, encode_text(tokenizer, p)) for p in prompts]
    # One uniform per (prompt, position) from each set's own generator, drawn up front: the global RNGs
    # are never touched (training and β-DPO draw from them between evaluations), and prompt i's sample
    # does not depend on which other prompts share its batch or when they finish.
    uniforms = [None if s is None else
                torch.rand((len(prompts), max_new_tokens), generator=torch.Generator().manual_seed(int(s)),
                           dtype=torch.float64)
                for s in seeds]
    forward = _Forward(model)
    was_training = model.training
    model.eval()
    out: list[list[Sample]] = [[] for _ in seeds]
    per_chunk = max(1, batch_size // len(seeds))
    try:
        for first in range(0, len(prompts), per_chunk):
            chunk = slice(first, first + per_chunk)
            rows = _decode(forward, encoded[chunk], [None if u is None else u[chunk] for u in uniforms],
                           max_new_tokens, eos, device)
            for s, set_rows in enumerate(rows):
                for prompt, (ids, truncated) in zip(prompts[chunk], set_rows):
                    out[s].append(Sample(prompt, tokenizer.decode(ids, skip_special_tokens=True), ids, truncated))
    finally:
        model.train(was_training)
    return out


class _Forward:
    """One forward pass returning the last position's logits (float32) and the KV cache, whatever the
    installed transformers calls its arguments (`cache` from 5.x, `past_key_values` before; logits of
    the last position only through `logits_to_keep`/`num_logits_to_keep` where the model has it)."""

    def __init__(self, model):
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model
        params = inspect.signature(base.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.keep_arg = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)

    def __call__(self, input_ids, attention_mask, position_ids, cache):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                  "use_cache": True}
        if cache is not None:
            kwargs[self.cache_arg] = cache
        if self.keep_arg is not None:
            kwargs[self.keep_arg] = 1
        output = self.model(**kwargs)
        cache = output.cache if "cache" in output else output.past_key_values
        if isinstance(cache, tuple):  # a legacy per-layer tuple (older models): rows are selected on a Cache
            from transformers import DynamicCache

            cache = DynamicCache.from_legacy_cache(cache)
        return output.logits[:, -1].float(), cache


def _common_prefix(encoded: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one of its own (whose logits start its answer)."""
    limit = min(len(e) for e in encoded) - 1
    n = 0
    while n < limit and all(e[n] == encoded[0][n] for e in encoded):
        n += 1
    return n


def _prefill(forward, encoded: list[list[int]], device):
    """The prompts' KV cache, last-position logits [n, V], attention mask and next positions. The common
    prefix runs once (batch 1) and is copied to every row; each row's own tokens follow it, left-padded,
    with positions counted from the prefix on, so every row sees exactly its own prompt: its positions
    and unmasked keys are those of the prompt run alone."""
    n, prefix = len(encoded), _common_prefix(encoded)
    cache = None
    if prefix:
        ids = torch.tensor([encoded[0][:prefix]], device=device)
        _, cache = forward(ids, torch.ones_like(ids), torch.arange(prefix, device=device)[None], None)
        cache.batch_select_indices(torch.zeros(n, dtype=torch.long, device=device))
    rest = [e[prefix:] for e in encoded]
    width = max(len(r) for r in rest)
    ids = torch.zeros((n, width), dtype=torch.long)  # pad positions are masked: any id does
    own = torch.zeros((n, width), dtype=torch.long)
    for i, r in enumerate(rest):
        ids[i, width - len(r):] = torch.tensor(r)
        own[i, width - len(r):] = 1
    positions = (prefix + own.cumsum(-1) - 1).clamp(min=prefix)
    mask = torch.cat([torch.ones((n, prefix), dtype=torch.long), own], dim=1).to(device)
    logits, cache = forward(ids.to(device), mask, positions.to(device), cache)
    return cache, logits, mask, positions[:, -1].to(device) + 1


def _next_tokens(logits: torch.Tensor, uniforms: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """Greedy rows: the argmax (the first on ties, as transformers). Sampled rows: the token whose
    interval of the cumulative distribution (in float64) holds u·total — exactly softmax(logits)."""
    tokens = logits.argmax(dim=-1)
    if sampled.any():
        rows = sampled.nonzero().squeeze(1)
        chosen = logits[rows]
        weights = torch.exp(chosen - chosen.max(dim=-1, keepdim=True).values)
        cdf = weights.double().cumsum(dim=-1)
        if not torch.isfinite(cdf[:, -1]).all():  # NaN or +inf logits: a diverged model (as generate, an error)
            raise RuntimeError("sampling: the model's logits are not finite, so they are no distribution to sample")
        # right=True: a token of probability 0 owns an empty interval and is never drawn
        index = torch.searchsorted(cdf, (uniforms[rows] * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
        tokens[rows] = index.clamp(max=logits.shape[-1] - 1)
    return tokens


def _decode(forward, encoded: list[list[int]], uniforms: list[torch.Tensor | None], max_new_tokens: int,
            eos: int, device) -> list[list[tuple[list[int], bool]]]:
    """Per set, per prompt: (response ids without EOS, truncated). Rows are set-major (row s·n + i is
    prompt i of set s); a row leaves the batch, and its cache rows with it, once it emits EOS."""
    n, n_sets = len(encoded), len(uniforms)
    cache, logits, mask, positions = _prefill(forward, encoded, device)
    prompt_of = torch.arange(n, device=device).repeat(n_sets)
    if n_sets > 1:  # every set continues from the same prefill
        cache.batch_select_indices(prompt_of)
        logits, mask, positions = logits[prompt_of], mask[prompt_of], positions[prompt_of]
    table = torch.stack([torch.zeros(n, max_new_tokens, dtype=torch.float64) if u is None else u for u in uniforms])
    table = table.view(n_sets * n, max_new_tokens).to(device)
    sampled = torch.tensor([u is not None for u in uniforms for _ in range(n)], device=device)
    active = torch.arange(n_sets * n, device=device)  # the rows still in the batch, in batch order
    responses: list[list[int]] = [[] for _ in range(n_sets * n)]
    truncated = [True] * (n_sets * n)
    for step in range(max_new_tokens):
        tokens = _next_tokens(logits, table[active, step], sampled[active])
        ended = tokens == eos
        for row, token, stop in zip(active.tolist(), tokens.tolist(), ended.tolist()):
            if stop:
                truncated[row] = False
            else:
                responses[row].append(token)
        if step == max_new_tokens - 1:
            break
        if ended.any():
            keep = (~ended).nonzero().squeeze(1)
            if len(keep) == 0:
                break
            cache.batch_select_indices(keep)
            active, tokens, mask, positions = active[keep], tokens[keep], mask[keep], positions[keep]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        logits, cache = forward(tokens[:, None], mask, positions[:, None], cache)
        positions = positions + 1
    return [[(responses[s * n + i], truncated[s * n + i]) for i in range(n)] for s in range(n_sets)]


@torch.no_grad()
def generate_responses(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    greedy: bool = False,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[Sample]:
    """`sample_responses` through transformers' `model.generate` on left-padded batches (the same
    distribution, drawn with the global RNG seeded by `seed` inside a fork of every device's RNG; greedy
    answers are the same tokens). The reference the decode loop is tested and benchmarked against."""
    from transformers import GenerationConfig  # here: config validation imports this module without transformers

    device = next(model.parameters()).device if device is None else device
    was_training = model.training
    model.eval()
    config = GenerationConfig(
        do_sample=not greedy,
        temperature=1.0,
        top_k=0,  # 0 = off; None would fall back to transformers' default of 50
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    samples: list[Sample] = []
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        for first in range(0, len(prompts), batch_size):
            chunk = prompts[first : first + batch_size]
            encoded = [with_boundary(tokenizer, encode_text(tokenizer, p)) for p in chunk]
            width = max(len(e) for e in encoded)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, e in enumerate(encoded):
                input_ids[i, width - len(e) :] = torch.tensor(e)
                attention[i, width - len(e) :] = 1
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                 generation_config=config)
            for prompt, row in zip(chunk, out[:, width:].tolist()):
                if tokenizer.eos_token_id in row:
                    ids, truncated = row[: row.index(tokenizer.eos_token_id)], False
                else:
                    ids, truncated = row, True
                samples.append(Sample(prompt, tokenizer.decode(ids, skip_special_tokens=True), ids, truncated))
    model.train(was_training)
    return samples
