"""Fuzzed input for every real-dataset adapter (docs/design.md §5, §12), property-based (hypothesis).

Generated files in each adapter's schema (ultrafeedback: message lists; hh_rlhf: transcripts; local:
JSONL, CSV, Parquet with a column mapping; and unpaired feedback in TRL's (prompt, completion, label) schema:
local_unpaired, strings with a column mapping, and kto_mix, message lists) are broken on purpose, row by row
(missing keys, wrong types, empty or whitespace text, identical responses, labels that are no booleans, over-long
text, malformed conversations) and file by file (invalid UTF-8, truncated JSONL, non-object lines, empty files,
Parquet columns of the wrong type, a missing column). Each file goes the way a run takes it:
`load_preference_records` then `encode_pairs`, or `load_unpaired_records` then `encode_examples`, with a real
tokenizer. The property: it ends either
- in a ValueError naming the file (and, for a bad row, the row and the field), or
- in records whose counts add up (kept + dropped = rows seen) with every dropped row counted by reason,
never in another exception (a KeyError from an adapter, a TypeError from deep in tokenization, ...).

The default run tries the same few dozen cases per adapter every time (derandomized, so CI is
reproducible); the slow run draws ≥ 1,000 new ones in all (FUZZ_EXAMPLES_SLOW per adapter; replay one
with --hypothesis-seed=N) and prints how the cases ended.
"""
from __future__ import annotations

import collections
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

# Before `datasets` is imported anywhere in this process: nothing here may reach the network.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra: pip install -e '.[test]'")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bench.data.adapters import load_preference_records, load_unpaired_records  # noqa: E402
from bench.data.encoding import encode_pairs  # noqa: E402
from bench.data.examples import encode_examples  # noqa: E402
from bench.data.validate import BAD_ROW_REASONS  # noqa: E402

