"""Supervised warm start (the SFT model = the frozen reference of every preference run).

For built-in tasks the tiny model is trained from scratch on the task's imperfect demonstrations.
The result is cached on disk (`bench.cache`) under a key of everything it depends on, so all jobs
of a sweep share one SFT model and the analysis can amortise its one-off cost.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Mapping

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from bench.cache import CacheEntry, DiskCache
from bench.data.encoding import SequenceTensors, _pad, conditional_sequence, encode_text
from bench.data.splits import draw_prompts
from bench.logps import sequence_logps
from bench.models import build_tiny_model, non_embedding_parameters


def corpus_prompts(task, n: int, seed: int) -> list[str]:
    """The SFT corpus's prompts: from the training region only (bench.data.splits), so the SFT model, which
    plays the pretrained model, has never seen a validation, test or held-out-composition prompt."""
    return draw_prompts(task, "train_pairs", n, random.Random(f"sft/{seed}"), "sft.corpus_size")


def demonstration_corpus(task, n: int, seed: int, tokenizer, max_length: int) -> SequenceTensors:
    rng = random.Random(seed)
    rows, masks = [], []
    for prompt in corpus_prompts(task, n, seed):
        response = task.demonstration(prompt, rng)
        seq, mask = conditional_sequence(tokenizer, encode_text(tokenizer, prompt), encode_text(tokenizer, response), max_length)
        rows.append(seq)
        masks.append(mask)
    return _pad(rows, masks, tokenizer.pad_token_id)


def train_sft(model, corpus: SequenceTensors, sft_cfg: Mapping, seed: int, show_progress: bool = True) -> dict:
    """Maximum likelihood on response tokens; returns the build cost (flops, final loss)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft_cfg["lr"], weight_decay=0.0)
    steps = sft_cfg["steps"]
    # linear warm-up then cosine decay: the usual recipe, it keeps from-scratch training of a tiny model stable
    warmup = max(1, steps // 20)
    schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps)).item())  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    tokens, loss_value = 0, float("nan")
    bar = tqdm(range(steps), desc="sft", disable=not show_progress, mininterval=2.0)
    for step in bar:
        index = torch.randint(len(corpus), (sft_cfg["batch_size"],), generator=generator)
        batch = corpus.select(index)
        logps, n_tokens = sequence_logps(model, batch)
        loss = -logps.sum() / n_tokens.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch.attention_mask.sum())
        loss_value = loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    return {"flops": 6.0 * non_embedding_parameters(model) * tokens, "tokens": tokens, "final_loss": loss_value}


def sft_model_for_task(task, task_payload: dict, tokenizer, model_cfg: Mapping, sft_cfg: Mapping, seed: int,
                       cache: DiskCache, show_progress: bool = True):
    """The cached SFT model for a built-in task: (model, CacheEntry)."""
    payload = {
        "task": task_payload,
        "vocabulary": sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]),  # get_vocab order varies by process
        "model": dict(model_cfg),
        "sft": dict(sft_cfg),
        "seed": seed,
    }

    def build(directory: Path) -> dict:
        torch.manual_seed(seed)
        model = build_tiny_model(model_cfg, tokenizer)
        corpus = demonstration_corpus(task, sft_cfg["corpus_size"], seed, tokenizer, model_cfg["max_length"])
        cost = train_sft(model, corpus, sft_cfg, seed, show_progress)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return cost

    entry: CacheEntry = cache.get_or_build("sft", payload, build)
    model = AutoModelForCausalLM.from_pretrained(entry.path, dtype=torch.float32)
    return model, entry
