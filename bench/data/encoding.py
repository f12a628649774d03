"""Token-level encoding of normalised preference records, once per dataset (docs/design.md §4, §5).

One set of conventions for SFT, training, reference log-probs and evaluation: conditional sequences with the
response scored, and response-only sequences cut out of them as RMiPO's code gathers them (scripts/rmipo_trainer.py,
`concatenated_forward`), so both passes score the same tokens. Everything is padded once to the dataset's longest
sequence; `PairTensors.batch` trims a batch to its own. A method with marginal_context=chat encodes its
pairs as RMiPO's code does on a chat model (`ChatTurns`): the assistant turn through the chat template is
the response, and the prompt is cut from the front before the response is cut at its end.
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
    # RMiPO's released code: the scored tokens alone, no BOS, so the first one is context, unscored. Under
    # "chat" the scored tokens start with the assistant header (`ChatTurns`), which is then that context.
    if context in ("authors", "chat"):
        return list(scored_ids), [0] + [1] * (len(scored_ids) - 1)
    raise ValueError(f"marginal_context must be 'bos', 'authors' or 'chat', got {context!r}")


class ChatTurns:
    """RMiPO's text construction and truncation on a chat model (marginal_context=chat, docs/design.md §4).

    Their script renders the prompt turns through the chat template without a generation header and the
    assistant turn through the template on its own, BOS text stripped; so the assistant header and the
    end-of-turn text belong to the response: scored in the conditional pass, and the context of the
    response-only one. Here a record's prompt arrives rendered with the generation header (the tasks and
    adapters render it so, for sampling): the header is cut off its end. The assistant turn is rendered
    after a probe user turn and cut off it, i.e. as the template renders it within a conversation (their
    lone-turn rendering is the same text on templates that render each turn alone, e.g. Llama-3's; on
    templates that insert a default system turn before a conversation's first message, SmolLM2's, theirs
    would carry that turn inside every response).

    Token ids follow their trainer (scripts/rmipo_trainer.py, `build_tokenized_answer`, `tokenize_row`):
    prompt + response tokenised together and split after the prompt's own tokens; BOS added before the
    prompt and EOS after the response when not already there; then, per pair, if prompt + the longer
    response exceeds `max_length`, the prompt keeps its last `max_prompt_length` tokens, and if still too
    long each response keeps its first `max_length - max_prompt_length`.
    """

    _PROBE = [{"role": "user", "content": "probe"}]

    def __init__(self, tokenizer, max_prompt_length: int, max_length: int):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("method.marginal_context=chat renders the response as an assistant turn through the "
                             "chat template, and this model's tokenizer has none: use bos or authors")
        if not isinstance(max_prompt_length, int) or not 0 < max_prompt_length < max_length:
            raise ValueError(f"method.max_prompt_length must be an integer in [1, model.max_length) under "
                             f"marginal_context=chat, got {max_prompt_length!r} (model.max_length={max_length})")
        self.tokenizer, self.max_prompt_length, self.max_length = tokenizer, max_prompt_length, max_length
        plain, cued = self._render(self._PROBE, False), self._render(self._PROBE, True)
        if not cued.startswith(plain):
            raise ValueError("method.marginal_context=chat: the chat template's generation header is not a suffix "
                             "of its prompt rendering; the prompt turns cannot be recovered")
        self.generation_header, self._probe_text = cued[len(plain):], plain

    def _render(self, messages: list[dict], generation_header: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_header)

    def prompt_text(self, rendered_prompt: str) -> str:
        """The prompt turns without the generation header."""
        if not rendered_prompt.endswith(self.generation_header):
            raise ValueError(f"does not end with the chat template's generation header {self.generation_header!r}: "
                             "marginal_context=chat needs prompts rendered through the model's chat template")
        return rendered_prompt[: len(rendered_prompt) - len(self.generation_header)]

    def response_text(self, answer: str) -> str:
        """The assistant turn of `answer` as the template renders it, BOS text stripped."""
        turns = self._render([*self._PROBE, {"role": "assistant", "content": answer}], False)
        if not turns.startswith(self._probe_text):
            raise ValueError("method.marginal_context=chat: the chat template renders a turn differently once "
                             "another follows it; the assistant turn cannot be cut out")
        text = turns[len(self._probe_text):]
        bos = self.tokenizer.bos_token
        return text[len(bos):] if bos and text.startswith(bos) else text

    def split(self, prompt: str, response: str) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids): tokenised together, split after the prompt's own tokens (one back when
        the prompt's last token merged with the response's first), BOS and EOS added where missing."""
        full = encode_text(self.tokenizer, prompt + response)
        n_prompt = len(encode_text(self.tokenizer, prompt))
        if full[:n_prompt] != encode_text(self.tokenizer, prompt):
            n_prompt -= 1
        prompt_ids, response_ids = with_boundary(self.tokenizer, full[:n_prompt]), full[n_prompt:]
        if response_ids[-1:] != [self.tokenizer.eos_token_id]:
            response_ids = [*response_ids, self.tokenizer.eos_token_id]
        return prompt_ids, response_ids

    def truncate(self, sides: dict[str, tuple[list[int], list[int]]]) -> dict[str, tuple[list[int], list[int]]]:
        """Their pair-level truncation: both tests use the longer response of the pair."""
        longer = max(len(response) for _, response in sides.values())
        out = {}
        for side, (prompt_ids, response_ids) in sides.items():
            if len(prompt_ids) + longer > self.max_length:
                prompt_ids = prompt_ids[-self.max_prompt_length:]
            if len(prompt_ids) + longer > self.max_length:
                response_ids = response_ids[: self.max_length - self.max_prompt_length]
            out[side] = (prompt_ids, response_ids)
        return out


