"""Prompt sets of a built-in task, disjoint by construction (docs/design.md §5).

Every prompt of a task belongs to exactly one region, decided by a hash of the task's name and the
prompt's text, so two sets drawn from different regions cannot share a prompt, whatever the seed or the
set sizes. Where the task names a composition key (`Task.composition_key`), the prompts whose key hashes
into the held-out share form the composition test region and are in no other region: training never
sees those combinations of parts. The run seed draws each set from its region (draws from the task's
own prompt distribution, kept when they fall in the wanted region: the distribution conditioned on the
region). `prompt_set_stats` measures what the sets actually hold, for the run record.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import random
from collections.abc import Mapping, Sequence

# Regions of the prompts outside the composition hold-out, with their shares. Training draws the most
# (its pairs, and the SFT corpus), the three evaluation regions each hold 15% of the space: >= 675
# distinct prompts of a 5,000-prompt space, above what any default set draws (512 test prompts).
REGION_SHARES = {"train_pairs": 0.55, "eval_pairs": 0.15, "validation": 0.15, "test": 0.15}
COMPOSITION_REGION = "composition_test"
COMPOSITION_SHARE = 0.10  # of the composition keys, not of the prompts
REGIONS = (*REGION_SHARES, COMPOSITION_REGION)
# A set must fill within this many draws per prompt asked for (a region of share s needs ~1/s on average).
MAX_DRAWS_PER_PROMPT = 200


def unit_hash(*parts: str) -> float:
    """A number in [0, 1) fixed by `parts` (sha256): the same on every machine and in every process."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def region_of(task, prompt: str) -> str:
    """The one region `prompt` belongs to."""
    key = task.composition_key(prompt)
    if key is not None and unit_hash(task.name, "composition", key) < COMPOSITION_SHARE:
        return COMPOSITION_REGION
    u, edge = unit_hash(task.name, "prompt", prompt), 0.0
    for region, share in REGION_SHARES.items():
        edge += share
        if u < edge:
            return region
    return "test"  # u within float rounding of 1


def has_composition_split(task) -> bool:
    """Whether the task holds out compositions (it names a key for its prompts)."""
    return task.composition_key(task.sample_prompt(random.Random(0))) is not None


def draw_prompts(task, region: str, n: int, rng: random.Random, what: str = "prompts") -> list[str]:
    """`n` prompts of `region`, drawn from the task's prompt distribution with `rng` (repeats allowed, as
    in the distribution). `what` names the config key asking, for the error when the region is too small."""
    if region not in REGIONS:
        raise ValueError(f"unknown prompt region {region!r}; regions: {', '.join(REGIONS)}")
    out: list[str] = []
    for _ in range(MAX_DRAWS_PER_PROMPT * max(n, 1)):
        if len(out) >= n:
            return out
        prompt = task.sample_prompt(rng)
        if region_of(task, prompt) == region:
            out.append(prompt)
    if len(out) >= n:
        return out
    size = task.prompt_space_size()
    raise ValueError(f"{what}: the task '{task.name}' gave only {len(out)} of {n} prompts of its '{region}' region in "
                     f"{MAX_DRAWS_PER_PROMPT * n} draws (prompt space: {size if size is not None else 'unknown'} prompts); "
                     "ask for fewer or enlarge the task's prompt space")


def restricted_to(task, region: str):
    """A copy of `task` whose `sample_prompt` draws only from `region` (e.g. for lm-eval items, which the
    task builds from its own `sample_prompt`): the original task is left as it is."""
    view = copy.copy(task)
    view.sample_prompt = lambda rng: draw_prompts(task, region, 1, rng)[0]
    return view


# Both training-side sets come from the train region by design (the SFT corpus and the preference pairs):
# their shared prompts are no leak, so that pair is not an overlap to count.
TRAINING_SETS = frozenset({"sft_corpus", "train_pairs"})


def prompt_set_stats(sets: Mapping[str, Sequence[str]]) -> dict:
    """{"sets": {name: {"size", "distinct"}}, "overlaps": {"a|b": distinct prompts in both}} for every pair of
    sets (a < b) but the two training sets: what the run record stores under data.prompt_sets, measured on
    the sets as used. Every overlap count must be 0 for a number to be called held-out (docs/design.md §11a)."""
    distinct = {name: set(prompts) for name, prompts in sets.items()}
    return {
        "sets": {name: {"size": len(prompts), "distinct": len(distinct[name])} for name, prompts in sets.items()},
        "overlaps": {f"{a}|{b}": len(distinct[a] & distinct[b])
                     for a, b in itertools.combinations(sorted(distinct), 2) if {a, b} != TRAINING_SETS},
    }
