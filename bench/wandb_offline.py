"""Reading an offline W&B run back from its `.wandb` file: no network, no key, no subprocess.

Owns the file format (below) and `read_offline_run`, which returns the run's config, summary, history
and identity. The logger that writes these files is bench.loggers; it uses `iter_wandb_records` only to
wait until a finished run is on disk.

The .wandb file is W&B's transaction log: a 7-byte header (b":W&B", magic 0xBEE1 little-endian,
version 0) then LevelDB-log-format blocks of 32 KiB; each chunk has a 7-byte header (checksum u32,
length u16, type u8) and chunks of types FIRST/MIDDLE/LAST join into one record. The checksum is
zlib's CRC-32 over the type byte and the data. Each record is a protobuf `wandb_internal_pb2.Record`.
This is the format `wandb sync` reads, so it stays readable across wandb versions (the `wandb leet
inspect --json` CLI reads the same file but only exists in recent wandb releases).
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
_BLOCK = 32768
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def find_offline_run_file(run_dir: Path) -> Path:
    """The newest `run-*.wandb` under `run_dir` (a run directory, its wandb/ folder, an
    offline-run-* folder, or the .wandb file itself)."""
    path = Path(run_dir)
    if path.is_file():
        return path
    patterns = ("run-*.wandb", "offline-run-*/run-*.wandb", "wandb/offline-run-*/run-*.wandb")
    found = [f for pattern in patterns for f in path.glob(pattern)]
    if not found:
        raise FileNotFoundError(f"{path}: no offline W&B run (expected wandb/offline-run-*/run-*.wandb)")
    # offline-run-<YYYYMMDD_HHMMSS>-<id>: a re-launched run in the same directory is the newest one
    return max(found, key=lambda f: (f.stat().st_mtime, f.parent.name))


def iter_wandb_records(path: Path):
    """Yield the protobuf Records of a .wandb file in order. A torn tail (a run killed while
    writing) ends the stream; a checksum mismatch raises ValueError naming the file and offset."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[: len(_HEADER)] != _HEADER:
        raise ValueError(f"{path}: not a W&B transaction log (bad header)")
    pos, pending = len(_HEADER), b""
    while pos + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER:  # block trailer: zero padding
            pos += left_in_block
            continue
        checksum, length, kind = struct.unpack_from("<IHB", data, pos)
        body = data[pos + _CHUNK_HEADER: pos + _CHUNK_HEADER + length]
        if len(body) < length or (checksum == 0 and length == 0 and kind == 0):
            break  # torn or preallocated tail
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) != checksum:
            raise ValueError(f"{path}: checksum mismatch in the chunk at byte {pos}")
        pos += _CHUNK_HEADER + length
        if kind == _FULL:
            pending, chunk = b"", body
        elif kind == _FIRST:
            pending = body
            continue
        elif kind == _MIDDLE:
            pending += body
            continue
        elif kind == _LAST:
            pending, chunk = b"", pending + body
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {pos - _CHUNK_HEADER - length}")
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        yield record


def read_offline_run(run_dir: Path) -> dict:
    """Read an offline W&B run back locally.

    Returns {"config": dict, "summary": dict, "history": [{"step": int, <metric>: value, ...}],
    "run": {"id", "name", "project", "entity", "group", "job_type", "tags", "exit_code"}}.
    W&B's own keys (those starting with "_", e.g. _runtime, _timestamp, _wandb) are left out, so
    history rows have the shape of the run record's history.jsonl. exit_code is None when the run
    never finished (killed).
    """
    path = find_offline_run_file(run_dir)
    config: dict = {}
    summary: dict = {}
    history: list[dict] = []
    run: dict = {"exit_code": None}
    for record in iter_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, name=r.display_name, project=r.project, entity=r.entity,
                       group=r.run_group, job_type=r.job_type, tags=list(r.tags))
            _apply_items(config, r.config.update, r.config.remove)
        elif kind == "config":
            _apply_items(config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply_items(summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            row: dict = {}
            _apply_items(row, record.history.item, ())
            step = record.history.step.num if record.history.HasField("step") else row.get("_step")
            history.append({"step": step, **_public(row)})
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return {"config": _public(config), "summary": _public(summary), "history": history, "run": run}


def _apply_items(target: dict, updates, removes) -> None:
    for item in updates:
        path = list(item.nested_key) or [item.key]
        node = target
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _item_value(item)
    for item in removes:
        path = list(item.nested_key) or [item.key]
        node = target
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)


def _item_value(item) -> Any:
    # History items may carry a typed value (newer wandb) instead of JSON text.
    typed = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if typed == "none":
        return None
    if typed == "json":
        return json.loads(item.json)
    if typed is not None:
        return getattr(item, typed)
    return json.loads(item.value_json)


def _public(d: dict) -> dict:
    return {key: value for key, value in d.items() if not str(key).startswith("_")}
