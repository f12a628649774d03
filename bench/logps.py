"""Per-sequence log-probabilities: s(y) = Σ_t log π(y_t | context, y_<t) over scored tokens.

Used for the policy (with gradient), and without gradient for the reference, the marginal
log p(y | ∅) and evaluation. Knows nothing of methods.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.data.encoding import SequenceTensors


def sequence_logps(model, seqs: SequenceTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probs [N], number of scored tokens [N]) of each sequence's response tokens.

    Token t is predicted by the logits at t−1; cross_entropy avoids materialising the full
    log-softmax (which matters for 100k+ vocabularies).
    """
    # use_cache=False: a scoring pass never decodes further, so building a KV cache is wasted work
    logits = model(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask, use_cache=False).logits[:, :-1]
    labels = seqs.input_ids[:, 1:]
    mask = seqs.response_mask[:, 1:].to(logits.dtype)
    token_logps = -F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
    return (token_logps * mask).sum(-1), mask.sum(-1)


@torch.no_grad()
def score_all(model, seqs: SequenceTensors, batch_size: int = 256, device: torch.device | str = "cpu"):
    """sequence_logps over a whole dataset without gradient: ([N], [N]) on the CPU."""
    was_training = model.training
    model.eval()
    sums, counts = [], []
    for start in range(0, len(seqs), batch_size):
        index = torch.arange(start, min(start + batch_size, len(seqs)))
        part = seqs.select(index)
        part = SequenceTensors(*(t.to(device) for t in (part.input_ids, part.attention_mask, part.response_mask)))
        s, n = sequence_logps(model, part)
        sums.append(s.float().cpu())
        counts.append(n.float().cpu())
    model.train(was_training)
    return torch.cat(sums), torch.cat(counts)
