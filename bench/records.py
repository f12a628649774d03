"""Run records (docs/design.md §9): one directory per run, written atomically.

Layout: `<runs_root>/<sweep_id>/<run_id>/record.json` + `history.jsonl`. The fields of a record, the
schema version and the config keys that never change a result are in analysis/record_schema.yaml, which
the analysis reads too (the record is its contract). Only this module writes records.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import yaml


def _schema() -> dict:
    """analysis/record_schema.yaml, found without importing the analysis package (it needs no bench)."""
    spec = importlib.util.find_spec("analysis")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the analysis package (which holds record_schema.yaml) is not installed beside bench")
    return yaml.safe_load((Path(spec.submodule_search_locations[0]) / "record_schema.yaml").read_text())


SCHEMA = _schema()
SCHEMA_VERSION = SCHEMA["schema_version"]
RECORD_FILE = SCHEMA["files"]["record"]
HISTORY_FILE = SCHEMA["files"]["history"]
# Config keys that do not change a run's result: two runs that differ only in these are the same run.
NON_RESULT_KEYS = tuple(SCHEMA["non_result_config_keys"])


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same directory + rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy / torch scalars and paths end up in metrics and configs
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def config_hash(config: dict) -> str:
    """Stable 16-hex-digit hash of the result-determining part of a resolved config."""
    relevant = {k: v for k, v in config.items() if k not in NON_RESULT_KEYS}
    blob = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_identity(config: dict) -> tuple[str, str]:
    """(run_id, config_hash) of a resolved config: readable, and unique per result-determining config."""
    digest = config_hash(config)
    return f"{config['method']['name']}-{config['dataset']['name']}-s{config['seed']}-{digest[:8]}", digest


def run_dir(runs_root: Path, sweep_id: str, run_id: str) -> Path:
    return Path(runs_root) / sweep_id / run_id


def read_record(directory: Path) -> dict | None:
    """The record in `directory`, or None if there is none (a run killed before it wrote one)."""
    path = Path(directory) / RECORD_FILE
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def completed_record(directory: Path, expected_hash: str, code_fingerprint: str | None = None) -> dict | None:
    """The record if the run there completed with this config hash and, when `code_fingerprint` is given,
    by the same code (provenance.code_fingerprint): a re-launch skips it. A record made by other code is
    run again and replaced."""
    record = read_record(directory)
    return record if record and is_completed(record, expected_hash, code_fingerprint) else None


def is_completed(record: dict, expected_hash: str, code_fingerprint: str | None = None) -> bool:
    """Whether `record` completed with this config hash (and by this code, when a fingerprint is given)."""
    same_code = code_fingerprint is None or (record.get("provenance") or {}).get("code_fingerprint") == code_fingerprint
    return record.get("status") == "completed" and record.get("config_hash") == expected_hash and same_code


def write_record(directory: Path, record: dict) -> Path:
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(directory) / RECORD_FILE
    atomic_write_json(path, record)
    return path


def write_history(directory: Path, rows: Iterable[dict]) -> Path:
    lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
    path = Path(directory) / HISTORY_FILE
    atomic_write_text(path, lines)
    return path


def read_history(directory: Path) -> list[dict]:
    path = Path(directory) / HISTORY_FILE
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
