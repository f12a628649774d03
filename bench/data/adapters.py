"""Real preference datasets -> normalised records (docs/design.md §5).

Reads a `dataset` config whose `source` is ultrafeedback, hh_rlhf, kto_mix or local through `datasets.load_dataset`
(a hub name, a local dataset directory or local files: one code path for users with network and the offline tests)
and turns each row into a record that `bench.data.validate` checks, rendering conversations by the rules of
docs/design.md §5. `dataset.feedback` says what the rows hold: pairs (`load_preference_records`) or unpaired
examples in TRL's (prompt, completion, label) schema (`load_unpaired_records`). Does not tokenise; knows nothing of
models, methods or the built-in tasks (bench.data.builtin).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from bench.data.files import FORMATS, decoded_rows, read_split
from bench.data.unpaired import FEEDBACK, label_counts
from bench.data.validate import BadRow, check_on_bad_row, merge_stats, validate_records
from bench.mappings import plain_mapping

SOURCES = ("ultrafeedback", "hh_rlhf", "kto_mix", "local")
SPLITS = ("train", "eval")
# What each source's rows hold; local files hold either, as dataset.feedback says.
SOURCE_FEEDBACK = {"ultrafeedback": ("paired",), "hh_rlhf": ("paired",), "kto_mix": ("unpaired",), "local": FEEDBACK}
# dataset.columns keys of a local file, per feedback: (required, optional)
COLUMN_KEYS = {"paired": (("prompt", "chosen", "rejected"), ("score_chosen", "score_rejected")),
               "unpaired": (("prompt", "completion", "label"), ())}
_COLUMN_KEYS_OPTIONAL = COLUMN_KEYS["paired"][1]
_HOLDS = {"paired": "preference pairs (prompt, chosen, rejected)",
          "unpaired": "unpaired examples (prompt, completion, label)"}
HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


# ----------------------------------------------------------------------------- config
def check_dataset_config(cfg: Mapping) -> dict:
    """Validate a real-dataset config before any data is read; return it as a plain dict.

    Errors name the key (`dataset.<key>`), so a sweep fails before the first tensor (docs/design.md §12).
    """
    cfg = plain_mapping(cfg, "dataset")
    source = cfg.get("source")
    if source == "builtin":
        raise ValueError("dataset.source 'builtin' is made by bench.data.builtin (it needs the SFT model), "
                         "not by bench.data.adapters.load_preference_records")
    if source not in SOURCES:
        raise ValueError(f"dataset.source must be one of {('builtin',) + SOURCES}, got {source!r}")
    feedback = cfg.get("feedback", "paired")
    if feedback not in FEEDBACK:
        raise ValueError(f"dataset.feedback must be one of {FEEDBACK}, got {feedback!r}")
    if feedback not in SOURCE_FEEDBACK[source]:
        fits = SOURCE_FEEDBACK[source][0]
        absent = " (the default when the key is absent)" if "feedback" not in cfg else ""
        raise ValueError(f"dataset.feedback={feedback!r}{absent} does not fit source {source!r}, whose rows hold "
                         f"{_HOLDS[fits]}: set dataset.feedback={fits}")
    check_on_bad_row(cfg.get("on_bad_row", "error"))
    for key in ("max_rows", "max_eval_rows", "max_chars"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"dataset.{key} must be a positive integer or null, got {value!r}")
    if not isinstance(cfg.get("train_split"), str) or not cfg["train_split"]:
        raise ValueError(f"dataset.train_split must name a split, got {cfg.get('train_split')!r}")
    if cfg.get("eval_split") is not None and not isinstance(cfg["eval_split"], str):
        raise ValueError(f"dataset.eval_split must name a split or be null, got {cfg['eval_split']!r}")
    for key in ("config_name", "data_dir", "revision"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise ValueError(f"dataset.{key} must be a string or null, got {cfg[key]!r}")

    data_files = cfg.get("data_files")
    if data_files is not None:
        if not isinstance(data_files, Mapping) or not data_files:
            raise ValueError("dataset.data_files must map split names to a file, a glob or a list of them, "
                             f"e.g. {{train: data/train.jsonl}}; got {data_files!r}")
        fmt = cfg.get("format")
        if fmt is not None and fmt not in set(FORMATS.values()):
            raise ValueError(f"dataset.format must be one of {sorted(set(FORMATS.values()))} or null, got {fmt!r}")
    elif source == "local":
        raise ValueError("dataset.data_files is required for source 'local' (e.g. {train: data/train.jsonl})")
    elif not isinstance(cfg.get("path"), str) or not cfg["path"]:
        raise ValueError(f"dataset.path (a hub name or local dataset directory) or dataset.data_files is "
                         f"required for source {source!r}")

    if source == "local":
        _check_columns(cfg.get("columns"), feedback)
    return cfg


def _check_columns(columns: Any, feedback: str) -> None:
    """dataset.columns of a local file: the required keys of `feedback` name columns; keys of the other kind
    may stay mapped (one local_file config serves both, dataset.feedback picks), any other key is refused."""
    required, optional = COLUMN_KEYS[feedback]
    if not isinstance(columns, Mapping):
        scores = f" (and optionally {'/'.join(optional)})" if optional else ""
        raise ValueError(f"dataset.columns must map {'/'.join(required)}{scores} to column names "
                         f"(dataset.feedback={feedback!r}); got {columns!r}")
    known = {key for keys in COLUMN_KEYS.values() for part in keys for key in part}
    unknown = set(columns) - known
    if unknown:
        raise ValueError(f"dataset.columns has unknown keys {sorted(unknown)}; allowed: {sorted(known)} "
                         f"(dataset.feedback={feedback!r} reads {list(required + optional)})")
    for key in required:
        if not isinstance(columns.get(key), str):
            raise ValueError(f"dataset.columns.{key} must name a column, got {columns.get(key)!r} "
                             f"(dataset.feedback={feedback!r} reads {'/'.join(required)})")
    scores = [k for k in optional if columns.get(k) is not None]
    if len(scores) == 1:
        raise ValueError(f"dataset.columns maps {scores[0]} but not the other score: map both or neither")


# ----------------------------------------------------------------------------- entry point
def load_preference_records(cfg: Mapping, split: str, tokenizer: Any = None) -> tuple[list[dict], dict]:
    """Load one split of a real preference dataset as normalised, validated records.

    cfg: a conf/dataset entry (keys in conf/dataset/local_file.yaml) with dataset.feedback paired (or absent).
    split: the role, "train" or "eval" (read from cfg["train_split"] / cfg["eval_split"]), or the
        split's own name as configured there ("train_prefs", "test", ...).
    tokenizer: only its chat template is used (docs/design.md §5).
    Returns (records, stats): records {prompt, chosen, rejected, score_chosen?, score_rejected?, meta};
    stats as in bench.data.validate.new_stats plus "dataset", "split", "prompt_format" and "max_rows";
    the caller logs it and stores it in the run record.
    Raises ValueError if every row examined was dropped.
    """
    return _load(cfg, split, tokenizer, "paired")


def load_unpaired_records(cfg: Mapping, split: str, tokenizer: Any = None) -> tuple[list[dict], dict]:
    """Load one split of a real unpaired dataset (dataset.feedback: unpaired) as validated examples.

    Arguments as for `load_preference_records`. Returns (records, stats): records {prompt, completion,
    label (bool, True = desirable), meta} (bench.data.validate.check_example); stats as for pairs plus
    "n_desirable" and "n_undesirable" (of the kept records).
    Raises ValueError if every row examined was dropped.
    """
    records, stats = _load(cfg, split, tokenizer, "unpaired")
    stats["n_desirable"], stats["n_undesirable"] = label_counts(records)
    return records, stats


def _load(cfg: Mapping, split: str, tokenizer: Any, feedback: str) -> tuple[list[dict], dict]:
    cfg = check_dataset_config(cfg)
    held = cfg.get("feedback", "paired")
    if held != feedback:
        loader = {"paired": "load_preference_records", "unpaired": "load_unpaired_records"}[held]
        raise ValueError(f"dataset {cfg.get('name')!r} holds {_HOLDS[held]} (dataset.feedback={held!r}), not "
                         f"{_HOLDS[feedback]}: it is read by bench.data.adapters.{loader}"
                         + (" (bench.data.unpaired.pairs_to_examples turns pairs into unpaired examples)"
                            if held == "paired" else ""))
    role = _role(cfg, split)
    split_name = cfg.get(f"{role}_split")
    if split_name is None:
        raise ValueError(f"dataset.{role}_split is null: dataset {cfg.get('name')!r} has no {role} split")
    max_rows = cfg.get("max_rows")
    if role == "eval" and cfg.get("max_eval_rows") is not None:
        max_rows = cfg["max_eval_rows"]

    renderer = _Renderer(tokenizer)
    source = cfg["source"]
    records, parts = [], []
    for origin, rows in read_split(cfg, split_name, role):
        convert = _converter(source, cfg, renderer, origin, rows.column_names, feedback)
        file_records, file_stats = validate_records(
            decoded_rows(rows, origin), origin, cfg.get("on_bad_row", "error"), cfg.get("max_chars"),
            convert=convert, max_rows=None if max_rows is None else max_rows - len(records), feedback=feedback,
        )
        records += file_records
        parts.append(file_stats)
        if max_rows is not None and len(records) >= max_rows:
            break
    stats = merge_stats(parts)
    if not records:
        raise ValueError(f"{', '.join(stats['sources'])}: all {stats['n_rows']} rows were dropped "
                         f"{_nonzero(stats['dropped'])} (dataset {cfg.get('name')!r} split {split_name!r}); "
                         f"first errors: {stats['first_errors']}")
    stats.update(dataset=cfg.get("name"), split=split_name, max_rows=max_rows,
                 prompt_format=renderer.format if renderer.rendered else "verbatim")
    return records, stats


def _role(cfg: dict, split: str | None) -> str:
    """"train"/"eval", given the role itself or the configured name of its split."""
    if split in SPLITS:
        return split
    for role in SPLITS:
        if split is not None and split == cfg.get(f"{role}_split"):
            return role
    configured = {f"dataset.{r}_split": cfg.get(f"{r}_split") for r in SPLITS}
    raise ValueError(f"split must be 'train', 'eval' or a configured split name {configured}, got {split!r}")


def _nonzero(counts: Mapping[str, int]) -> dict:
    return {k: v for k, v in counts.items() if v}


# ----------------------------------------------------------------------------- rendering
class _Renderer:
    """Prompt/response text for conversations, under the rules of docs/design.md §5."""

    def __init__(self, tokenizer: Any):
        has_template = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
        self.tokenizer = tokenizer if has_template else None
        self.format = "chat_template" if has_template else "plain"
        self.rendered = False  # until a conversation is rendered; else the split was all verbatim text

    def prompt(self, messages: list[dict]) -> str:
        self.rendered = True
        if self.tokenizer is None:
            turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
            return "\n".join(turns + ["Assistant:"])
        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as err:  # e.g. a template that demands alternating roles
            raise BadRow("bad_conversation", "prompt", f"was refused by the chat template: {err}") from err

    def response(self, content: str) -> str:
        if self.tokenizer is None and not content[:1].isspace():
            return " " + content
        return content


def _messages(value: Any, field: str) -> list[dict]:
    """Check a message list [{"role": str, "content": str}, ...] (non-empty)."""
    if value is None:
        raise BadRow("missing_field", field, "is missing")
    if not isinstance(value, list) or not value:
        raise BadRow("bad_conversation", field, f"is not a non-empty message list (got {type(value).__name__})")
    for turn, message in enumerate(value):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise BadRow("bad_conversation", field,
                         f"message {turn} is not {{'role': str, 'content': str}} (got {message!r})")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _answer(messages: list[dict], field: str) -> str:
    if messages[-1]["role"] != "assistant":
        raise BadRow("bad_conversation", field,
                     f"last message has role {messages[-1]['role']!r}, expected 'assistant'")
    return messages[-1]["content"]


def _text(row: Mapping, field: str, column: str | None = None) -> str:
    value = row.get(column or field)
    if value is None:
        raise BadRow("missing_field", field, "is missing")
    if not isinstance(value, str):
        raise BadRow("not_string", field, f"is not a string (got {type(value).__name__})")
    return value


# ----------------------------------------------------------------------------- adapters
def _converter(source: str, cfg: dict, renderer: _Renderer, origin: str,
               column_names: list[str], feedback: str) -> Callable[[Mapping], dict]:
    """The row -> record function for `source`, after checking the split (named `origin` in messages) has
    the columns it needs."""
    if source == "local":
        used = sum(COLUMN_KEYS[feedback], ())  # the other kind's keys may be mapped too: not read
        columns = {k: v for k, v in cfg["columns"].items() if v is not None and k in used}
        for key, column in columns.items():
            if column not in column_names:
                raise ValueError(f"{origin}: column {column!r} (dataset.columns.{key}) not found; "
                                 f"columns are {column_names}")
        if feedback == "unpaired":
            return lambda row: _unpaired_row(row, columns, renderer)
        return lambda row: _local_row(row, columns, renderer)
    needed = {"ultrafeedback": ("chosen", "rejected"), "hh_rlhf": ("chosen", "rejected"),
              "kto_mix": COLUMN_KEYS["unpaired"][0]}[source]
    missing = [c for c in needed if c not in column_names]
    if missing:
        raise ValueError(f"{origin}: column(s) {missing} required by source {source!r} not found; "
                         f"columns are {column_names}")
    if source == "ultrafeedback":
        return lambda row: _ultrafeedback_row(row, renderer)
    if source == "kto_mix":
        columns = {key: key for key in needed}
        return lambda row: _unpaired_row(row, columns, renderer)
    return lambda row: _hh_row(row, renderer)


def _ultrafeedback_row(row: Mapping, renderer: _Renderer) -> dict:
    chosen, rejected = _messages(row.get("chosen"), "chosen"), _messages(row.get("rejected"), "rejected")
    chosen_answer, rejected_answer = _answer(chosen, "chosen"), _answer(rejected, "rejected")
    context = chosen[:-1]
    if rejected[:-1] != context:
        raise BadRow("prompt_mismatch", "rejected",
                     "has a different conversation before its last message than 'chosen'")
    if not context:  # answer-only lists: the prompt column is the whole conversation
        context = [{"role": "user", "content": _text(row, "prompt")}]
    record = {
        "prompt": renderer.prompt(context),
        "chosen": renderer.response(chosen_answer),
        "rejected": renderer.response(rejected_answer),
        "meta": {"prompt_id": row["prompt_id"]} if row.get("prompt_id") is not None else {},
    }
    for field in ("score_chosen", "score_rejected"):
        if row.get(field) is not None:
            record[field] = row[field]
    return record


def split_hh_transcript(transcript: str, field: str) -> tuple[str, str]:
    """"\\n\\nHuman: q\\n\\nAssistant: a" -> ("\\n\\nHuman: q\\n\\nAssistant:", " a") at the LAST marker."""
    cut = transcript.rfind(HH_ASSISTANT)
    if cut < 0:
        raise BadRow("bad_conversation", field, f"has no {HH_ASSISTANT!r} turn")
    cut += len(HH_ASSISTANT)
    return transcript[:cut], transcript[cut:]


def hh_messages(prompt: str, field: str = "prompt") -> list[dict]:
    """An HH prompt (ending in "\\n\\nAssistant:") -> [{"role": "user"|"assistant", "content"}, ...]."""
    parts = _HH_TURN.split(prompt)  # [before, role, text, role, text, ...]
    if parts[0].strip():
        raise BadRow("bad_conversation", field, f"has text before the first turn marker: {parts[0][:40]!r}")
    roles, texts = parts[1::2], [t.strip() for t in parts[2::2]]
    messages = [{"role": "user" if r == "Human" else "assistant", "content": t} for r, t in zip(roles, texts)]
    # The prompt ends with the empty assistant turn the response fills: the generation prompt.
    return messages[:-1]


def _hh_row(row: Mapping, renderer: _Renderer) -> dict:
    prompt, chosen = split_hh_transcript(_text(row, "chosen"), "chosen")
    rejected_prompt, rejected = split_hh_transcript(_text(row, "rejected"), "rejected")
    if rejected_prompt != prompt:
        raise BadRow("prompt_mismatch", "rejected",
                     f"differs from 'chosen' before the last {HH_ASSISTANT!r} (the prompt must be shared)")
    if renderer.tokenizer is None:
        renderer.rendered = True  # HH's plain rendering is its own transcript
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": {}}
    return {"prompt": renderer.prompt(hh_messages(prompt)), "chosen": chosen.strip(),
            "rejected": rejected.strip(), "meta": {}}


def _local_row(row: Mapping, columns: Mapping[str, str], renderer: _Renderer) -> dict:
    raw_prompt = row.get(columns["prompt"])
    conversational = isinstance(raw_prompt, list)
    record: dict = {"prompt": renderer.prompt(_messages(raw_prompt, "prompt")) if conversational
                    else _text(row, "prompt", columns["prompt"]), "meta": {}}
    for field in ("chosen", "rejected"):
        value = row.get(columns[field])
        text = _answer(_messages(value, field), field) if isinstance(value, list) else _text(row, field, columns[field])
        record[field] = renderer.response(text) if conversational else text
    for field in _COLUMN_KEYS_OPTIONAL:
        if field in columns:
            record[field] = row.get(columns[field])
    return record


def _unpaired_row(row: Mapping, columns: Mapping[str, str], renderer: _Renderer) -> dict:
    """TRL's unpaired schema: prompt and completion as strings (verbatim) or message lists (rendered, the
    completion being one assistant message); the label is passed on for `check_example` to judge."""
    raw_prompt = row.get(columns["prompt"])
    conversational = isinstance(raw_prompt, list)
    prompt = (renderer.prompt(_messages(raw_prompt, "prompt")) if conversational
              else _text(row, "prompt", columns["prompt"]))
    value = row.get(columns["completion"])
    if isinstance(value, list):
        messages = _messages(value, "completion")
        if len(messages) != 1:
            # the conversation before the answer belongs in the prompt; keeping only the last turn would
            # silently drop the rest
            raise BadRow("bad_conversation", "completion",
                         f"holds {len(messages)} messages, expected one assistant message "
                         "(earlier turns belong in 'prompt')")
        text = _answer(messages, "completion")
    else:
        text = _text(row, "completion", columns["completion"])
    return {"prompt": prompt, "completion": renderer.response(text) if conversational else text,
            "label": row.get(columns["label"]), "meta": {}}
