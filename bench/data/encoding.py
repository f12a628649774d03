"""Token-level encoding of normalised preference records, once per dataset (docs/design.md §4, §5).

One set of conventions for SFT, training, reference log-probs and evaluation: conditional sequences with the
response scored, and response-only sequences cut out of them as RMiPO's code gathers them (scripts/rmipo_trainer.py,
`concatenated_forward`), so both passes score the same tokens. Everything is padded once to the dataset's longest
sequence; `PairTensors.batch` trims a batch to its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def boundary_token_id(tokenizer) -> int:
    """The token that starts a sequence: BOS, or EOS for tokenizers without one (GPT-2 style)."""
    token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("model: the tokenizer has neither a BOS nor an EOS token; set one")
    return token_id


@dataclass
class SequenceTensors:
    """N sequences, right-padded: input_ids, attention_mask and response_mask are [N, L]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor  # 1 where the token is a scored response token

    def select(self, index: torch.Tensor) -> "SequenceTensors":
        width = int(self.attention_mask[index].sum(-1).max())
        return SequenceTensors(
            self.input_ids[index, :width], self.attention_mask[index, :width], self.response_mask[index, :width]
        )

    @staticmethod
    def cat(parts: list["SequenceTensors"]) -> "SequenceTensors":
        width = max(p.input_ids.shape[1] for p in parts)
        pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
        return SequenceTensors(*(torch.cat([pad(getattr(p, f)) for p in parts]) for f in ("input_ids", "attention_mask", "response_mask")))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def token_counts(self) -> torch.Tensor:
        """Number of scored tokens per sequence [N] (what `sequence_logps` sums over)."""
        return self.response_mask[:, 1:].sum(-1).float()


def _pad(rows: list[list[int]], masks: list[list[int]], pad_id: int) -> SequenceTensors:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    response = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        response[i, : len(row)] = torch.tensor(mask)
    return SequenceTensors(ids, attention, response)


