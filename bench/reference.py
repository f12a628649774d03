"""Reference terms (docs/design.md §3, §4, §6): the one home of what the frozen reference contributes to a batch.

`ReferenceTerms`, per pair and computed once (s_ref(y) and, for pmi_source=reference, the response-only
log-probs), in memory or cached per model and data for every job of a sweep; `pair_logps` fills a batch's
`PairLogps` with exactly what a method's `Needs` ask for, `example_logps` an unpaired batch's `ExampleLogps`
(whose terms are (completion, KL sequence) per example: bench.data.examples). Trainer, evaluation, pipeline and benchmark all use
these, so "what a method gets" is decided in one place. Must not train, evaluate, or know a method beyond `Needs`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from bench.cache import CacheEntry, DiskCache
from bench.data.encoding import PairTensors, SequenceTensors
from bench.logps import score_all
from bench.methods.base import ExampleLogps, Needs, PairLogps

TERMS_FILE = "reference.pt"
# term name in memory -> its key on disk (unchanged since the first cache entries were written)
_STORED_NAMES = {"reference": "reference", "marginal_sums": "marginal_sums", "marginal_token_counts": "marginal_counts"}


@dataclass
class ReferenceTerms:
    """Per-pair tensors computed once before training, each [P, 2] = (chosen, rejected)."""

    reference_logps: torch.Tensor | None = None  # s_ref(y)
    marginal_logps: torch.Tensor | None = None  # the reference's s(y | ∅), when pmi_source=reference


def marginal_per_conditional_token(marginal_sums, marginal_counts, conditional_counts):
    """Rescale summed marginal log-probs so that dividing by the conditional count gives ā(y | ∅).

    The marginal pass may score a different number of tokens than the conditional one (RMiPO's code
    leaves the first response token unscored); PMI compares the two *averages*.
    """
    return marginal_sums / marginal_counts.clamp(min=1) * conditional_counts


def needs_reference_terms(needs: Needs) -> bool:
    """Whether a method reads anything from `ReferenceTerms` at train time."""
    return needs.reference or needs.marginal == "reference"


def _pairs(values: torch.Tensor) -> torch.Tensor:
    """[2P] (chosen rows then rejected rows) -> [P, 2]."""
    return values.view(2, -1).T.contiguous()


def _score(reference, pairs: PairTensors, marginal: SequenceTensors | None, device) -> tuple[dict, int]:
    """The raw terms as stored on disk ({"reference", and with `marginal` "marginal_sums",
    "marginal_token_counts"}, each [P, 2]) and the tokens scored."""
    both = pairs.both()
    logps, _ = score_all(reference, both, device=device)
    raw, tokens = {"reference": _pairs(logps)}, int(both.attention_mask.sum())
    if marginal is not None:
        sums, counts = score_all(reference, marginal, device=device)
        raw["marginal_sums"], raw["marginal_token_counts"] = _pairs(sums), _pairs(counts)
        tokens += int(marginal.attention_mask.sum())
    return raw, tokens


def _terms(raw: Mapping[str, torch.Tensor], pairs: PairTensors) -> ReferenceTerms:
    marginal = None
    if "marginal_sums" in raw:
        conditional_counts = _pairs(pairs.both().token_counts())
        marginal = marginal_per_conditional_token(raw["marginal_sums"], raw["marginal_token_counts"],
                                                  conditional_counts)
    return ReferenceTerms(raw["reference"], marginal)


def score_reference_terms(reference, pairs: PairTensors, device="cpu",
                          marginal: SequenceTensors | None = None) -> ReferenceTerms:
    """The reference terms of `pairs`, computed now: s_ref always, the marginals when `marginal` (the
    response-only sequences, `pairs.marginal(...)`) is given."""
    return _terms(_score(reference, pairs, marginal, device)[0], pairs)


def cached_reference_terms(cache: DiskCache, payload: Mapping, reference, splits: Mapping[str, PairTensors],
                           marginal_of: Callable[[PairTensors], SequenceTensors] | None, n_params: int,
                           device) -> tuple[dict[str, ReferenceTerms], CacheEntry]:
    """`score_reference_terms` of every split, built once under `payload` (everything the terms depend
    on) in the disk cache and read back by every later job. `marginal_of(pairs)` gives a split's
    response-only sequences when the method takes PMI from the reference (called only to build). The
    entry's build cost counts the tokens scored and 2·N FLOPs per token (N = `n_params`)."""

    def build(directory: Path) -> dict:
        stored, tokens = {}, 0
        for split, pairs in splits.items():
            raw, scored = _score(reference, pairs, marginal_of(pairs) if marginal_of else None, device)
            # the file layout of entries built before this module existed: "<split>_<term>"
            stored.update({f"{split}_{_STORED_NAMES[name]}": value for name, value in raw.items()})
            tokens += scored
        torch.save(stored, directory / TERMS_FILE)
        return {"tokens": tokens, "flops": 2.0 * n_params * tokens}

    entry = cache.get_or_build("reference", dict(payload), build)
    stored = torch.load(entry.path / TERMS_FILE)
    terms = {}
    for split, pairs in splits.items():
        raw = {name: stored[f"{split}_{key}"] for name, key in _STORED_NAMES.items() if f"{split}_{key}" in stored}
        terms[split] = _terms(raw, pairs)
    return terms, entry


