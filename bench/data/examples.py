"""Unpaired examples as tensors (docs/design.md §3, §5): what KTO-style methods train on.

Each example (x, y, label) is encoded as the pairs are (bench.data.encoding's conditional sequences), plus the
mismatched (x, y′) sequence that KTO's reference point is estimated on. The examples are cut into blocks of one
training batch so that y′ comes from the same batch and every sequence, with its reference log-probs, is fixed
once. Knows nothing of models or methods.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from bench.data.encoding import PairTensors, SequenceTensors, _pad, conditional_sequence, encode_text, with_boundary


@dataclass
class ExampleTensors:
    """Unpaired examples as tensors (docs/design.md §3, §5), rows in training order.

    completions: (x_i, y_i) conditional sequences [N, L]; kl: (x_i, y′_i) [N, L], y′_i the completion of the
    previous example of its block (the block's first takes its last: TRL's rotation by +1), which KTO's
    reference point z₀ is estimated on; labels [N] bool (True = desirable). Rows come in blocks of
    `block_size` consecutive examples, each block one training batch, so that y′ ranges over the batch's own
    completions and the KL sequences (and their reference log-probs) are fixed once, like the pairs'.
    Duck-types PairTensors where the reference terms need it: `both()` and `marginal()` give the completion
    rows then the KL rows, so the reference terms are [N, 2] = (completion, KL sequence).
    """

    completions: SequenceTensors
    kl: SequenceTensors
    labels: torch.Tensor
    block_size: int

    def __len__(self) -> int:
        return len(self.completions)

    @property
    def n_blocks(self) -> int:
        return len(self) // self.block_size

    def block_rows(self, blocks: torch.Tensor) -> torch.Tensor:
        """The rows of the given blocks, block by block."""
        offsets = torch.arange(self.block_size)
        return (blocks.reshape(-1, 1).cpu() * self.block_size + offsets).reshape(-1)

    def both(self) -> SequenceTensors:
        """All completion rows then all KL rows: [2N, L]."""
        return SequenceTensors.cat([self.completions, self.kl])

    def batch(self, index: torch.Tensor) -> SequenceTensors:
        """Completion rows then KL rows of the examples in `index`: [2B, L]."""
        return SequenceTensors.cat([self.completions.select(index), self.kl.select(index)])

    # Response-only sequences of the completion rows then of the KL rows, [2N, L']: PairTensors' construction,
    # which reads only `both()`.
    marginal = PairTensors.marginal


def encode_examples(records: list[dict], tokenizer, max_length: int, source: str, block_size: int | None, seed: int,
                    on_bad_row: str = "error"):
    """Encode unpaired examples ({prompt, completion, label}); returns (ExampleTensors, kept records in row
    order, stats).

    The kept examples are shuffled by `seed` and cut into blocks of `block_size` (a training batch; None: one
    block of all of them, for evaluation); a last, incomplete block is left out and counted (dropped.incomplete_block), as a
    training loader drops an incomplete batch. A prompt that leaves no room for a response token is refused
    or dropped as for pairs (dropped.over_long).
    """
    stats = {"n_rows": len(records), "dropped": {"over_long": 0, "incomplete_block": 0}, "n_truncated": 0}
    encoded = []
    for i, record in enumerate(records):
        prompt_ids = encode_text(tokenizer, record["prompt"])
        if len(with_boundary(tokenizer, prompt_ids)) >= max_length:
            if on_bad_row == "error":
                row = (record.get("meta") or {}).get("row", i)
                raise ValueError(f"{source} row {row}: field 'prompt' is over-long ({len(prompt_ids)} tokens leave no "
                                 f"room for a response within max_length={max_length}); set dataset.on_bad_row=drop "
                                 "to skip such rows")
            stats["dropped"]["over_long"] += 1
            continue
        encoded.append((record, prompt_ids, encode_text(tokenizer, record["completion"])))
    if block_size is None:  # one block of every usable example (held-out evaluation)
        block_size = len(encoded)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"{source}: KTO's reference point needs batches of at least 2 examples (a mismatched "
                         f"completion from the same batch), got a block of {block_size!r}")
    order = list(range(len(encoded)))
    random.Random(f"examples/{seed}").shuffle(order)
    n_used = len(order) // block_size * block_size
    stats["dropped"]["incomplete_block"] = len(order) - n_used
    if n_used == 0:
        raise ValueError(f"{source}: {len(encoded)} usable examples do not fill one batch of {block_size} (stats: {stats})")
    rows, kl_rows, labels = ([], []), ([], []), []
    for start in range(0, n_used, block_size):
        block = order[start:start + block_size]
        for position, j in enumerate(block):
            record, prompt_ids, completion_ids = encoded[j]
            partner = encoded[block[position - 1]][2]  # position 0 takes the block's last: rotation by +1
            seq, mask = conditional_sequence(tokenizer, prompt_ids, completion_ids, max_length)
            full_length = len(with_boundary(tokenizer, prompt_ids)) + len(completion_ids) + 1
            stats["n_truncated"] += int(len(seq) < full_length)
            rows[0].append(seq)
            rows[1].append(mask)
            kl_seq, kl_mask = conditional_sequence(tokenizer, prompt_ids, partner, max_length)
            kl_rows[0].append(kl_seq)
            kl_rows[1].append(kl_mask)
            labels.append(bool(record["label"]))
    pad = tokenizer.pad_token_id
    tensors = ExampleTensors(_pad(*rows, pad), _pad(*kl_rows, pad), torch.tensor(labels, dtype=torch.bool), block_size)
    kept = [encoded[j][0] for j in order[:n_used]]  # row i of the tensors is kept[i]
    stats["n_kept"] = n_used
    stats["n_desirable"] = int(tensors.labels.sum())
    stats["n_undesirable"] = n_used - stats["n_desirable"]
    return tensors, kept, stats
