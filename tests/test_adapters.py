"""Real-dataset adapters and bad-row checks (docs/design.md §5) on hand-written fixtures, never downloads.

Fixtures (tests/fixtures/data/): ultrafeedback.jsonl and hh_rlhf.jsonl in the hub datasets' schemas,
local_pairs.csv (custom column names), local_bad.jsonl (two good rows among one bad row of each kind a JSONL can hold).
Unpaired feedback in TRL's (prompt, completion, label) schema: kto_mix.jsonl (trl-lib/kto-mix-14k's message lists),
local_unpaired.jsonl (string columns), local_unpaired_bad.jsonl (two good rows among bad ones: empty completion,
missing label, string label, missing prompt, integer label, blank completion).
Parquet copies are written into tmp_path. Expected records are written out by hand from the files.
"""
from __future__ import annotations

import os

# Before `datasets` is imported anywhere in this process: nothing here may reach the network.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gzip
import json
import random
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from bench.data.adapters import check_dataset_config, load_preference_records, load_unpaired_records
from bench.data.validate import (
    BAD_ROW_REASONS,
    BadRow,
    check_example,
    check_length,
    check_record,
    filter_by_length,
    merge_stats,
    validate_records,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "data"
CONF = ROOT / "conf" / "dataset"
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(autouse=True)
def _offline_and_private_cache(monkeypatch, tmp_path_factory):
    import datasets

    # The env vars above are read at import; another test module may have imported datasets first.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_datasets")


def _tokenizer(chat_template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[EOS]"] + "what is the capital of france".split()
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[EOS]")
    tok.chat_template = chat_template
    return tok


def _uf_cfg(files=None, **extra):
    return {"name": "uf_fixture", "source": "ultrafeedback", "on_bad_row": "error",
            "data_files": {"train_prefs": str(files or DATA / "ultrafeedback.jsonl")},
            "train_split": "train_prefs", "eval_split": None, **extra}


def _hh_cfg(path=None, **extra):
    return {"name": "hh_fixture", "source": "hh_rlhf", "on_bad_row": "error",
            "data_files": {"train": str(path or DATA / "hh_rlhf.jsonl")},
            "train_split": "train", "eval_split": None, **extra}


def _local_cfg(path, columns=None, **extra):
    return {"name": "local_fixture", "source": "local", "on_bad_row": "error",
            "data_files": {"train": str(path)}, "train_split": "train", "eval_split": None,
            "columns": columns or {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}, **extra}


UNPAIRED_COLUMNS = {"prompt": "prompt", "completion": "completion", "label": "label"}


def _kto_cfg(path=None, **extra):
    return {"name": "kto_fixture", "source": "kto_mix", "feedback": "unpaired", "on_bad_row": "error",
            "data_files": {"train": str(path or DATA / "kto_mix.jsonl")}, "train_split": "train",
            "eval_split": None, **extra}


def _unpaired_cfg(path, columns=None, **extra):
    return _local_cfg(path, columns or UNPAIRED_COLUMNS, feedback="unpaired", **extra)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------- UltraFeedback
def test_ultrafeedback_plain_rendering_hand_checked():
    records, stats = load_preference_records(_uf_cfg(), "train")
    assert records[0] == {
        "prompt": "User: What is the capital of France?\nAssistant:",
        "chosen": " The capital of France is Paris.",
        "rejected": " I think it is Lyon.",
        "score_chosen": 9.0, "score_rejected": 3.0,
        "meta": {"prompt_id": "uf-0", "row": 0},
    }
    # multi-turn: the prompt is the whole conversation before the last assistant answer
    assert records[1]["prompt"] == ("User: Name a prime number.\nAssistant: 7 is prime.\n"
                                    "User: Name a larger one.\nAssistant:")
    assert (records[1]["chosen"], records[1]["rejected"]) == (" 11 is a larger prime.", " 9 is a larger prime.")
    assert records[2]["chosen"] == " Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky"
    assert stats["n_rows"] == stats["n_kept"] == 3 and not any(stats["dropped"].values())
    assert stats["prompt_format"] == "plain" and stats["split"] == "train_prefs"
    assert stats["sources"] == [str(DATA / "ultrafeedback.jsonl")]


def test_ultrafeedback_chat_template_vs_none():
    with_template, stats = load_preference_records(_uf_cfg(), "train", tokenizer=_tokenizer(TEMPLATE))
    assert stats["prompt_format"] == "chat_template"
    assert with_template[0]["prompt"] == "<|user|>What is the capital of France?\n<|assistant|>"
    assert with_template[0]["chosen"] == "The capital of France is Paris."  # the assistant content as is
    assert with_template[1]["prompt"] == ("<|user|>Name a prime number.\n<|assistant|>7 is prime.\n"
                                          "<|user|>Name a larger one.\n<|assistant|>")
    # a tokenizer without a template renders exactly like no tokenizer
    without, stats = load_preference_records(_uf_cfg(), "train", tokenizer=_tokenizer(None))
    assert stats["prompt_format"] == "plain"
    assert without == load_preference_records(_uf_cfg(), "train")[0]


def test_ultrafeedback_parquet_and_glob_equal_jsonl(tmp_path):
    frame = pd.read_json(DATA / "ultrafeedback.jsonl", lines=True)
    frame.iloc[:2].to_parquet(tmp_path / "train_prefs-00000.parquet")
    frame.iloc[2:].to_parquet(tmp_path / "train_prefs-00001.parquet")
    records, stats = load_preference_records(_uf_cfg(tmp_path / "train_prefs-*.parquet"), "train")
    expected = load_preference_records(_uf_cfg(), "train")[0]
    # rows keep their index within their own file
    expected[2]["meta"]["row"] = 0
    assert records == expected
    assert len(stats["sources"]) == 2 and stats["n_kept"] == 3


def test_shipped_ultrafeedback_config_reads_local_copy():
    cfg = OmegaConf.load(CONF / "ultrafeedback.yaml")
    cfg.data_files = {"train_prefs": str(DATA / "ultrafeedback.jsonl"), "test_prefs": str(DATA / "ultrafeedback.jsonl")}
    cfg.max_eval_rows = 1
    train, _ = load_preference_records(cfg, "train")
    evaluation, stats = load_preference_records(cfg, "eval")
    assert len(train) == 3 and len(evaluation) == 1 and stats["split"] == "test_prefs"
    # the split's own name selects the same role (max_eval_rows applies to test_prefs)
    assert load_preference_records(cfg, "test_prefs") == (evaluation, stats)
    assert load_preference_records(cfg, "train_prefs")[0] == train


def test_ultrafeedback_bad_conversations(tmp_path):
    good = json.loads((DATA / "ultrafeedback.jsonl").read_text().splitlines()[0])
    ends_with_user = {**good, "rejected": good["rejected"][:1]}
    other_context = {**good, "rejected": [{"role": "user", "content": "Another question?"}, good["rejected"][1]]}
    path = _write_jsonl(tmp_path / "uf.jsonl", [good, ends_with_user, other_context])
    with pytest.raises(ValueError, match=rf"{path} row 1: field 'rejected' last message has role 'user'"):
        load_preference_records(_uf_cfg(path), "train")
    records, stats = load_preference_records(_uf_cfg(path, on_bad_row="drop"), "train")
    assert len(records) == 1
    assert stats["dropped"]["bad_conversation"] == 1 and stats["dropped"]["prompt_mismatch"] == 1


# ----------------------------------------------------------------------------- HH-RLHF
def test_hh_rlhf_split_at_last_assistant_turn():
    records, stats = load_preference_records(_hh_cfg(), "train")
    assert records[0] == {"prompt": "\n\nHuman: How do I boil an egg?\n\nAssistant:",
                          "chosen": " Put it in boiling water for about nine minutes.",
                          "rejected": " Eggs come from chickens.", "meta": {"row": 0}}
    assert records[1]["prompt"] == ("\n\nHuman: Can you recommend a book?\n\nAssistant: Sure, what genres do "
                                    "you like?\n\nHuman: Science fiction.\n\nAssistant:")
    assert (records[1]["chosen"], records[1]["rejected"]) == (" Try Dune by Frank Herbert.", " I do not read books.")
    # prompt + response gives back the transcript exactly
    raw = [json.loads(line) for line in (DATA / "hh_rlhf.jsonl").read_text().splitlines()]
    for record, row in zip(records, raw):
        assert record["prompt"] + record["chosen"] == row["chosen"]
        assert record["prompt"] + record["rejected"] == row["rejected"]
    assert stats["prompt_format"] == "plain"


def test_hh_rlhf_chat_template():
    records, stats = load_preference_records(_hh_cfg(), "train", tokenizer=_tokenizer(TEMPLATE))
    assert stats["prompt_format"] == "chat_template"
    assert records[0]["prompt"] == "<|user|>How do I boil an egg?\n<|assistant|>"
    assert records[0]["chosen"] == "Put it in boiling water for about nine minutes."
    assert records[1]["prompt"] == ("<|user|>Can you recommend a book?\n<|assistant|>Sure, what genres do you "
                                    "like?\n<|user|>Science fiction.\n<|assistant|>")
    assert records[1]["rejected"] == "I do not read books."


def test_hh_rlhf_prefix_mismatch(tmp_path):
    rows = [json.loads(line) for line in (DATA / "hh_rlhf.jsonl").read_text().splitlines()]
    rows[1]["rejected"] = rows[1]["rejected"].replace("Science fiction.", "Romance.")
    rows.append({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi\n\nAssistant: hello"})
    path = _write_jsonl(tmp_path / "hh.jsonl", rows)
    with pytest.raises(ValueError) as err:
        load_preference_records(_hh_cfg(path), "train")
    assert str(err.value).startswith(f"{path} row 1: field 'rejected' differs from 'chosen' before the last")
    records, stats = load_preference_records(_hh_cfg(path, on_bad_row="drop"), "train")
    assert [r["meta"]["row"] for r in records] == [0, 2]
    assert stats["dropped"]["prompt_mismatch"] == 1 and stats["dropped"]["bad_conversation"] == 1
    assert stats["first_errors"][1].startswith(f"{path} row 3: field 'chosen' has no")


def test_hh_rlhf_gzip_and_local_directory(tmp_path):
    text = (DATA / "hh_rlhf.jsonl").read_bytes()
    with gzip.open(tmp_path / "train.jsonl.gz", "wb") as f:
        f.write(text)
    from_gz, _ = load_preference_records(_hh_cfg(tmp_path / "train.jsonl.gz"), "train")
    # `path` as a local dataset directory goes through load_dataset(path, split=...)
    folder = tmp_path / "hh_copy"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(text)
    (folder / "test.jsonl").write_bytes(text)
    cfg = OmegaConf.load(CONF / "hh_rlhf.yaml")
    cfg.path = str(folder)
    from_dir, stats = load_preference_records(cfg, "eval")
    assert from_gz == from_dir == load_preference_records(_hh_cfg(), "train")[0]
    assert stats["sources"] == [f"{folder} split test"]


# ----------------------------------------------------------------------------- local files
def test_local_csv_column_mapping():
    columns = {"prompt": "question", "chosen": "good", "rejected": "bad",
               "score_chosen": "rating_good", "score_rejected": "rating_bad"}
    records, stats = load_preference_records(_local_cfg(DATA / "local_pairs.csv", columns), "train")
    assert records == [
        {"prompt": "Translate 'chat' to English.", "chosen": "cat", "rejected": "dog",
         "score_chosen": 5.0, "score_rejected": 1.0, "meta": {"row": 0}},
        {"prompt": "Summarise: the cat sat, then slept.", "chosen": "The cat sat and slept.",
         "rejected": "The dog ran.", "score_chosen": 4.5, "score_rejected": 2.0, "meta": {"row": 1}},
        {"prompt": "Give two lines.", "chosen": "line one\nline two", "rejected": "just one line",
         "score_chosen": 3.0, "score_rejected": 2.5, "meta": {"row": 2}},
    ]
    assert stats["prompt_format"] == "verbatim"


def test_local_missing_column_is_named():
    columns = {"prompt": "question", "chosen": "answer", "rejected": "bad"}
    with pytest.raises(ValueError) as err:
        load_preference_records(_local_cfg(DATA / "local_pairs.csv", columns), "train")
    message = str(err.value)
    assert str(DATA / "local_pairs.csv") in message and "'answer'" in message
    assert "dataset.columns.chosen" in message and "'question', 'good', 'bad'" in message


def test_local_message_list_columns(tmp_path):
    row = {"conversation": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
           "win": [{"role": "assistant", "content": "Hello."}], "lose": "Go away."}
    path = _write_jsonl(tmp_path / "conv.jsonl", [row])
    columns = {"prompt": "conversation", "chosen": "win", "rejected": "lose"}
    plain, stats = load_preference_records(_local_cfg(path, columns), "train")
    assert plain[0]["prompt"] == "System: Be brief.\nUser: Hi?\nAssistant:"
    assert (plain[0]["chosen"], plain[0]["rejected"]) == (" Hello.", " Go away.")
    templated, stats = load_preference_records(_local_cfg(path, columns), "train", tokenizer=_tokenizer(TEMPLATE))
    assert templated[0]["prompt"] == "<|system|>Be brief.\n<|user|>Hi?\n<|assistant|>"
    assert (templated[0]["chosen"], templated[0]["rejected"]) == ("Hello.", "Go away.")


def test_bad_rows_error_names_file_row_and_field():
    with pytest.raises(ValueError) as err:
        load_preference_records(_local_cfg(DATA / "local_bad.jsonl"), "train")
    assert str(err.value).startswith(f"{DATA / 'local_bad.jsonl'} row 1: field 'chosen' is empty")


def test_bad_rows_dropped_and_counted_by_reason():
    records, stats = load_preference_records(_local_cfg(DATA / "local_bad.jsonl", on_bad_row="drop"), "train")
    assert [r["prompt"] for r in records] == ["Say hello.", "Add 2 and 2."]
    assert [r["meta"]["row"] for r in records] == [0, 4]
    assert stats["n_rows"] == 6 and stats["n_kept"] == 2
    assert stats["dropped"] == {**dict.fromkeys(BAD_ROW_REASONS, 0),
                                "empty_text": 2, "missing_field": 1, "identical_responses": 1}
    source = DATA / "local_bad.jsonl"
    assert stats["first_errors"] == [
        f"{source} row 1: field 'chosen' is empty",
        f"{source} row 2: field 'rejected' is missing",
        f"{source} row 3: field 'rejected' is identical to 'chosen'",
        f"{source} row 5: field 'prompt' is empty",
    ]


def test_non_string_column_from_csv(tmp_path):
    # A number in a JSONL text column makes `datasets` 5.2 re-type the whole column and turn digit
    # strings like "4" into ints too, so the non-string case is exercised with a numeric CSV column.
    (tmp_path / "numbers.csv").write_text("prompt,chosen,rejected\nPick a number.,seven,7\n")
    with pytest.raises(ValueError, match=r"numbers.csv row 0: field 'rejected' is not a string \(got int\)"):
        load_preference_records(_local_cfg(tmp_path / "numbers.csv"), "train")


def test_max_rows_takes_first_valid_rows():
    cfg = _local_cfg(DATA / "local_bad.jsonl", on_bad_row="drop", max_rows=2)
    records, stats = load_preference_records(cfg, "train")
    assert [r["meta"]["row"] for r in records] == [0, 4]
    assert stats["n_rows"] == 5 and stats["max_rows"] == 2  # stopped after the second kept row
    records, _ = load_preference_records({**cfg, "max_rows": 1}, "train")
    assert [r["meta"]["row"] for r in records] == [0]


def test_max_rows_spans_files(tmp_path):
    cfg = _hh_cfg(max_rows=4)
    cfg["data_files"]["train"] = [str(DATA / "hh_rlhf.jsonl"), str(DATA / "hh_rlhf.jsonl")]
    records, stats = load_preference_records(cfg, "train")
    assert [r["meta"]["row"] for r in records] == [0, 1, 2, 0]
    assert stats["n_rows"] == 4 and len(stats["sources"]) == 2


def test_all_rows_dropped_is_an_error(tmp_path):
    path = _write_jsonl(tmp_path / "same.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "a"}] * 2)
    with pytest.raises(ValueError, match=r"all 2 rows were dropped \{'identical_responses': 2\}"):
        load_preference_records(_local_cfg(path, on_bad_row="drop"), "train")


# ----------------------------------------------------------------------------- unpaired feedback
KTO_RECORDS = [  # kto_mix.jsonl without a chat template, written out by hand
    {"prompt": "User: What is the capital of France?\nAssistant:", "completion": " The capital of France is Paris.",
     "label": True, "meta": {"row": 0}},
    {"prompt": "User: What is the capital of France?\nAssistant:", "completion": " I think it is Lyon.",
     "label": False, "meta": {"row": 1}},
    {"prompt": "User: Name a prime number.\nAssistant: 7 is prime.\nUser: Name a larger one.\nAssistant:",
     "completion": " 11 is a larger prime.", "label": True, "meta": {"row": 2}},
    {"prompt": "System: Answer in one word.\nUser: What colour is a clear sky?\nAssistant:", "completion": " Green.",
     "label": False, "meta": {"row": 3}},
]


def test_kto_mix_plain_rendering_hand_checked():
    records, stats = load_unpaired_records(_kto_cfg(), "train")
    assert records == KTO_RECORDS
    assert all(type(r["label"]) is bool for r in records)
    assert stats == {"sources": [str(DATA / "kto_mix.jsonl")], "on_bad_row": "error", "n_rows": 4, "n_kept": 4,
                     "dropped": dict.fromkeys(BAD_ROW_REASONS, 0), "first_errors": [], "dataset": "kto_fixture",
                     "split": "train", "max_rows": None, "prompt_format": "plain",
                     "n_desirable": 2, "n_undesirable": 2}


def test_kto_mix_chat_template():
    records, stats = load_unpaired_records(_kto_cfg(), "train", tokenizer=_tokenizer(TEMPLATE))
    assert stats["prompt_format"] == "chat_template"
    # the same rule as the paired adapters: the prompt with the generation prompt, the answer as it is
    assert records[0]["prompt"] == "<|user|>What is the capital of France?\n<|assistant|>"
    assert records[0]["completion"] == "The capital of France is Paris."
    assert records[2]["prompt"] == ("<|user|>Name a prime number.\n<|assistant|>7 is prime.\n"
                                    "<|user|>Name a larger one.\n<|assistant|>")
    assert records[3]["prompt"] == "<|system|>Answer in one word.\n<|user|>What colour is a clear sky?\n<|assistant|>"
    assert [r["label"] for r in records] == [True, False, True, False]
    # the paired UltraFeedback fixture's first pair renders to the same prompt and answers
    pairs, _ = load_preference_records(_uf_cfg(), "train", tokenizer=_tokenizer(TEMPLATE))
    assert (pairs[0]["prompt"], pairs[0]["chosen"], pairs[0]["rejected"]) == (
        records[0]["prompt"], records[0]["completion"], records[1]["completion"])


def test_shipped_kto_mix_config_reads_a_local_parquet_copy(tmp_path):
    """conf/dataset/kto_mix.yaml with `path` at a local folder of Parquet files typed as the hub's
    (prompt/completion: list<struct<content, role>>, label: bool)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (DATA / "kto_mix.jsonl").read_text().splitlines()]
    message = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
    schema = pa.schema([("prompt", message), ("completion", message), ("label", pa.bool_())])
    folder = tmp_path / "kto_copy"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema), folder / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[2:], schema), folder / "data" / "test-00000-of-00001.parquet")
    cfg = OmegaConf.load(CONF / "kto_mix.yaml")
    cfg.path = str(folder)
    train, train_stats = load_unpaired_records(cfg, "train")
    evaluation, stats = load_unpaired_records(cfg, "eval")
    assert train == KTO_RECORDS and train_stats["dataset"] == "kto_mix"
    assert evaluation == [{**r, "meta": {"row": i}} for i, r in enumerate(KTO_RECORDS[2:])]
    assert stats["sources"] == [f"{folder} split test"] and stats["split"] == "test"
    assert (stats["n_desirable"], stats["n_undesirable"]) == (1, 1)


def test_local_unpaired_strings_verbatim():
    records, stats = load_unpaired_records(_unpaired_cfg(DATA / "local_unpaired.jsonl"), "train")
    assert records == [
        {"prompt": "Translate 'chat' to English.", "completion": "cat", "label": True, "meta": {"row": 0}},
        {"prompt": "Translate 'chat' to English.", "completion": "dog", "label": False, "meta": {"row": 1}},
        {"prompt": "Give two lines.", "completion": "line one\nline two", "label": True, "meta": {"row": 2}},
    ]
    assert stats["prompt_format"] == "verbatim" and (stats["n_desirable"], stats["n_undesirable"]) == (2, 1)
    # the same text through a chat template: strings are not conversations, so nothing is rendered
    assert load_unpaired_records(_unpaired_cfg(DATA / "local_unpaired.jsonl"), "train",
                                 tokenizer=_tokenizer(TEMPLATE))[0] == records


def test_local_unpaired_csv_column_mapping(tmp_path):
    # CSV has no booleans: its parser reads true/false cells (any case) as booleans, 0/1 as integers
    (tmp_path / "fb.csv").write_text("question,answer,liked\nHi?,Hello.,true\nHi?,Go away.,FALSE\n")
    columns = {"prompt": "question", "completion": "answer", "label": "liked"}
    records, _ = load_unpaired_records(_unpaired_cfg(tmp_path / "fb.csv", columns), "train")
    assert [(r["completion"], r["label"]) for r in records] == [("Hello.", True), ("Go away.", False)]
    (tmp_path / "numbers.csv").write_text("question,answer,liked\nHi?,Hello.,1\nHi?,Go away.,0\n")
    with pytest.raises(ValueError, match=r"numbers.csv row 0: field 'label' is not a boolean \(got int 1\)"):
        load_unpaired_records(_unpaired_cfg(tmp_path / "numbers.csv", columns), "train")


def test_unpaired_string_labels_are_refused(tmp_path):
    path = _write_jsonl(tmp_path / "strings.jsonl", [{"prompt": "p", "completion": "a", "label": "true"},
                                                     {"prompt": "p", "completion": "b", "label": "false"}])
    with pytest.raises(ValueError) as err:
        load_unpaired_records(_unpaired_cfg(path), "train")
    assert str(err.value).startswith(f"{path} row 0: field 'label' is not a boolean (got str 'true'); use true")
    with pytest.raises(ValueError, match=r"all 2 rows were dropped \{'bad_label': 2\}"):
        load_unpaired_records(_unpaired_cfg(path, on_bad_row="drop"), "train")


def test_unpaired_bad_rows_error_names_file_row_and_field():
    with pytest.raises(ValueError) as err:
        load_unpaired_records(_unpaired_cfg(DATA / "local_unpaired_bad.jsonl"), "train")
    assert str(err.value) == (f"{DATA / 'local_unpaired_bad.jsonl'} row 1: field 'completion' is empty "
                              "(set dataset.on_bad_row=drop to skip such rows and count them)")


def test_unpaired_bad_rows_dropped_and_counted_by_reason():
    records, stats = load_unpaired_records(_unpaired_cfg(DATA / "local_unpaired_bad.jsonl", on_bad_row="drop"), "train")
    assert records == [{"prompt": "Say hello.", "completion": "Hello!", "label": True, "meta": {"row": 0}},
                       {"prompt": "Add 2 and 2.", "completion": "Five.", "label": False, "meta": {"row": 5}}]
    assert stats["n_rows"] == 8 and stats["n_kept"] == 2
    assert (stats["n_desirable"], stats["n_undesirable"]) == (1, 1)
    assert stats["dropped"] == {**dict.fromkeys(BAD_ROW_REASONS, 0),
                                "empty_text": 2, "missing_field": 2, "bad_label": 2}
    source = DATA / "local_unpaired_bad.jsonl"
    assert stats["first_errors"] == [
        f"{source} row 1: field 'completion' is empty",
        f"{source} row 2: field 'label' is missing",
        f"{source} row 3: field 'label' is not a boolean (got str 'yes'); use true (desirable) or false (undesirable)",
        f"{source} row 4: field 'prompt' is missing",
        f"{source} row 6: field 'label' is not a boolean (got int 1); use true (desirable) or false (undesirable)",
    ]  # the sixth, row 7's blank completion, is counted (empty_text: 2) but not quoted: five are kept


def test_unpaired_max_rows_and_max_chars():
    cfg = _unpaired_cfg(DATA / "local_unpaired_bad.jsonl", on_bad_row="drop", max_rows=1)
    records, stats = load_unpaired_records(cfg, "train")
    assert [r["meta"]["row"] for r in records] == [0] and stats["n_rows"] == 1 and stats["max_rows"] == 1
    # "Translate 'chat' to English." is 28 characters: + "cat"/"dog" = 31; "Give two lines." + 17 = 32
    records, stats = load_unpaired_records(_unpaired_cfg(DATA / "local_unpaired.jsonl", on_bad_row="drop",
                                                         max_chars=31), "train")
    assert [r["meta"]["row"] for r in records] == [0, 1] and stats["dropped"]["over_long"] == 1
    assert stats["first_errors"] == [f"{DATA / 'local_unpaired.jsonl'} row 2: field 'completion' is over-long: "
                                     "prompt + completion is 32 characters > max_chars 31"]


def test_kto_mix_bad_conversations(tmp_path):
    good = json.loads((DATA / "kto_mix.jsonl").read_text().splitlines()[0])
    two_answers = {**good, "completion": good["completion"] * 2}
    user_answer = {**good, "completion": [{"role": "user", "content": "Paris?"}]}
    empty_answer = {**good, "completion": [{"role": "assistant", "content": " "}]}
    no_label = {k: v for k, v in good.items() if k != "label"}
    path = _write_jsonl(tmp_path / "kto.jsonl", [good, two_answers, user_answer, empty_answer, no_label])
    with pytest.raises(ValueError, match=rf"^{path} row 1: field 'completion' holds 2 messages, expected one assistant"):
        load_unpaired_records(_kto_cfg(path), "train")
    records, stats = load_unpaired_records(_kto_cfg(path, on_bad_row="drop"), "train")
    assert records == KTO_RECORDS[:1]
    assert stats["dropped"]["bad_conversation"] == 2 and stats["dropped"]["empty_text"] == 1
    assert stats["dropped"]["missing_field"] == 1 and stats["n_rows"] == 5
    assert stats["first_errors"][1] == f"{path} row 2: field 'completion' last message has role 'user', expected 'assistant'"


def test_kto_mix_missing_column_is_named(tmp_path):
    path = _write_jsonl(tmp_path / "nolabel.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(ValueError, match=r"nolabel.jsonl: column\(s\) \['label'\] required by source 'kto_mix' not found"):
        load_unpaired_records(_kto_cfg(path), "train")


def test_feedback_picks_the_loader():
    with pytest.raises(ValueError) as err:
        load_preference_records(_kto_cfg(), "train")
    assert "dataset.feedback='unpaired'" in str(err.value) and "load_unpaired_records" in str(err.value)
    with pytest.raises(ValueError) as err:
        load_unpaired_records(_uf_cfg(), "train")
    assert "dataset.feedback='paired'" in str(err.value) and "pairs_to_examples" in str(err.value)
    # a local file's feedback is what the config says; absent means paired
    with pytest.raises(ValueError, match="dataset.feedback='paired'"):
        load_unpaired_records(_local_cfg(DATA / "local_unpaired.jsonl", UNPAIRED_COLUMNS), "train")


def test_local_file_recipe_for_unpaired_files(make_config):
    """The override conf/dataset/local_file.yaml documents, through Hydra's composition: feedback alone switches
    the columns read (the config maps both kinds)."""
    cfg = make_config("method=kto", "dataset=local_file", "dataset.feedback=unpaired",
                      f"dataset.data_files.train={DATA / 'local_unpaired.jsonl'}",
                      f"dataset.data_files.test={DATA / 'local_unpaired.jsonl'}")
    train, _ = load_unpaired_records(cfg.dataset, "train")
    evaluation, _ = load_unpaired_records(cfg.dataset, "eval")
    assert train == evaluation == load_unpaired_records(_unpaired_cfg(DATA / "local_unpaired.jsonl"), "train")[0]


@pytest.mark.parametrize("row, reason, field", [
    ({"prompt": "Q?", "completion": "yes"}, "missing_field", "label"),
    ({"prompt": "Q?", "completion": "yes", "label": None}, "missing_field", "label"),
    ({"prompt": "Q?", "completion": "yes", "label": "false"}, "bad_label", "label"),
    ({"prompt": "Q?", "completion": "yes", "label": 0}, "bad_label", "label"),
    ({"prompt": "Q?", "completion": "yes", "label": 1.0}, "bad_label", "label"),
    ({"prompt": "Q?", "completion": "yes", "label": [True]}, "bad_label", "label"),
    ({"prompt": "Q?", "completion": " \n", "label": True}, "empty_text", "completion"),
    ({"prompt": "Q?", "completion": 7, "label": True}, "not_string", "completion"),
    ({"completion": "yes", "label": True}, "missing_field", "prompt"),
    ({"prompt": "", "completion": "yes", "label": True}, "empty_text", "prompt"),
    ({"prompt": "Q?", "completion": "yes", "label": True, "meta": 3}, "bad_conversation", "meta"),
    ("Q? yes", "bad_conversation", "<row>"),
])
def test_validate_unpaired_reasons(row, reason, field):
    good = {"prompt": "Q?", "completion": "yes", "label": False}
    with pytest.raises(ValueError, match=rf"^src row 1: field '{field}' "):
        validate_records([good, row], "src", "error", feedback="unpaired")
    records, stats = validate_records([good, row], "src", "drop", feedback="unpaired")
    assert records == [{**good, "meta": {"row": 0}}]
    assert stats["dropped"][reason] == 1 and sum(stats["dropped"].values()) == 1


def test_check_example_max_chars_boundary_and_no_pair_checks():
    row = {"prompt": "abc", "completion": "12345", "label": True}  # 3 + 5 = 8 characters
    assert check_example(row, max_chars=8) == {**row, "meta": {}}
    with pytest.raises(BadRow, match="prompt \\+ completion is 8 characters > max_chars 7") as bad:
        check_example(row, max_chars=7)
    assert (bad.value.reason, bad.value.field) == ("over_long", "completion")
    # a pair's fields mean nothing here, and an unpaired row is no pair
    assert check_example({**row, "chosen": "x", "score_chosen": "bad"})["label"] is True
    with pytest.raises(BadRow, match="field 'chosen' is missing"):
        check_record(row)
    with pytest.raises(ValueError, match="feedback must be one of"):
        validate_records([row], "src", "error", feedback="kto")


# ----------------------------------------------------------------------------- config errors
@pytest.mark.parametrize("change, message", [
    ({"source": "jsonl"}, "dataset.source must be one of"),
    ({"source": "builtin"}, "bench.data.builtin"),
    ({"on_bad_row": "skip"}, "dataset.on_bad_row must be one of"),
    ({"max_rows": 0}, "dataset.max_rows must be a positive integer"),
    ({"max_chars": 1.5}, "dataset.max_chars must be a positive integer"),
    ({"data_files": None}, "dataset.data_files is required for source 'local'"),
    ({"format": "xlsx"}, "dataset.format must be one of"),
    ({"columns": {"prompt": "q", "chosen": "a"}}, "dataset.columns.rejected must name a column"),
    ({"columns": {"prompt": "q", "chosen": "a", "rejected": "b", "answer": "c"}}, r"unknown keys \['answer'\]"),
    ({"columns": {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": "s"}}, "map both or neither"),
    ({"train_split": None}, "dataset.train_split must name a split"),
    ({"feedback": "pairs"}, r"dataset.feedback must be one of \('paired', 'unpaired'\), got 'pairs'"),
    ({"feedback": None}, "dataset.feedback must be one of"),
    # unpaired keys under the default feedback: the pair's columns are what is missing
    ({"columns": {"prompt": "q", "completion": "a", "label": "l"}},
     r"dataset.columns.chosen must name a column, got None \(dataset.feedback='paired' reads prompt/chosen/rejected\)"),
])
def test_config_errors_name_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        check_dataset_config({**_local_cfg(DATA / "local_pairs.csv"), **change})


@pytest.mark.parametrize("change, message", [
    ({"columns": {"prompt": "q", "completion": "a"}}, "dataset.columns.label must name a column"),
    ({"columns": {"prompt": "q", "completion": "a", "label": None}}, "dataset.columns.label must name a column"),
    ({"columns": {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": None}},
     r"dataset.columns.completion must name a column, got None \(dataset.feedback='unpaired' reads "
     r"prompt/completion/label\)"),
    ({"columns": {**UNPAIRED_COLUMNS, "weight": "w"}},
     r"unknown keys \['weight'\]; allowed: .*\(dataset.feedback='unpaired' reads \['prompt', 'completion', 'label'\]\)$"),
    ({"columns": None}, "dataset.columns must map prompt/completion/label to column names"),
    ({"source": "kto_mix", "feedback": "paired"}, "dataset.feedback='paired' does not fit source 'kto_mix'"),
    ({"source": "ultrafeedback"}, "dataset.feedback='unpaired' does not fit source 'ultrafeedback', whose rows hold "
                                  r"preference pairs \(prompt, chosen, rejected\): set dataset.feedback=paired"),
])
def test_unpaired_config_errors_name_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        check_dataset_config({**_unpaired_cfg(DATA / "local_unpaired.jsonl"), **change})


def test_kto_mix_needs_feedback_unpaired():
    cfg = {k: v for k, v in _kto_cfg().items() if k != "feedback"}
    with pytest.raises(ValueError, match=r"dataset.feedback='paired' \(the default when the key is absent\) does not "
                                         r"fit source 'kto_mix', whose rows hold unpaired examples"):
        check_dataset_config(cfg)


def test_hub_source_needs_path_or_files():
    with pytest.raises(ValueError, match="dataset.path"):
        check_dataset_config({**_uf_cfg(), "data_files": None, "path": None})


@pytest.mark.parametrize("cfg, split, message", [
    (_local_cfg(DATA / "nope.jsonl"), "train", r"dataset.data_files.train: no file at '.*nope.jsonl'"),
    (_local_cfg(DATA / "missing-*.jsonl"), "train", "no file at"),
    (_local_cfg(DATA / "local_bad.jsonl"), "eval", "dataset.eval_split is null"),
    ({**_local_cfg(DATA / "local_bad.jsonl"), "eval_split": "test"}, "eval", "dataset.eval_split='test' has no entry in dataset.data_files"),
    ({**_local_cfg(DATA / "local_bad.jsonl"), "data_files": {"train": str(DATA / "local_bad.jsonl"), "test": None},
      "eval_split": "test"}, "eval", "dataset.data_files.test is null"),
    (_local_cfg(DATA / "local_bad.jsonl"), "validation", "split must be 'train', 'eval' or a configured split"),
    (_local_cfg(DATA / "local_bad.jsonl"), None, "got None"),
])
def test_split_and_file_errors(cfg, split, message):
    with pytest.raises(ValueError, match=message):
        load_preference_records(cfg, split)


def test_unknown_extension_and_unreadable_file(tmp_path):
    (tmp_path / "pairs.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"pairs.txt: cannot tell the format .* dataset.format"):
        load_preference_records(_local_cfg(tmp_path / "pairs.txt"), "train")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a", "chosen": "b"\n')  # unterminated object
    with pytest.raises(ValueError, match=r"broken.jsonl: could not be read as json"):
        load_preference_records(_local_cfg(tmp_path / "broken.jsonl"), "train")


@pytest.mark.parametrize("entry", ["ultrafeedback", "hh_rlhf", "kto_mix", "local_file"])
def test_shipped_dataset_configs_are_complete(entry):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{entry}.yaml"))
    assert {"name", "source", "on_bad_row", "train_split", "eval_split", "max_rows"} <= set(cfg)
    assert cfg["name"] == entry and cfg["on_bad_row"] == "error"
    if entry == "local_file":
        cfg["data_files"] = {"train": str(DATA / "local_bad.jsonl"), "test": None}  # the ??? values
    check_dataset_config(cfg)
    # every key carries a comment saying why (the group's documentation lives in the YAML)
    for line in (CONF / f"{entry}.yaml").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert "#" in line or line.endswith(":"), f"{entry}.yaml: no comment on {line!r}"


# ----------------------------------------------------------------------------- validate_records
def _pair(**fields):
    return {"prompt": "Q?", "chosen": "yes", "rejected": "no", **fields}


@pytest.mark.parametrize("row, reason, field", [
    (_pair(chosen=3), "not_string", "chosen"),
    (_pair(prompt=["Q?"]), "not_string", "prompt"),
    (_pair(rejected=None), "missing_field", "rejected"),
    (_pair(rejected=" \n"), "empty_text", "rejected"),
    (_pair(rejected=" yes "), "identical_responses", "rejected"),
    (_pair(score_chosen=1.0), "bad_score", "score_rejected"),
    (_pair(score_chosen=float("nan"), score_rejected=1.0), "bad_score", "score_chosen"),
    (_pair(score_chosen=1.0, score_rejected=True), "bad_score", "score_rejected"),
    (_pair(score_chosen="9", score_rejected=1.0), "bad_score", "score_chosen"),
    (_pair(meta=["x"]), "bad_conversation", "meta"),
])
def test_validate_records_reasons(row, reason, field):
    with pytest.raises(ValueError, match=rf"^src row 1: field '{field}' "):
        validate_records([_pair(), row], "src", "error")
    records, stats = validate_records([_pair(), row], "src", "drop")
    assert len(records) == 1 and stats["dropped"][reason] == 1 and sum(stats["dropped"].values()) == 1


def test_validate_records_max_chars_boundary():
    row = _pair(prompt="abc", chosen="12345", rejected="1")  # 3 + max(5, 1) = 8 characters
    assert validate_records([row], "src", "error", max_chars=8)[0][0]["chosen"] == "12345"
    expected = "src row 0: field 'chosen' is over-long: prompt \\+ chosen is 8 characters > max_chars 7"
    with pytest.raises(ValueError, match=expected):
        validate_records([row], "src", "error", max_chars=7)


def test_validate_records_output_shape():
    records, stats = validate_records([_pair(score_chosen=2, score_rejected=1, extra="x")], "src", "error")
    assert records == [{"prompt": "Q?", "chosen": "yes", "rejected": "no",
                        "score_chosen": 2.0, "score_rejected": 1.0, "meta": {"row": 0}}]
    assert type(records[0]["score_chosen"]) is float
    assert stats["sources"] == ["src"] and stats["on_bad_row"] == "error"


def test_merge_stats_sums_counts():
    _, a = validate_records([_pair(), _pair(chosen="")], "a", "drop")
    _, b = validate_records([_pair(rejected="yes")], "b", "drop")
    merged = merge_stats([a, b])
    assert merged["n_rows"] == 3 and merged["n_kept"] == 1 and merged["sources"] == ["a", "b"]
    assert merged["dropped"]["empty_text"] == 1 and merged["dropped"]["identical_responses"] == 1
    with pytest.raises(ValueError, match="different on_bad_row"):
        merge_stats([a, validate_records([_pair()], "c", "error")[1]])


def test_bad_row_reason_must_be_known():
    with pytest.raises(ValueError, match="unknown bad-row reason"):
        BadRow("odd", "prompt", "is odd")


# ----------------------------------------------------------------------------- check_length
def test_check_length_hand_examples():
    # fits as is
    assert check_length([1, 2], [3, 4], [5], max_length=4) == (([1, 2], [3, 4], [5]), None)
    # prompt keeps its last 2 tokens; responses keep their first 6 - 2 = 4
    ids, bad = check_length([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [6, 7, 8, 11], max_length=6, max_prompt_length=2)
    assert bad is None and ids == ([4, 5], [6, 7, 8, 9], [6, 7, 8, 11])
    # a prompt of max_length tokens leaves no response token
    ids, bad = check_length([1, 2, 3], [4], [5], max_length=3)
    assert ids is None and bad.reason == "over_long" and bad.field == "prompt"
    assert "3 prompt tokens (after truncation), max_length 3" in str(bad)
    # responses that differ only after the budget are the same pair after truncation
    ids, bad = check_length([1, 2], [3, 4, 5], [3, 4, 6], max_length=4)
    assert ids is None and bad.reason == "over_long" and "identical to 'chosen' after truncation to 2" in str(bad)
    # min_response_tokens raises the bar
    assert check_length([1, 2], [3], [4], max_length=3, min_response_tokens=2)[1].field == "prompt"


def test_check_length_brute_force():
    rng = random.Random(0)
    for _ in range(2000):
        prompt = [rng.randrange(3) for _ in range(rng.randrange(0, 7))]
        chosen, rejected = ([rng.randrange(3) for _ in range(rng.randrange(1, 5))] for _ in range(2))
        max_length, max_prompt = rng.randrange(1, 9), rng.choice([None, 1, 2, 4])
        ids, bad = check_length(prompt, chosen, rejected, max_length, max_prompt)
        kept_prompt = prompt if max_prompt is None else prompt[max(0, len(prompt) - max_prompt):]
        room = max_length - len(kept_prompt)
        usable = room >= 1 and chosen[:room] != rejected[:room]
        assert (ids is not None) == usable and (bad is None) == usable
        if usable:
            p, c, r = ids
            assert p == kept_prompt and prompt[len(prompt) - len(p):] == p
            assert c == chosen[:room] and r == rejected[:room]
            assert len(p) + max(len(c), len(r)) <= max_length


def test_filter_by_length_continues_the_stats():
    records, stats = validate_records([_pair(), _pair(chosen=""), _pair(prompt="long")], "src", "drop")
    examples = [{"prompt_ids": [1] * len(r["prompt"]), "chosen_ids": [7], "rejected_ids": [8], "meta": r["meta"]}
                for r in records]
    kept, stats = filter_by_length(examples, "src", "drop", max_length=4, stats=stats)
    assert [e["meta"]["row"] for e in kept] == [0]
    assert stats["n_rows"] == 3 and stats["n_kept"] == 1
    assert stats["dropped"]["empty_text"] == 1 and stats["dropped"]["over_long"] == 1
    assert stats["first_errors"][1].startswith("src row 2: field 'prompt' leaves no room for a response")
    with pytest.raises(ValueError, match=r"^src row 2: field 'prompt' leaves no room"):
        filter_by_length(examples, "src", "error", max_length=4)


def test_filter_by_length_on_real_tokens():
    """HH fixture through a byte tokenizer (one token per byte); prompts are 42, 114 and 51 bytes."""
    from transformers import ByT5Tokenizer

    tok = ByT5Tokenizer()
    records, _ = load_preference_records(_hh_cfg(), "train")
    encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    examples = [{"prompt_ids": encode(r["prompt"]), "chosen_ids": encode(r["chosen"]),
                 "rejected_ids": encode(r["rejected"]), "meta": r["meta"]} for r in records]
    assert [len(e["prompt_ids"]) for e in examples] == [42, 114, 51]
    # room for one response token: row 0 keeps only the shared leading space of " Put"/" Eggs", so
    # its pair is identical after truncation; rows 1 and 2 have no room at all
    _, stats = filter_by_length(examples, "hh", "drop", max_length=43)
    assert stats["n_kept"] == 0 and stats["dropped"]["over_long"] == 3
    assert stats["first_errors"][0].startswith(
        "hh row 0: field 'rejected' is identical to 'chosen' after truncation to 1")
    # room for two: row 0 survives with " P" vs " E"
    kept, stats = filter_by_length(examples, "hh", "drop", max_length=44)
    assert [e["meta"]["row"] for e in kept] == [0]
    assert tok.decode(kept[0]["chosen_ids"]) == " P" and tok.decode(kept[0]["rejected_ids"]) == " E"
    # room for everything in rows 0 and 2 at 51 + 2; row 1 stays out until 116
    kept, _ = filter_by_length(examples, "hh", "drop", max_length=53)
    assert [e["meta"]["row"] for e in kept] == [0, 2]
