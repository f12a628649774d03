"""Simulated annotators: label response pairs by Bradley–Terry on a task's `label_reward` (docs/design.md §5).

P(y1 ≻ y2 | x) = σ((r(x, y1) − r(x, y2)) / T) (Bradley & Terry 1952; the DPO paper's Eq. 1), then symmetric label
noise; with `drop_ties`, pairs the annotator scores equal are dropped and counted rather than labelled by a coin
flip. Pure functions over strings and a `random.Random`: the caller samples the responses and keeps the records.
"""
from __future__ import annotations

import math
import random

from bench.data.tasks.base import Task


def sigmoid(z: float) -> float:
    """σ(z) = 1 / (1 + e^(−z)), computed without overflow for large |z|."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _check_label_args(temperature: float, label_noise: float) -> None:
    if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"labelling temperature must be a finite number > 0, got {temperature!r}")
    if not (isinstance(label_noise, (int, float)) and 0.0 <= label_noise <= 1.0):
        raise ValueError(f"label_noise must be a probability in [0, 1], got {label_noise!r}")


def bradley_terry_label(
    task: Task,
    prompt: str,
    y1: str,
    y2: str,
    rng: random.Random,
    temperature: float,
    label_noise: float,
) -> tuple[str, str, dict] | None:
    """Label one pair: (chosen, rejected, info), or None if y1 == y2 (the caller drops and counts it).

    Draws exactly two numbers from `rng` per labelled pair (preference, then flip), so a labelling
    run is reproducible from the seed whatever the rewards are.
    info: label_reward_1/2, p_y1_preferred (the BT probability before noise), flipped (bool).
    """
    _check_label_args(temperature, label_noise)
    if y1 == y2:
        return None
    r1, r2 = task.label_reward(prompt, y1), task.label_reward(prompt, y2)
    p_y1 = sigmoid((r1 - r2) / temperature)
    y1_preferred = rng.random() < p_y1
    flipped = rng.random() < label_noise
    if flipped:
        y1_preferred = not y1_preferred
    chosen, rejected = (y1, y2) if y1_preferred else (y2, y1)
    info = {"label_reward_1": r1, "label_reward_2": r2, "p_y1_preferred": p_y1, "flipped": flipped}
    return chosen, rejected, info


def label_pairs(
    task: Task,
    samples: list[tuple[str, str, str]],
    rng: random.Random,
    temperature: float,
    label_noise: float,
    drop_ties: bool = False,
) -> tuple[list[dict], dict]:
    """Label (prompt, y1, y2) samples into normalised preference records, plus counts.

    Record: {"prompt", "chosen", "rejected", "score_chosen", "score_rejected" (gold rewards r*),
    "meta": {"task", "label_score_chosen", "label_score_rejected", "p_chosen" (the BT probability
    that the chosen response wins, before noise), "flipped"}}.
    Stats: n_pairs (input), n_labelled, n_identical_dropped, n_ties_dropped (label-reward ties, only
    with drop_ties), n_flipped, flip_rate,
    gold_agreement (share of labelled pairs with unequal gold where chosen has the higher gold; NaN if
    none), n_gold_ties, longer_chosen_rate (share of pairs of unequal word length where chosen is
    longer; NaN if none), mean_score_chosen, mean_score_rejected, temperature, label_noise.
    """
    _check_label_args(temperature, label_noise)
    records: list[dict] = []
    n_identical = n_ties = n_flipped = n_gold_ties = n_gold_agree = 0
    n_unequal_length = n_longer_chosen = 0
    for i, sample in enumerate(samples):
        well_formed = isinstance(sample, (tuple, list)) and len(sample) == 3
        if not (well_formed and all(isinstance(s, str) for s in sample)):
            raise ValueError(f"samples[{i}] must be a (prompt, y1, y2) tuple of strings, got {sample!r}")
        prompt, y1, y2 = sample
        if drop_ties and y1 != y2 and task.label_reward(prompt, y1) == task.label_reward(prompt, y2):
            n_ties += 1
            continue
        labelled = bradley_terry_label(task, prompt, y1, y2, rng, temperature, label_noise)
        if labelled is None:
            n_identical += 1
            continue
        chosen, rejected, info = labelled
        y1_chosen = chosen == y1
        score_chosen, score_rejected = task.gold_reward(prompt, chosen), task.gold_reward(prompt, rejected)
        records.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "score_chosen": score_chosen,
                "score_rejected": score_rejected,
                "meta": {
                    "task": task.name,
                    "label_score_chosen": info["label_reward_1"] if y1_chosen else info["label_reward_2"],
                    "label_score_rejected": info["label_reward_2"] if y1_chosen else info["label_reward_1"],
                    "p_chosen": info["p_y1_preferred"] if y1_chosen else 1.0 - info["p_y1_preferred"],
                    "flipped": info["flipped"],
                },
            }
        )
        n_flipped += info["flipped"]
        if score_chosen == score_rejected:
            n_gold_ties += 1
        else:
            n_gold_agree += score_chosen > score_rejected
        len_chosen, len_rejected = len(chosen.split()), len(rejected.split())
        if len_chosen != len_rejected:
            n_unequal_length += 1
            n_longer_chosen += len_chosen > len_rejected
    n = len(records)
    stats = {
        "n_pairs": len(samples),
        "n_labelled": n,
        "n_identical_dropped": n_identical,
        "n_ties_dropped": n_ties,
        "n_flipped": n_flipped,
        "flip_rate": n_flipped / n if n else math.nan,
        "gold_agreement": n_gold_agree / (n - n_gold_ties) if n > n_gold_ties else math.nan,
        "n_gold_ties": n_gold_ties,
        "longer_chosen_rate": n_longer_chosen / n_unequal_length if n_unequal_length else math.nan,
        "mean_score_chosen": sum(r["score_chosen"] for r in records) / n if n else math.nan,
        "mean_score_rejected": sum(r["score_rejected"] for r in records) / n if n else math.nan,
        "temperature": float(temperature),
        "label_noise": float(label_noise),
    }
    return records, stats