def pair_logps(logps: torch.Tensor, token_counts: torch.Tensor, needs: Needs, terms: ReferenceTerms,
               index: torch.Tensor | None = None, *, step: int | None,
               policy_marginal: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None) -> PairLogps:
    """The `PairLogps` of n pairs, filled with what `needs` asks for.

    logps, token_counts: the policy's summed log-probs and scored-token counts, [2n] = chosen rows then
    rejected rows. Reference log-probs (needs.reference, or PMI from the reference) and the reference's
    marginals come from `terms`, rows `index` (None: all pairs, in order), moved to `logps`' device.
    For needs.marginal == "policy", `policy_marginal()` runs the live policy's response-only pass and
    returns its ([2n] sums, [2n] scored-token counts); it is called only then. `step`: the optimizer
    step, or None after training (every schedule at its end: fully regulated, docs/design.md §4).
    """
    n = len(logps) // 2
    batch = PairLogps(logps[:n], logps[n:], token_counts[:n], token_counts[n:], step=step)
    rows = index.cpu() if index is not None else slice(None)
    if needs_reference_terms(needs):
        reference = terms.reference_logps[rows].to(logps.device)
        batch.reference_chosen_logps, batch.reference_rejected_logps = reference[:, 0], reference[:, 1]
    if needs.marginal == "reference":
        marginal = terms.marginal_logps[rows].to(logps.device)
        batch.marginal_chosen_logps, batch.marginal_rejected_logps = marginal[:, 0], marginal[:, 1]
    elif needs.marginal == "policy":
        sums, counts = policy_marginal()
        sums = marginal_per_conditional_token(sums.to(logps.device), counts.to(logps.device), token_counts.detach())
        batch.marginal_chosen_logps, batch.marginal_rejected_logps = sums[:n], sums[n:]
    return batch


def example_logps(logps: torch.Tensor, token_counts: torch.Tensor, kl_logps: torch.Tensor, labels: torch.Tensor,
                  needs: Needs, terms: ReferenceTerms, index: torch.Tensor | None = None, *, step: int | None,
                  policy_marginal: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None) -> ExampleLogps:
    """The `ExampleLogps` of n unpaired examples, filled with what `needs` asks for.

    logps, token_counts: the policy's summed log-probs and scored-token counts of the completions, [n];
    kl_logps: the policy's on the examples' KL sequences, [n] (detached here: z₀ never carries gradient);
    labels: [n] bool. `terms` are (completion, KL sequence) per example, rows `index` (None: all, in order).
    For needs.marginal == "policy", `policy_marginal()` returns the live policy's response-only ([n] sums,
    [n] counts) of the completions.
    """
    batch = ExampleLogps(logps, token_counts, labels.to(logps.device), kl_logps=kl_logps.detach(), step=step)
    rows = index.cpu() if index is not None else slice(None)
    if needs_reference_terms(needs):
        reference = terms.reference_logps[rows].to(logps.device)
        batch.reference_logps, batch.reference_kl_logps = reference[:, 0], reference[:, 1]
    if needs.marginal == "reference":
        batch.marginal_logps = terms.marginal_logps[rows][:, 0].to(logps.device)
    elif needs.marginal == "policy":
        sums, counts = policy_marginal()
        batch.marginal_logps = marginal_per_conditional_token(sums.to(logps.device), counts.to(logps.device),
                                                              token_counts.detach())
    return batch
