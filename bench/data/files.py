"""Reading the rows of a real preference dataset (docs/design.md §5): a hub dataset or local dataset directory
(`dataset.path`), or local files (`dataset.data_files`), all through `datasets.load_dataset`.

Local files are read one by one, so every message names the file (and the row, where one is at fault).
`bench.data.adapters` turns the rows into records; `bench.preflight` checks the files exist before a
sweep starts, with `expand_files`, so both say the same thing about a missing file.
"""
from __future__ import annotations

import glob
import importlib
import os
from typing import Any, Iterator, Mapping

# File extension -> `datasets` packaged builder; compression suffixes are looked through.
FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
COMPRESSION = (".gz", ".bz2", ".xz", ".zst")
_OPENERS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}  # .zst has no reader in the standard library


def expand_files(spec: Any, key: str) -> list[str]:
    """A path, a glob, or a list of them (config key `key`) -> existing files, in the given order (globs
    sorted). `~` is expanded. Raises ValueError naming the key and the pattern that matched nothing."""
    specs = [spec] if isinstance(spec, str) else list(spec) if isinstance(spec, (list, tuple)) else None
    if not specs or not all(isinstance(s, str) for s in specs):
        raise ValueError(f"{key} must be a path, a glob or a list of them, got {spec!r}")
    files = []
    for pattern in specs:
        expanded = os.path.expanduser(pattern)
        matches = sorted(glob.glob(expanded)) if glob.has_magic(expanded) else [expanded]
        if not matches or not all(os.path.isfile(m) for m in matches):
            raise ValueError(f"{key}: no file at {pattern!r} (relative paths resolve against {os.getcwd()}); "
                             f"point {key} at the file, e.g. {key}=/abs/path/train.jsonl")
        files += matches
    return files


def format_of(path: str) -> str:
    """The `datasets` builder for a file, from its extension (compression suffixes looked through)."""
    stem = path
    for suffix in COMPRESSION:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    ext = os.path.splitext(stem)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: cannot tell the format from extension {ext!r}; set dataset.format to "
                         f"one of {sorted(set(FORMATS.values()))}")
    return FORMATS[ext]


def split_files(data_files: Mapping, split: str, role: str) -> list[str]:
    """The files of split `split`, which `dataset.<role>_split` names, in `dataset.data_files`."""
    key = f"dataset.{role}_split"
    if split not in data_files:
        raise ValueError(f"{key}={split!r} has no entry in dataset.data_files (entries: {sorted(data_files)})")
    if data_files[split] is None:
        raise ValueError(f"dataset.data_files.{split} is null but {key} names it: give a file, or set {key}=null")
    return expand_files(data_files[split], f"dataset.data_files.{split}")


def read_split(cfg: dict, split_name: str, role: str) -> Iterator[tuple[str, Any]]:
    """Yield (label for messages, datasets.Dataset) for each source of the split `split_name`, which
    `dataset.<role>_split` names."""
    import datasets

    if cfg.get("data_files") is None:
        subset = "/".join(str(cfg[k]) for k in ("config_name", "data_dir") if cfg.get(k))
        label = cfg["path"] + (f" ({subset})" if subset else "") + f" split {split_name}"
        try:
            rows = datasets.load_dataset(cfg["path"], cfg.get("config_name"), data_dir=cfg.get("data_dir"),
                                         split=split_name, revision=cfg.get("revision"))
        except ValueError as err:  # e.g. unknown split: add which config key chose it
            raise ValueError(f"{label}: {err} (check dataset.path / train_split / eval_split)") from err
        yield label, rows
        return

    for path in split_files(cfg["data_files"], split_name, role):
        fmt = cfg.get("format") or format_of(path)
        if fmt == "json":
            check_json_start(path)
        try:
            rows = datasets.load_dataset(fmt, data_files={"rows": [path]}, split="rows")
        except Exception as err:  # pyarrow/pandas parse errors do not say which file
            raise ValueError(f"{path}: could not be read as {fmt}: {causes(err)}") from err
        yield path, rows


def decoded_rows(rows, label: str):
    """The rows of one source, in order. Some files parse but fail only when a row is turned into Python
    (found by tests/test_fuzz_adapters.py): invalid UTF-8 inside a nested value (UnicodeDecodeError), or
    nested keys that differ only after a NUL character (pyarrow's "duplicate field names" ValueError,
    or a KeyError in `datasets`). Such a file is corrupt, not one bad row to drop: it is refused, naming
    the file and the row. Iterating only reads, so any exception here is such a failure."""
    iterator = iter(rows)
    index = 0
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except Exception as err:
            raise ValueError(f"{label}: could not be read: row {index} cannot be decoded ({causes(err)}); "
                             "is the file UTF-8, with plain keys?") from err
        yield row
        index += 1


def check_json_start(path: str) -> None:
    """A JSON(L) file must start with an object (or, for .json, an array of them). pyarrow 26's JSON reader,
    which `datasets` uses, crashes the whole process (a segmentation fault, no exception) on a file whose
    first value is `null`: such a file is refused here, naming it, before pyarrow sees it."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _OPENERS:
        opener = importlib.import_module(_OPENERS[suffix]).open
    elif suffix in COMPRESSION:
        return  # .zst: left to `datasets`
    else:
        opener = open
    with opener(path, "rb") as f:
        head = f.read(1 << 16).decode("utf-8", errors="replace").lstrip()
    if head and head[0] not in "{[":
        first = head.splitlines()[0][:40]
        raise ValueError(f"{path}: could not be read as json: its first value is {first!r}, not a JSON object "
                         "(each line of a JSONL file must be one object)")


def causes(err: BaseException) -> str:
    """"Type: message" of an exception and of what caused it: `datasets` wraps the parser's own error
    (which says what is wrong where, e.g. "JSON parse error: Invalid value. in row 3") in a generic one."""
    parts = []
    while err is not None and len(parts) < 4:
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return " <- ".join(parts)