FUZZ_EXAMPLES = 40        # per adapter, default run
FUZZ_EXAMPLES_SLOW = 350  # per adapter, slow run: 5 adapters x 350 >= 1,000 cases
OUTCOMES: collections.Counter = collections.Counter()

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _tokenizer(chat_template: bool):
    """A byte-level BPE tokenizer trained in-process (no files): any text encodes, as with a hub model's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["the capital of france is paris", "User: hi\nAssistant: hello"], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    tok.chat_template = TEMPLATE if chat_template else None
    return tok


TOKENIZERS = {True: _tokenizer(True), False: _tokenizer(False)}

# ----------------------------------------------------------------------------- values
# Surrogates are left out of generated text: no file format here can hold one (JSON's "\ud800" escape is
# generated separately, as raw file text).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
TRICKY_TEXT = st.sampled_from(["", " ", "\n\t ", "\x00", "\u200b", "\u202e", "Assistant:", "\n\nHuman:", "é" * 300,
                               "word " * 200, "🙂" * 50, "null", "4", "true", "[1, 2]"])
GOOD_TEXT = st.from_regex(r"[a-z]{1,8}( [a-z]{1,8}){0,4}", fullmatch=True)
ANY_TEXT = st.one_of(GOOD_TEXT, GOOD_TEXT, TEXT, TRICKY_TEXT)
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6)
ROLE = st.sampled_from(["user", "assistant", "system", "tool", "", "Assistant"])


def message(role=ROLE):
    good = st.fixed_dictionaries({"role": role, "content": ANY_TEXT})
    return st.one_of(good, good, good, st.fixed_dictionaries({"role": role}), st.fixed_dictionaries({"content": ANY_TEXT}),
                     JSON_VALUE)


@st.composite
def conversation(draw, ends_with_assistant: bool = True):
    turns = draw(st.lists(message(), max_size=4))
    if draw(st.booleans()) and ends_with_assistant:
        turns.append({"role": "assistant", "content": draw(ANY_TEXT)})
    return turns


def maybe(value_strategy, wrong=JSON_VALUE):
    """Mostly the right kind of value, sometimes any JSON value, sometimes missing (the key is dropped)."""
    return st.one_of(value_strategy, value_strategy, value_strategy, wrong, st.just(MISSING))


MISSING = object()


def _row(pairs: dict) -> dict:
    return {k: v for k, v in pairs.items() if v is not MISSING}


# ----------------------------------------------------------------------------- rows per adapter
@st.composite
def local_row(draw):
    prompt = draw(maybe(ANY_TEXT, st.one_of(JSON_VALUE, conversation(False))))
    chosen = draw(maybe(ANY_TEXT, st.one_of(JSON_VALUE, conversation())))
    rejected = draw(st.one_of(maybe(ANY_TEXT, st.one_of(JSON_VALUE, conversation())),
                              st.just(chosen), st.just(f" {chosen} " if isinstance(chosen, str) else chosen)))
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if draw(st.booleans()):
        row["score_chosen"] = draw(maybe(st.floats(-5, 5), JSON_VALUE))
        row["score_rejected"] = draw(maybe(st.floats(-5, 5), JSON_VALUE))
    return _row(row)


@st.composite
def ultrafeedback_row(draw):
    context = draw(st.lists(message(), max_size=3))
    answer = {"role": "assistant", "content": draw(ANY_TEXT)}
    chosen = draw(st.one_of(st.just(context + [answer]), conversation(), JSON_VALUE))
    other = {"role": draw(st.sampled_from(["assistant", "assistant", "user"])), "content": draw(ANY_TEXT)}
    rejected = draw(st.one_of(st.just(context + [other]), st.just(chosen), conversation(), JSON_VALUE))
    row = {"prompt": draw(maybe(ANY_TEXT)), "chosen": chosen, "rejected": rejected,
           "prompt_id": draw(maybe(TEXT)), "score_chosen": draw(maybe(st.floats(0, 10))),
           "score_rejected": draw(maybe(st.floats(0, 10)))}
    if draw(st.integers(0, 5)) == 0:
        del row[draw(st.sampled_from(["chosen", "rejected"]))]
    return _row(row)


@st.composite
def transcript(draw, prefix: str | None = None):
    if prefix is None:
        turns = draw(st.lists(st.tuples(st.sampled_from(["Human", "Assistant", "Humans"]), ANY_TEXT), max_size=4))
        prefix = "".join(f"\n\n{who}: {text}" for who, text in turns)
    ending = draw(st.sampled_from(["\n\nAssistant:", "\n\nAssistant: ", "\n\nHuman:", ""]))
    return prefix + ending + draw(ANY_TEXT), prefix


@st.composite
def hh_row(draw):
    chosen, prefix = draw(transcript())
    rejected = draw(st.one_of(transcript(prefix).map(lambda t: t[0]), transcript().map(lambda t: t[0]), st.just(chosen)))
    return _row({"chosen": draw(maybe(st.just(chosen))), "rejected": draw(maybe(st.just(rejected)))})


# Labels: mostly booleans, else what files hold instead (strings, 0/1, any JSON value) or nothing.
LABEL = maybe(st.booleans(), st.one_of(st.sampled_from(["true", "false", "yes", "1", "0", "", "True"]),
                                       st.integers(0, 1), JSON_VALUE))


@st.composite
def local_unpaired_row(draw):
    prompt = draw(maybe(ANY_TEXT, st.one_of(JSON_VALUE, conversation(False))))
    completion = draw(maybe(ANY_TEXT, st.one_of(JSON_VALUE, conversation())))
    return _row({"prompt": prompt, "completion": completion, "label": draw(LABEL)})


@st.composite
def kto_mix_row(draw):
    answer = [{"role": "assistant", "content": draw(ANY_TEXT)}]
    prompt = draw(maybe(st.lists(message(), min_size=1, max_size=3), st.one_of(JSON_VALUE, ANY_TEXT)))
    completion = draw(maybe(st.just(answer), st.one_of(conversation(), st.just(answer * 2), JSON_VALUE, ANY_TEXT)))
    return _row({"prompt": prompt, "completion": completion, "label": draw(LABEL)})


# Well-formed rows, so that files also mix good rows with bad ones (and drops are counted among kept rows).
# Two responses that share a long start differ only past a short max_length: the pair is then identical
# after truncation, an over-long row to refuse or drop (docs/design.md §5).
SHARED_START = st.tuples(GOOD_TEXT, GOOD_TEXT, GOOD_TEXT, GOOD_TEXT).map(
    lambda t: (t[0], f"{t[1]} {t[1]} {t[1]} {t[2]}", f"{t[1]} {t[1]} {t[1]} {t[3]}"))
GOOD_PAIR = st.one_of(st.tuples(GOOD_TEXT, GOOD_TEXT, GOOD_TEXT), SHARED_START).filter(lambda t: t[1] != t[2])
GOOD_ROWS = {
    "local": GOOD_PAIR.map(lambda t: {"prompt": t[0], "chosen": t[1], "rejected": t[2]}),
    "ultrafeedback": GOOD_PAIR.map(lambda t: {
        "prompt": t[0], "chosen": [{"role": "user", "content": t[0]}, {"role": "assistant", "content": t[1]}],
        "rejected": [{"role": "user", "content": t[0]}, {"role": "assistant", "content": t[2]}]}),
    "hh_rlhf": GOOD_PAIR.map(lambda t: {"chosen": f"\n\nHuman: {t[0]}\n\nAssistant: {t[1]}",
                                        "rejected": f"\n\nHuman: {t[0]}\n\nAssistant: {t[2]}"}),
    "local_unpaired": st.tuples(GOOD_PAIR, st.booleans()).map(
        lambda t: {"prompt": t[0][0], "completion": t[0][1], "label": t[1]}),
    "kto_mix": st.tuples(GOOD_PAIR, st.booleans()).map(lambda t: {
        "prompt": [{"role": "user", "content": t[0][0]}], "completion": [{"role": "assistant", "content": t[0][1]}],
        "label": t[1]}),
}
BAD_ROWS = {"local": local_row(), "ultrafeedback": ultrafeedback_row(), "hh_rlhf": hh_row(),
            "local_unpaired": local_unpaired_row(), "kto_mix": kto_mix_row()}
ROWS = {adapter: st.one_of(GOOD_ROWS[adapter], BAD_ROWS[adapter]) for adapter in BAD_ROWS}
FORMATS = {"local": ["jsonl", "csv", "parquet"], "ultrafeedback": ["jsonl", "parquet"], "hh_rlhf": ["jsonl", "parquet"],
           "local_unpaired": ["jsonl", "csv", "parquet"], "kto_mix": ["jsonl", "parquet"]}
UNPAIRED = {"local_unpaired", "kto_mix"}
# The columns of each adapter's files: what an empty file or a hand-written bad line holds.
COLUMNS = {adapter: ["prompt", "completion", "label"] if adapter in UNPAIRED else ["prompt", "chosen", "rejected"]
           for adapter in ROWS}
FILE_FAULTS = ["none"] * 6 + ["truncate", "invalid_utf8", "empty", "blank", "non_object_line",
               "bad_surrogate_escape", "missing_column", "wrong_column_type"]


# ----------------------------------------------------------------------------- writing files
def _write_jsonl(path: Path, rows: list[dict], fault: str, draw, names: list[str]) -> None:
    lines = [json.dumps(r, ensure_ascii=draw(st.booleans())) for r in rows]
    if fault == "non_object_line" and lines:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["[1, 2]", '"text"', "42", "null", "{"])))
    if fault == "bad_surrogate_escape":
        lines.append(json.dumps({k: "x \\ud800 y" for k in names}).replace("\\\\", "\\"))
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(data)


def _write_csv(path: Path, rows: list[dict], names: list[str]) -> None:
    import pandas as pd

    columns = sorted({k for r in rows for k in r}) or names
    # CSV holds text: a list or dict cell is written as its JSON text, which the adapter reads as a string
    cells = [{k: (json.dumps(r[k]) if isinstance(r.get(k), (list, dict)) else r.get(k)) for k in columns} for r in rows]
    pd.DataFrame(cells, columns=columns).to_csv(path, index=False)


def _write_parquet(path: Path, rows: list[dict], fault: str, draw, names: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = sorted({k for r in rows for k in r}) or names
    arrays = {}
    for column in columns:
        values = [r.get(column) for r in rows]
        try:
            arrays[column] = pa.array(values)
            pq.write_table(pa.table({column: arrays[column]}), pa.BufferOutputStream())  # Parquet can hold it
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            # mixed kinds, or a type Parquet cannot store (a struct without fields): store the JSON text
            arrays[column] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    if fault == "wrong_column_type" and arrays:
        column = draw(st.sampled_from(sorted(arrays)))
        kind = draw(st.sampled_from(["int64", "float64", "binary", "list", "struct", "null"]))
        n = len(rows)
        arrays[column] = {
            "int64": pa.array(list(range(n)), pa.int64()),
            "float64": pa.array([0.5] * n, pa.float64()),
            "binary": pa.array([b"\xff\xfe bytes"] * n, pa.binary()),
            "list": pa.array([[1, 2]] * n, pa.list_(pa.int64())),
            "struct": pa.array([{"a": 1}] * n),
            "null": pa.nulls(n),
        }[kind]
    pq.write_table(pa.table(arrays) if arrays else pa.table({names[0]: pa.array([], pa.string())}), path)


@st.composite
def fuzz_case(draw, adapter: str, mixed: bool = False):
    """(cfg, path, chat_template, max_length, kind). mixed: a readable file whose good rows (at least two) sit
    among bad ones, read under on_bad_row=drop with room for every response: the kept-and-counted path,
    which the broken files of the default run seldom reach."""
    if mixed:
        good = draw(st.lists(GOOD_ROWS[adapter], min_size=2, max_size=4))
        rows = draw(st.permutations(good + draw(st.lists(BAD_ROWS[adapter], min_size=1, max_size=3))))
        fault = "none"
    else:
        rows = draw(st.lists(ROWS[adapter], max_size=6))
        fault = draw(st.sampled_from(FILE_FAULTS))
    fmt = draw(st.sampled_from(FORMATS[adapter]))
    if fault == "missing_column" and rows:
        column = draw(st.sampled_from(sorted({k for r in rows for k in r}) or ["chosen"]))
        rows = [{k: v for k, v in r.items() if k != column} for r in rows]
    directory = Path(tempfile.mkdtemp(prefix="imi-fuzz-"))
    path = directory / f"train.{fmt}"
    if fmt == "jsonl":
        _write_jsonl(path, rows, fault, draw, COLUMNS[adapter])
    elif fmt == "csv":
        _write_csv(path, rows, COLUMNS[adapter])
    else:
        _write_parquet(path, rows, fault, draw, COLUMNS[adapter])
    data = path.read_bytes()
    if fault == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif fault == "invalid_utf8" and fmt != "parquet":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"])) + data[at:]
    elif fault == "empty":
        data = b""
    elif fault == "blank":
        data = b"\n \n\t\n"
    path.write_bytes(data)
    cfg = {"name": f"fuzz_{adapter}", "source": "local" if adapter == "local_unpaired" else adapter,
           "on_bad_row": "drop" if mixed else draw(st.sampled_from(["error", "drop", "drop"])),
           "data_files": {"train": str(path)}, "train_split": "train", "eval_split": None,
           "max_chars": draw(st.sampled_from([None, None, 40, 2000]))}
    if adapter in UNPAIRED:
        cfg["feedback"] = "unpaired"
    if adapter == "local_unpaired":
        cfg["columns"] = {"prompt": "prompt", "completion": "completion", "label": "label"}
    elif adapter == "local":
        cfg["columns"] = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
        if draw(st.booleans()):
            cfg["columns"].update(score_chosen="score_chosen", score_rejected="score_rejected")
    chat_template = draw(st.booleans())
    max_length = 256 if mixed else draw(st.sampled_from([3, 6, 16, 256]))
    return cfg, path, chat_template, max_length, f"{fault}/{fmt}"


# ----------------------------------------------------------------------------- the property
ROW_ERROR = re.compile(r" row \d+: field '[\w<>]+' ")


def check_case(case) -> str:
    cfg, path, chat_template, max_length, kind = case
    tokenizer = TOKENIZERS[chat_template]
    unpaired = cfg.get("feedback") == "unpaired"
    try:
        try:
            load = load_unpaired_records if unpaired else load_preference_records
            records, stats = load(cfg, "train", tokenizer=tokenizer)
            source = ", ".join(stats["sources"])  # how the pipeline names the split's files
            if unpaired:  # as held-out examples are encoded: one block of all of them
                examples, kept, encoded = encode_examples(records, tokenizer, max_length, source, None, 0, cfg["on_bad_row"])
            else:
                pairs, kept, encoded = encode_pairs(records, tokenizer, max_length, source, cfg["on_bad_row"])
        except ValueError as err:
            message = str(err)
            assert str(path) in message, f"the error does not name the file: {message}"
            if message.startswith(f"{path}: could not be read"):  # its parser's own words may say "row"
                outcome = "error: bad file named"
            elif "no usable rows" in message or "rows were dropped" in message:
                outcome = "error: every row dropped and counted"
            elif unpaired and ("do not fill one batch" in message or "needs batches of at least 2" in message):
                assert message.startswith(f"{path}: "), message
                outcome = "error: too few usable examples for KTO's reference point"
            elif " row " in message:
                assert cfg["on_bad_row"] == "error", f"on_bad_row=drop raised for one row: {message}"
                assert ROW_ERROR.search(message), f"a row error must name the row and the field: {message}"
                outcome = "error: bad row named"
            else:
                assert message.startswith(str(path)), message
                outcome = "error: bad file named"
            event(f"{kind}: {outcome}")
            return outcome
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    assert stats["n_kept"] + sum(stats["dropped"].values()) == stats["n_rows"], stats
    assert set(stats["dropped"]) == set(BAD_ROW_REASONS)
    if unpaired:
        return _check_examples(records, stats, examples, kept, encoded, kind)
    assert encoded["n_kept"] + encoded["dropped"]["over_long"] == len(records) and len(kept) == encoded["n_kept"]
    for record in kept:
        for field in ("prompt", "chosen", "rejected"):
            assert isinstance(record[field], str) and record[field].strip()
        assert record["chosen"].strip() != record["rejected"].strip()
    for i in range(len(kept)):  # after truncation too: a pair that became identical carries no preference
        chosen, rejected = (side.input_ids[i][side.attention_mask[i].bool()].tolist() for side in (pairs.chosen, pairs.rejected))
        assert chosen != rejected, f"pair {i} is identical after truncation to max_length={max_length}"
    dropped = sum(stats["dropped"].values()) + encoded["dropped"]["over_long"]
    outcome = "kept, some dropped and counted" if dropped else "kept"
    event(f"{kind}: {outcome}")
    return outcome


def _check_examples(records, stats, examples, kept, encoded, kind) -> str:
    """The unpaired half of the property: every kept example is usable text with a boolean label, and the
    label counts of the file, of the kept examples and of the tensors agree."""
    assert stats["n_kept"] == len(records) == stats["n_desirable"] + stats["n_undesirable"]
    assert stats["n_desirable"] == sum(r["label"] for r in records)
    for record in records:
        for field in ("prompt", "completion"):
            assert isinstance(record[field], str) and record[field].strip()
        assert type(record["label"]) is bool and set(record) == {"prompt", "completion", "label", "meta"}
    dropped_encoding = encoded["dropped"]["over_long"] + encoded["dropped"]["incomplete_block"]
    assert encoded["n_kept"] + dropped_encoding == len(records) and len(kept) == encoded["n_kept"] == len(examples)
    assert sorted(examples.labels.tolist()) == sorted(r["label"] for r in kept)
    assert encoded["n_desirable"] == sum(r["label"] for r in kept)
    dropped = sum(stats["dropped"].values()) + dropped_encoding
    outcome = "kept, some dropped and counted" if dropped else "kept"
    event(f"{kind}: {outcome}")
    return outcome


FUZZ_SETTINGS = dict(deadline=None, database=None, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.fixture(autouse=True)
def _offline_and_quiet(monkeypatch, tmp_path_factory):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_datasets")
    datasets.disable_progress_bars()


@pytest.mark.parametrize("adapter", sorted(ROWS))
def test_fuzzed_files_error_or_count(adapter):
    # derandomized: the default run (CI) tries the same cases every time; the slow run draws new ones
    @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, **FUZZ_SETTINGS)
    @given(fuzz_case(adapter))
    def run(case):
        OUTCOMES[(adapter, check_case(case))] += 1

    run()


@pytest.mark.parametrize("adapter", sorted(ROWS))
def test_fuzzed_mixed_files_keep_and_count(adapter):
    """Good rows among bad ones, dropped: many such files must keep rows and count the rest by reason (a file
    may still end in an error, e.g. a bad row that retypes a column or leaves fewer than two examples)."""
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, **FUZZ_SETTINGS)
    @given(fuzz_case(adapter, mixed=True))
    def run(case):
        outcomes[check_case(case)] += 1

    run()
    # measured (derandomized): 19-40 of 40 keep rows per adapter; fewer for kto_mix, whose Parquet label column
    # turns to text when a bad row's label is no boolean, so that every label of the file is refused
    assert outcomes["kept, some dropped and counted"] + outcomes["kept"] >= FUZZ_EXAMPLES // 4, outcomes


@pytest.mark.slow
@pytest.mark.parametrize("adapter", sorted(ROWS))
def test_fuzzed_files_error_or_count_thoroughly(adapter, capsys):
    before = sum(n for (a, _), n in OUTCOMES.items() if a == adapter)

    @settings(max_examples=FUZZ_EXAMPLES_SLOW, **FUZZ_SETTINGS)
    @given(fuzz_case(adapter))
    def run(case):
        OUTCOMES[(adapter, check_case(case))] += 1

    run()
    ran = sum(n for (a, _), n in OUTCOMES.items() if a == adapter) - before
    assert ran >= FUZZ_EXAMPLES_SLOW  # hypothesis ran every case it was asked for
    with capsys.disabled():
        counts = {o: n for (a, o), n in sorted(OUTCOMES.items()) if a == adapter}
        print(f"\n[fuzz] {adapter}: {ran} cases: {counts}")


def test_pair_identical_after_truncation_is_over_long():
    """The first case the fuzzer found, written out: responses that differ only past max_length were kept
    as a pair with no preference (every margin exactly 0)."""
    tokenizer = TOKENIZERS[False]
    same_start = {"prompt": "p", "chosen": "the capital", "rejected": "the paris", "meta": {"row": 7}}
    fine = {"prompt": "p", "chosen": "paris", "rejected": "the", "meta": {"row": 8}}
    prompt_tokens = 1 + len(tokenizer("p", add_special_tokens=False)["input_ids"])  # BOS + prompt
    max_length = prompt_tokens + len(tokenizer("the", add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match=rf"^src row 7: field 'rejected' is identical to 'chosen' after truncation "
                                         rf"to max_length={max_length}"):
        encode_pairs([same_start, fine], tokenizer, max_length, "src", "error")
    pairs, kept, stats = encode_pairs([same_start, fine], tokenizer, max_length, "src", "drop")
    assert kept == [fine] and stats["dropped"]["over_long"] == 1 and stats["n_kept"] == 1
    _, kept, _ = encode_pairs([same_start, fine], tokenizer, 64, "src", "error")  # room for the difference
    assert kept == [same_start, fine]


@pytest.mark.parametrize("text", ["null\n{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n", "\n  null", "42\n", "true\n"])
def test_json_file_not_starting_with_an_object_is_refused(tmp_path, text):
    """The second case the fuzzer found: pyarrow's JSON reader dies (a segmentation fault, the whole
    process) on a file whose first value is null; it is refused, naming the file, before pyarrow reads it."""
    path = tmp_path / "train.jsonl"
    path.write_text(text)
    cfg = {"name": "x", "source": "local", "on_bad_row": "drop", "data_files": {"train": str(path)},
           "train_split": "train", "eval_split": None, "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}}
    with pytest.raises(ValueError, match=rf"^{path}: could not be read as json: its first value is"):
        load_preference_records(cfg, "train")


def test_keys_that_differ_after_a_nul_make_the_file_unreadable_not_a_crash(tmp_path):
    """The third case the fuzzer found: nested keys "0\\x00" and "0" parse, then fail while the row is
    turned into Python (pyarrow: "duplicate field names"); the file is refused, naming it and the row."""
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "extra": {"0\u0000": 1, "0": 2}}) + "\n")
    cfg = {"name": "x", "source": "local", "on_bad_row": "drop", "data_files": {"train": str(path)},
           "train_split": "train", "eval_split": None, "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}}
    with pytest.raises(ValueError, match=rf"^{path}: could not be read: row 0 cannot be decoded"):
        load_preference_records(cfg, "train")
