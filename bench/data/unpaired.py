"""Unpaired feedback (docs/design.md §5): examples {prompt, completion, label, meta} beside pairs.

KTO-style methods learn from single completions marked desirable (label true) or undesirable. They come from
real files in TRL's (prompt, completion, label) schema (bench.data.adapters, `dataset.feedback: unpaired`) or
from pairs: `pairs_to_examples` splits each pair into its chosen completion (desirable) and its rejected one
(undesirable), which is how the built-in tasks feed KTO — the same Bradley–Terry annotator's verdicts that DPO
sees, so a KTO-vs-DPO difference is the loss, not the labels. `keep_desirable_fraction` thins the desirable
examples for KTO's imbalanced-data setting. Pure functions over records; no tokeniser, no model.
"""
from __future__ import annotations

import random
from typing import Mapping

FEEDBACK = ("paired", "unpaired")


def pairs_to_examples(pairs: list[Mapping]) -> list[dict]:
    """Each pair -> (prompt, chosen, desirable) and (prompt, rejected, undesirable), in pair order, with the
    pair's meta plus {"pair": its index, "side": "chosen"|"rejected"}."""
    examples = []
    for i, pair in enumerate(pairs):
        meta = dict(pair.get("meta") or {})
        for side, label in (("chosen", True), ("rejected", False)):
            examples.append({"prompt": pair["prompt"], "completion": pair[side], "label": label,
                             "meta": {**meta, "pair": i, "side": side}})
    return examples


def keep_desirable_fraction(examples: list[dict], fraction: float, seed: int) -> tuple[list[dict], dict]:
    """Keep round(fraction · n_desirable) desirable examples drawn without replacement (stream `seed`), and
    every undesirable one, in their original order; returns (examples, {"n_desirable", "n_undesirable",
    "dropped_desirable"})."""
    if not 0 < fraction <= 1:
        raise ValueError(f"unpaired.desirable_fraction must be in (0, 1], got {fraction!r}")
    desirable = [i for i, e in enumerate(examples) if e["label"]]
    n_keep = round(fraction * len(desirable))
    kept = set(random.Random(f"desirable/{seed}").sample(desirable, n_keep))
    out = [e for i, e in enumerate(examples) if not e["label"] or i in kept]
    n_desirable = sum(e["label"] for e in out)
    return out, {"n_desirable": n_desirable, "n_undesirable": len(out) - n_desirable,
                 "dropped_desirable": len(desirable) - n_keep}


def label_counts(examples: list[Mapping]) -> tuple[int, int]:
    """(desirable, undesirable) counts."""
    n_desirable = sum(bool(e["label"]) for e in examples)
    return n_desirable, len(examples) - n_desirable