def chat_turns(tokenizer, needs, max_length: int) -> ChatTurns | None:
    """The chat-turn encoding a method's `Needs` asks for (marginal_context=chat), else None."""
    if needs.marginal is None or needs.marginal_context != "chat":
        return None
    return ChatTurns(tokenizer, needs.max_prompt_length, max_length)


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


def encode_pairs(records: list[dict], tokenizer, max_length: int, source: str, on_bad_row: str = "error",
                 turns: ChatTurns | None = None):
    """Encode normalised records; returns (PairTensors, kept records, stats).

    Over-long rows (docs/design.md §5), an error naming the row (on_bad_row=error) or dropped and counted
    under dropped.over_long (on_bad_row=drop): a prompt that leaves no room for one response token, and a
    pair whose chosen and rejected sequences are identical after truncation (they differ only beyond
    max_length: the pair carries no preference). Truncated responses are counted. Rows are named by
    their row in the source (meta.row, set by bench.data.validate) when they have one. With `turns`
    (marginal_context=chat) the pairs are encoded as `ChatTurns` says; its prompts are cut, never refused.
    """
    rows = {"chosen": ([], []), "rejected": ([], [])}
    responses = ([], [])
    kept, stats = [], {"n_rows": len(records), "dropped": {"over_long": 0}, "n_truncated": 0}

    def refuse(i: int, record: dict, problem: str) -> None:
        if on_bad_row == "error":
            raise ValueError(f"{source} row {row_name(i, record)}: {problem}; set dataset.on_bad_row=drop to skip such rows")
        stats["dropped"]["over_long"] += 1

    def row_name(i: int, record: dict):
        return (record.get("meta") or {}).get("row", i)

    for i, record in enumerate(records):
        encoded = {}  # side -> (sequence, response mask, response ids, untruncated length)
        if turns is None:
            prompt_ids = encode_text(tokenizer, record["prompt"])
            if len(with_boundary(tokenizer, prompt_ids)) >= max_length:
                refuse(i, record, f"field 'prompt' is over-long ({len(prompt_ids)} tokens leave no room "
                                  f"for a response within max_length={max_length})")
                continue
            for side in ("chosen", "rejected"):
                response_ids = encode_text(tokenizer, record[side])
                seq, mask = conditional_sequence(tokenizer, prompt_ids, response_ids, max_length)
                # untruncated: the prompt (with its boundary token), every response token and the EOS
                full_length = len(with_boundary(tokenizer, prompt_ids)) + len(response_ids) + 1
                encoded[side] = (seq, mask, response_ids, full_length)
        else:
            try:
                prompt = turns.prompt_text(record["prompt"])
            except ValueError as error:
                raise ValueError(f"{source} row {row_name(i, record)}: field 'prompt' {error}") from None
            split = {side: turns.split(prompt, turns.response_text(record[side])) for side in ("chosen", "rejected")}
            for side, (prompt_ids, response_ids) in turns.truncate(split).items():
                seq = prompt_ids + response_ids
                full_length = sum(map(len, split[side]))
                encoded[side] = (seq, [0] * len(prompt_ids) + [1] * len(response_ids), split[side][1][:-1], full_length)
        if encoded["chosen"][0] == encoded["rejected"][0]:
            refuse(i, record, f"field 'rejected' is identical to 'chosen' after truncation to max_length={max_length} "
                              "(they differ only beyond it)")
            continue
        for slot, side in enumerate(("chosen", "rejected")):
            seq, mask, response_ids, full_length = encoded[side]
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
