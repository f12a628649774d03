"""Checks on normalised preference records, and the bad-row policy (docs/design.md §5).

`validate_records` applies the text-level checks every source goes through under one `on_bad_row` policy
("error" raises naming source, row and field; "drop" skips and counts by reason): `check_record` for pairs,
`check_example` for unpaired examples (`feedback="unpaired"`). `check_length` / `filter_by_length` decide whether a
pair still fits `max_length` after truncation. Reads no files and imports no tokenizer, model or method code:
adapters hand it records, the trainer token ids.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

from bench.data.unpaired import FEEDBACK

TEXT_FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_TEXT_FIELDS = ("prompt", "completion")
SCORE_FIELDS = ("score_chosen", "score_rejected")
ON_BAD_ROW = ("error", "drop")

# Every reason a row can be refused for; the stats dict always carries all of them (zeros included)
# so run records from different datasets have the same columns.
BAD_ROW_REASONS = (
    "missing_field",        # a required field is absent or None
    "not_string",           # a text field holds a number, list, ...
    "empty_text",           # a text field is empty or whitespace only
    "identical_responses",  # chosen == rejected: the pair carries no preference
    "over_long",            # over max_chars, or no room for a response after token truncation
    "bad_score",            # a score is not a finite number, or only one of the two is given
    "bad_conversation",     # malformed message list / transcript (adapter-specific)
    "prompt_mismatch",      # chosen and rejected disagree on the conversation before the answer
    "bad_label",            # an unpaired example's label is not a boolean (true = desirable)
)
# How many refusal messages the stats keep under "drop", so a log shows what was dropped.
_N_EXAMPLE_ERRORS = 5


class BadRow(Exception):
    """Raised by an adapter's row conversion; `validate_records` turns it into the policy's outcome."""

    def __init__(self, reason: str, field: str, problem: str):
        if reason not in BAD_ROW_REASONS:
            raise ValueError(f"unknown bad-row reason {reason!r}; expected one of {BAD_ROW_REASONS}")
        super().__init__(f"field '{field}' {problem}")
        self.reason, self.field, self.problem = reason, field, problem


def new_stats(on_bad_row: str) -> dict:
    """An empty stats dict: {"sources", "on_bad_row", "n_rows", "n_kept", "dropped", "first_errors"}."""
    check_on_bad_row(on_bad_row)
    return {
        "sources": [],
        "on_bad_row": on_bad_row,
        "n_rows": 0,          # rows examined (fewer than the source holds when max_rows stopped early)
        "n_kept": 0,
        "dropped": {reason: 0 for reason in BAD_ROW_REASONS},
        "first_errors": [],   # up to _N_EXAMPLE_ERRORS messages of dropped rows
    }


def merge_stats(parts: Sequence[dict]) -> dict:
    """Sum the stats of several sources (e.g. the files of one split) into one dict."""
    if not parts:
        raise ValueError("merge_stats needs at least one stats dict")
    policies = {p["on_bad_row"] for p in parts}
    if len(policies) != 1:
        raise ValueError(f"cannot merge stats made under different on_bad_row policies {sorted(policies)}")
    merged = new_stats(policies.pop())
    for part in parts:
        merged["sources"] += part["sources"]
        merged["n_rows"] += part["n_rows"]
        merged["n_kept"] += part["n_kept"]
        for reason, count in part["dropped"].items():
            merged["dropped"][reason] = merged["dropped"].get(reason, 0) + count
        room = _N_EXAMPLE_ERRORS - len(merged["first_errors"])
        merged["first_errors"] += part["first_errors"][:max(room, 0)]
    return merged


def check_on_bad_row(on_bad_row: str) -> None:
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"dataset.on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")


def _refuse(stats: dict, source: str, index: int, bad: BadRow) -> None:
    """Apply the policy to one bad row: raise under "error", count under "drop"."""
    message = f"{source} row {index}: {bad}"
    if stats["on_bad_row"] == "error":
        raise ValueError(message + " (set dataset.on_bad_row=drop to skip such rows and count them)")
    stats["dropped"][bad.reason] += 1
    if len(stats["first_errors"]) < _N_EXAMPLE_ERRORS:
        stats["first_errors"].append(message)


def check_record(row: Mapping, max_chars: int | None = None) -> dict:
    """Return the cleaned normalised record, or raise BadRow naming the first bad field.

    Over-long in characters: len(prompt) + max(len(chosen), len(rejected)) > max_chars, i.e. the
    longer of the two sequences the trainer will build. This is a cheap pre-filter for pathological
    rows before tokenisation; the token-level rule is `check_length`.
    """
    _check_mapping(row)
    record = {field: _text(row, field) for field in TEXT_FIELDS}
    # Compared without surrounding whitespace: " yes" and "yes" are the same answer to a reader,
    # and a pair that differs only there teaches the model nothing but whitespace.
    if record["chosen"].strip() == record["rejected"].strip():
        raise BadRow("identical_responses", "rejected", "is identical to 'chosen'")
    if max_chars is not None:
        longer = max(("chosen", "rejected"), key=lambda f: len(record[f]))
        n_chars = len(record["prompt"]) + len(record[longer])
        if n_chars > max_chars:
            raise BadRow("over_long", longer,
                         f"is over-long: prompt + {longer} is {n_chars} characters > max_chars {max_chars}")

    given = [f for f in SCORE_FIELDS if row.get(f) is not None]
    if len(given) == 1:
        missing = SCORE_FIELDS[1 - SCORE_FIELDS.index(given[0])]
        raise BadRow("bad_score", missing, f"is missing while '{given[0]}' is given (give both or neither)")
    for field in given:
        value = row[field]
        # bool is an int subclass; a True score is a data error, not 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadRow("bad_score", field, f"is not a finite number (got {value!r})")
        record[field] = float(value)
    record["meta"] = _meta(row)
    return record


def check_example(row: Mapping, max_chars: int | None = None) -> dict:
    """The unpaired twin of `check_record`: return {"prompt", "completion", "label", "meta"} cleaned, or raise
    BadRow naming the first bad field.

    The label must be a real boolean (True = desirable), as in TRL's unpaired datasets; strings ("true",
    "yes") and numbers (0/1) are refused (bad_label): whether 0 or "negative" marks the desirable class is a
    file's own convention, which guessing could silently invert. (A CSV's true/false cells are read as
    booleans by its parser, so they pass.) Over-long in characters: len(prompt) + len(completion) > max_chars.
    """
    _check_mapping(row)
    record = {field: _text(row, field) for field in UNPAIRED_TEXT_FIELDS}
    label = row.get("label")
    if label is None:
        raise BadRow("missing_field", "label", "is missing")
    if not isinstance(label, bool):
        shown = repr(label) if len(repr(label)) <= 40 else repr(label)[:37] + "..."
        raise BadRow("bad_label", "label", f"is not a boolean (got {type(label).__name__} {shown}); "
                                           "use true (desirable) or false (undesirable)")
    record["label"] = label
    if max_chars is not None:
        n_chars = len(record["prompt"]) + len(record["completion"])
        if n_chars > max_chars:
            raise BadRow("over_long", "completion",
                         f"is over-long: prompt + completion is {n_chars} characters > max_chars {max_chars}")
    record["meta"] = _meta(row)
    return record


def _check_mapping(row: object) -> None:
    if not isinstance(row, Mapping):
        raise BadRow("bad_conversation", "<row>", f"is a {type(row).__name__}, expected a mapping")


def _text(row: Mapping, field: str) -> str:
    """A text field of a record, present, a string and not blank."""
    value = row.get(field)
    if value is None:
        raise BadRow("missing_field", field, "is missing")
    if not isinstance(value, str):
        raise BadRow("not_string", field, f"is not a string (got {type(value).__name__})")
    if not value.strip():
        raise BadRow("empty_text", field, "is empty")
    return value


def _meta(row: Mapping) -> dict:
    meta = row.get("meta")
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise BadRow("bad_conversation", "meta", f"is not a mapping (got {type(meta).__name__})")
    return dict(meta)


_CHECKS = {"paired": check_record, "unpaired": check_example}


def validate_records(
    rows: Iterable,
    source: str,
    on_bad_row: str,
    max_chars: int | None = None,
    *,
    convert: Callable[[object], Mapping] | None = None,
    max_rows: int | None = None,
    feedback: str = "paired",
) -> tuple[list[dict], dict]:
    """Check rows and apply the bad-row policy; return (records, stats).

    rows: normalised records, or a source's raw rows when `convert` is given (an adapter's
        row -> record function that may raise BadRow); row i of the iterable is "row i" in messages.
    feedback: "paired" checks each record with `check_record`, "unpaired" with `check_example`.
    source: how messages name where the rows came from ("data/train.jsonl",
        "Anthropic/hh-rlhf split test").
    on_bad_row: "error" raises ValueError("<source> row <i>: field '<f>' <problem>") at the first bad
        row; "drop" skips it and counts it under stats["dropped"][reason].
    max_chars: see `check_record`; None disables the character check.
    max_rows: stop once this many rows are kept (quick runs); stats then cover the rows examined.

    Each kept record gets meta["row"] = i (unless the adapter set it) so a later token-level
    refusal can still name the source row. stats: see `new_stats`, with sources = [source].
    """
    if max_rows is not None and max_rows <= 0:
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    if feedback not in FEEDBACK:
        raise ValueError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")
    check = _CHECKS[feedback]
    stats = new_stats(on_bad_row)
    stats["sources"].append(source)
    records: list[dict] = []
    for index, row in enumerate(rows):
        if max_rows is not None and len(records) >= max_rows:
            break
        stats["n_rows"] += 1
        try:
            record = check(convert(row) if convert is not None else row, max_chars)
        except BadRow as bad:
            _refuse(stats, source, index, bad)
            continue
        record["meta"].setdefault("row", index)
        records.append(record)
    stats["n_kept"] = len(records)
    return records, stats


def check_length(
    prompt_ids: Sequence[int],
    chosen_ids: Sequence[int],
    rejected_ids: Sequence[int],
    max_length: int,
    max_prompt_length: int | None = None,
    min_response_tokens: int = 1,
) -> tuple[tuple[list[int], list[int], list[int]] | None, BadRow | None]:
    """Truncate one tokenised pair to fit `max_length`, or say why it cannot be used.

    Truncation (the same for every method, so their inputs are identical):
    1. the prompt keeps its LAST `max_prompt_length` tokens (when set): the end of a prompt - the
       latest turn and the generation cue "Assistant:" - is what the response depends on most;
    2. each response keeps its FIRST `max_length - len(prompt)` tokens, so prompt + response never
       exceeds `max_length`.

    A pair is "over-long after truncation" (reason over_long) when
    - the truncated prompt leaves fewer than `min_response_tokens` tokens for a response, or
    - the truncated chosen and rejected are identical: they differed only beyond the budget, so the
      pair carries no preference (every pairwise margin is exactly 0).

    Returns ((prompt, chosen, rejected) as lists, None) when the pair is usable, else (None, BadRow).
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if max_prompt_length is not None and max_prompt_length <= 0:
        raise ValueError(f"max_prompt_length must be positive or None, got {max_prompt_length}")
    if min_response_tokens < 1:
        raise ValueError(f"min_response_tokens must be >= 1, got {min_response_tokens}")
    prompt = list(prompt_ids)
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt = prompt[len(prompt) - max_prompt_length:]
    budget = max_length - len(prompt)
    if budget < min_response_tokens:
        return None, BadRow(
            "over_long", "prompt",
            f"leaves no room for a response: {len(prompt)} prompt tokens (after truncation), "
            f"max_length {max_length}, at least {min_response_tokens} response token(s) needed",
        )
    chosen, rejected = list(chosen_ids)[:budget], list(rejected_ids)[:budget]
    if chosen == rejected:
        return None, BadRow(
            "over_long", "rejected",
            f"is identical to 'chosen' after truncation to {budget} response tokens "
            f"(they differ only beyond max_length {max_length})",
        )
    return (prompt, chosen, rejected), None