def encode_text(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def with_boundary(tokenizer, prompt_ids: list[int]) -> list[int]:
    """[BOS] + prompt, unless the prompt already starts with it (chat templates often render one)."""
    start = boundary_token_id(tokenizer)
    return list(prompt_ids) if prompt_ids[:1] == [start] else [start, *prompt_ids]


def conditional_sequence(tokenizer, prompt_ids: list[int], response_ids: list[int], max_length: int):
    """([BOS] + prompt + response + [EOS]) truncated to max_length, and its response mask."""
    prefix = with_boundary(tokenizer, prompt_ids)
    full = prefix + response_ids + [tokenizer.eos_token_id]
    n_prefix = len(prefix)
    full = full[:max_length]
    return full, [0] * n_prefix + [1] * (len(full) - n_prefix)


def marginal_sequence(tokenizer, scored_ids: list[int], context: str):
    """The response scored without its prompt (docs/design.md §4), in the given context convention.

    `scored_ids` are the response tokens of the conditional sequence (its response-mask positions:
    the tokens that survived truncation, with the EOS only if it survived). The result is never
    longer than the conditional sequence it came from, so it needs no truncation of its own.
    """
    if not scored_ids:
        raise ValueError("marginal_sequence: no response token to score")
    if context == "bos":
        return [boundary_token_id(tokenizer), *scored_ids], [0] + [1] * len(scored_ids)
    if context == "authors":  # RMiPO's released code: no BOS, so the first token has no context
        return list(scored_ids), [0] + [1] * (len(scored_ids) - 1)
    raise ValueError(f"marginal_context must be 'bos' or 'authors', got {context!r}")


def surviving_response_ids(seqs: SequenceTensors) -> list[list[int]]:
    """Per sequence, the token ids at its response-mask positions, in order (what was scored)."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(seqs.input_ids, seqs.response_mask)]


@dataclass
class PairTensors:
    """A preference dataset as tensors: chosen/rejected conditional sequences, [P, L] each."""

    chosen: SequenceTensors
    rejected: SequenceTensors
    responses: tuple[list[list[int]], list[list[int]]]  # token ids of chosen/rejected responses (no EOS)

    def __len__(self) -> int:
        return len(self.chosen)

    def both(self) -> SequenceTensors:
        """All chosen rows then all rejected rows: [2P, L]."""
        return SequenceTensors.cat([self.chosen, self.rejected])

    def batch(self, index: torch.Tensor) -> SequenceTensors:
        """Chosen rows then rejected rows of the pairs in `index`: [2B, L] (one forward for both)."""
        return SequenceTensors.cat([self.chosen.select(index), self.rejected.select(index)])

    def marginal(self, tokenizer, max_length: int, context: str) -> SequenceTensors:
        """Response-only sequences, chosen rows then rejected rows: [2P, L'].

        Built from the conditional sequences' scored tokens, so a truncated response contributes
        exactly its surviving tokens (not the full response cut at `max_length` on its own).
        `max_length` is the cap the conditional sequences were encoded with; a response-only sequence
        is at most as long as its conditional one, which is checked.
        """
        rows, masks = [], []
        for scored_ids in surviving_response_ids(self.both()):
            seq, mask = marginal_sequence(tokenizer, scored_ids, context)
            if len(seq) > max_length:
                raise ValueError(f"response-only sequence of {len(seq)} tokens exceeds max_length={max_length}: "
                                 "the pairs were encoded with a larger max_length")
            rows.append(seq)
            masks.append(mask)
        return _pad(rows, masks, tokenizer.pad_token_id)


def encode_pairs(records: list[dict], tokenizer, max_length: int, source: str, on_bad_row: str = "error"):
    """Encode normalised records; returns (PairTensors, kept records, stats).

    Over-long rows (docs/design.md §5), an error naming the row (on_bad_row=error) or dropped and counted
    under dropped.over_long (on_bad_row=drop): a prompt that leaves no room for one response token, and a
    pair whose chosen and rejected sequences are identical after truncation (they differ only beyond
    max_length: the pair carries no preference). Truncated responses are counted. Rows are named by
    their row in the source (meta.row, set by bench.data.validate) when they have one.
    """
    rows = {"chosen": ([], []), "rejected": ([], [])}
    responses = ([], [])
    kept, stats = [], {"n_rows": len(records), "dropped": {"over_long": 0}, "n_truncated": 0}

    def refuse(i: int, record: dict, problem: str) -> None:
        if on_bad_row == "error":
            row = (record.get("meta") or {}).get("row", i)
            raise ValueError(f"{source} row {row}: {problem}; set dataset.on_bad_row=drop to skip such rows")
        stats["dropped"]["over_long"] += 1

    for i, record in enumerate(records):
        prompt_ids = encode_text(tokenizer, record["prompt"])
        if len(with_boundary(tokenizer, prompt_ids)) >= max_length:
            refuse(i, record, f"field 'prompt' is over-long ({len(prompt_ids)} tokens leave no room "
                              f"for a response within max_length={max_length})")
            continue
        encoded = {}
        for side in ("chosen", "rejected"):
            response_ids = encode_text(tokenizer, record[side])
            seq, mask = conditional_sequence(tokenizer, prompt_ids, response_ids, max_length)
            encoded[side] = (seq, mask, response_ids)
        if encoded["chosen"][0] == encoded["rejected"][0]:
            refuse(i, record, f"field 'rejected' is identical to 'chosen' after truncation to max_length={max_length} "
                              "(they differ only beyond it)")
            continue
        for slot, side in enumerate(("chosen", "rejected")):
            seq, mask, response_ids = encoded[side]
            # untruncated: the prompt (with its boundary token), every response token and the EOS
            full_length = len(with_boundary(tokenizer, prompt_ids)) + len(response_ids) + 1
            stats["n_truncated"] += int(len(seq) < full_length)
            rows[side][0].append(seq)
            rows[side][1].append(mask)
            responses[slot].append(response_ids)
        kept.append(record)
    if not kept:
        raise ValueError(f"{source}: no usable rows left (stats: {stats})")
    pad = tokenizer.pad_token_id
    tensors = PairTensors(_pad(*rows["chosen"], pad), _pad(*rows["rejected"], pad), responses)
    stats["n_kept"] = len(kept)
    return tensors, kept, stats
