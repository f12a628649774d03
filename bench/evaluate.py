"""Evaluation: one flat `metrics` dict per run (DESIGN §7).

- `pref_acc`: share of held-out pairs whose implicit reward margin Δ (policy-vs-reference log-ratio)
  is > 0; plus the method's own reward accuracy and margin on the same pairs (`eval/rewards/...`).
- With a gold reward (built-in tasks), on held-out prompts: `gold_reward` (mean r* of temperature-1
  samples), `gold_reward_greedy`, `reference_gold_reward` (the SFT model's samples), `win_rate` vs the
  SFT model's samples on the same prompts (ties count ½), `kl` (Monte-Carlo KL(π‖π_ref) at sequence level:
  mean of log π(y|x) − log π_ref(y|x) over y ~ π), `length`, `no_eos_rate` (samples that hit the cap;
  they are scored, never dropped) and `collapsed` (see COLLAPSE_RULE).
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch

from bench.data.encoding import PairTensors, SequenceTensors, _pad, encode_text, with_boundary
from bench.generation import sample_responses
from bench.logps import score_all
from bench.methods.base import Method, PairLogps
from bench.trainer import PairCache, marginal_per_conditional_token

COLLAPSE_RULE = (
    "collapsed = 1 when no_eos_rate >= eval.collapse_no_eos_rate: the policy stopped ending its answers "
    "(end-of-sequence collapse, the dominant failure of small-beta DPO on these testbeds)"
)


def preference_metrics(model, reference: PairCache, method: Method, pairs: PairTensors,
                       marginal_seqs: SequenceTensors | None, device) -> dict[str, float]:
    """pref_acc and the method's native reward metrics on held-out pairs (no gradient)."""
    logps, counts = score_all(model, pairs.both(), device=device)
    n = len(pairs)
    metrics: dict[str, float] = {}
    batch = PairLogps(logps[:n], logps[n:], counts[:n], counts[n:], step=10**9)
    if reference.reference_logps is not None:
        ref = reference.reference_logps
        delta = (logps[:n] - ref[:, 0]) - (logps[n:] - ref[:, 1])
        metrics["pref_acc"] = (delta > 0).float().mean().item()
        batch.reference_chosen_logps, batch.reference_rejected_logps = ref[:, 0], ref[:, 1]
    if method.needs.marginal == "reference":
        batch.marginal_chosen_logps, batch.marginal_rejected_logps = reference.marginal_logps[:, 0], reference.marginal_logps[:, 1]
    elif method.needs.marginal == "policy":
        sums, m_counts = score_all(model, marginal_seqs, device=device)
        sums = marginal_per_conditional_token(sums, m_counts, counts)
        batch.marginal_chosen_logps, batch.marginal_rejected_logps = sums[:n], sums[n:]
    # a copy: stateful methods (beta_dpo's running mean) must not learn from held-out data
    out = copy.deepcopy(method)(batch)
    metrics["eval/loss"] = out.losses.mean().item()
    metrics.update({f"eval/{k}": v for k, v in out.metrics.items() if k.startswith("rewards/")})
    return metrics


def _sample_sequences(tokenizer, samples, max_length: int) -> SequenceTensors:
    """[BOS] + prompt + sampled ids (+ EOS only if the sample emitted it), response tokens scored."""
    rows, masks = [], []
    for s in samples:
        prefix = with_boundary(tokenizer, encode_text(tokenizer, s.prompt))
        response = s.response_ids + ([] if s.truncated else [tokenizer.eos_token_id])
        seq = (prefix + response)[:max_length]
        rows.append(seq)
        masks.append([0] * len(prefix) + [1] * (len(seq) - len(prefix)))
    return _pad(rows, masks, tokenizer.pad_token_id)


def gold_metrics(model, reference_model, tokenizer, task, prompts: list[str], eval_cfg: Mapping,
                 max_length: int, seed: int, device, meter) -> dict[str, float]:
    cap = task.max_response_tokens
    policy = sample_responses(model, tokenizer, prompts, cap, seed=seed, device=device)
    greedy = sample_responses(model, tokenizer, prompts, cap, greedy=True, device=device)
    ref = sample_responses(reference_model, tokenizer, prompts, cap, seed=seed + 1, device=device)
    gold = torch.tensor([task.gold_reward(s.prompt, s.response) for s in policy])
    gold_ref = torch.tensor([task.gold_reward(s.prompt, s.response) for s in ref])
    gold_greedy = torch.tensor([task.gold_reward(s.prompt, s.response) for s in greedy])
    win = (gold > gold_ref).float() + 0.5 * (gold == gold_ref).float()
    seqs = _sample_sequences(tokenizer, policy, max_length)
    policy_logps, _ = score_all(model, seqs, device=device)
    reference_logps, _ = score_all(reference_model, seqs, device=device)
    meter.add_nograd_tokens("eval", 2 * int(seqs.attention_mask.sum()) + sum(len(s.response_ids) for s in policy + greedy + ref))
    no_eos_rate = sum(s.truncated for s in policy) / len(policy)
    return {
        "gold_reward": gold.mean().item(),
        "gold_reward_median": gold.median().item(),
        "gold_reward_greedy": gold_greedy.mean().item(),
        "reference_gold_reward": gold_ref.mean().item(),
        "win_rate": win.mean().item(),
        "kl": (policy_logps - reference_logps).mean().item(),
        "length": sum(len(s.response_ids) for s in policy) / len(policy),
        "no_eos_rate": no_eos_rate,
        "collapsed": float(no_eos_rate >= eval_cfg["collapse_no_eos_rate"]),
    }