def filter_by_length(
    examples: Sequence[Mapping],
    source: str,
    on_bad_row: str,
    max_length: int,
    max_prompt_length: int | None = None,
    min_response_tokens: int = 1,
    stats: dict | None = None,
) -> tuple[list[dict], dict]:
    """Apply `check_length` to tokenised examples under the bad-row policy.

    examples: mappings with "prompt_ids", "chosen_ids", "rejected_ids" (and any other keys, kept);
        messages name meta["row"] when present (set by `validate_records`), else the list position.
    stats: the dict `validate_records` returned, to keep counting into (the run record then holds
        one set of counts); a fresh one when None. Counts go to dropped["over_long"].
    Returns (examples with the three id lists replaced by their truncated versions, stats).
    """
    if stats is None:
        stats = new_stats(on_bad_row)
        stats["sources"].append(source)
        stats["n_rows"] = stats["n_kept"] = len(examples)
    elif stats["on_bad_row"] != on_bad_row:
        raise ValueError(f"stats were made under on_bad_row={stats['on_bad_row']!r}, not {on_bad_row!r}")
    kept = []
    for position, example in enumerate(examples):
        ids, bad = check_length(
            example["prompt_ids"], example["chosen_ids"], example["rejected_ids"],
            max_length, max_prompt_length, min_response_tokens,
        )
        if bad is not None:
            row = (example.get("meta") or {}).get("row", position)
            _refuse(stats, source, row, bad)
            stats["n_kept"] -= 1
            continue
        kept.append({**example, "prompt_ids": ids[0], "chosen_ids": ids[1], "rejected_ids": ids[2]})
    return kept, stats
