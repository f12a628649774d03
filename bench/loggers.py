"""Experiment loggers (DESIGN §10, W&B): one small interface the trainer calls, and a local reader.

Owns:
- `RunLogger`: start / log_step / finish, with `NoneLogger` (logger=none) and `WandbLogger`
  (logger=wandb, mode online | offline | disabled).
- `build_logger`: the `logger` config group -> a RunLogger, with errors naming `logger.<key>`.
- `read_offline_run`: reads an offline W&B run back from its `.wandb` file, with no network and no key.

Must not: write run records (the local records are the source of truth, bench/records.py writes them),
read or store a W&B key (wandb takes it from WANDB_API_KEY or its own `wandb login`), or decide which
process logs. Only the main process may log: the trainer passes `is_main_process`
(accelerate's `Accelerator.is_main_process`, rank 0) to `build_logger`, and every other rank gets a
NoneLogger, so a multi-rank job makes one W&B run, not one per rank.
"""
from __future__ import annotations

import json
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, Mapping

from bench.redaction import looks_secret, redact_secrets

LOGGER_NAMES = ("none", "wandb")
WANDB_MODES = ("online", "offline", "disabled")
WANDB_KEYS = ("name", "mode", "project", "entity", "tags")
RUN_STATUSES = ("completed", "failed")
COST_PREFIX = "cost/"
# How long finish waits for wandb-core to flush the run's transaction log (it takes ~0.1 s here).
FLUSH_TIMEOUT_S = 60.0
# W&B's own limits (its server rejects longer values); checked here so a sweep fails before compute.
MAX_TAG_CHARS = 64
# Characters W&B does not allow in a project name.
PROJECT_FORBIDDEN_CHARS = "/\\#?%:"


class RunLogger:
    """What the trainer calls. The base class logs nothing; subclasses send the calls somewhere.

    Call order: start once, log_step any number of times with non-decreasing steps, finish once
    (also when the run failed, with status="failed"). finish after finish is a no-op.
    """

    def start(self, *, config: dict, run_id: str, sweep_id: str, method: str, run_dir: Path) -> None:
        """Open the run: `config` is the resolved config, `run_dir` is `<runs root>/<sweep>/<run>`."""

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Per-step metrics (history). Several calls with the same step merge into one row."""

    def finish(self, *, status: str, metrics: dict, cost: dict) -> None:
        """Close the run with its final metrics (DESIGN §7) and cost (DESIGN §8)."""


class NoneLogger(RunLogger):
    """logger=none, and every non-main process: the run record alone holds the results."""


class WandbLogger(RunLogger):
    """One W&B run per training run: group = sweep id, job_type = method, name = run id.

    Offline runs land at `<run_dir>/wandb/offline-run-*` and upload later with
    `wandb sync <run_dir>/wandb/offline-run-*`; `read_offline_run(run_dir)` reads them locally.
    """

    def __init__(self, *, mode: str, project: str, entity: str | None = None, tags: tuple[str, ...] = ()):
        self.mode = mode
        self.project = project
        self.entity = entity
        self.tags = tuple(tags)
        self._run = None
        self._last_step: int | None = None

    def start(self, *, config: dict, run_id: str, sweep_id: str, method: str, run_dir: Path) -> None:
        import wandb  # imported here so logger=none never pays wandb's import time

        if self._run is not None:
            raise RuntimeError("WandbLogger.start called twice; build one logger per run")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._run = self._init(wandb, config, run_id, sweep_id, method, run_dir)
        except wandb.errors.UsageError as err:
            if self.mode != "online":
                raise
            raise RuntimeError(f"logger.mode=online: W&B could not start ({err}). Set WANDB_API_KEY or run "
                               "`wandb login`, or use logger.mode=offline and `wandb sync` later") from err

    def _init(self, wandb, config: dict, run_id: str, sweep_id: str, method: str, run_dir: Path):
        return wandb.init(
            mode=self.mode,
            project=self.project,
            entity=self.entity,
            group=sweep_id,
            job_type=method,
            name=run_id,
            tags=list(self.tags),
            dir=str(run_dir),
            config=redact_secrets(config),
            settings=wandb.Settings(**_quiet_settings(wandb.Settings)),
        )

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        run = self._require_run("log_step")
        # W&B silently drops (with a warning) any step below the last one; fail loudly instead.
        if self._last_step is not None and step < self._last_step:
            raise ValueError(f"log_step: step {step} is below the previous step {self._last_step}; "
                             "W&B history steps must not decrease")
        self._last_step = step
        run.log({key: _plain(value) for key, value in metrics.items()}, step=step)

    def finish(self, *, status: str, metrics: dict, cost: dict) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"finish: status must be one of {RUN_STATUSES}, got {status!r}")
        if self._run is None:
            return
        run, self._run = self._run, None
        # The last history row stays open until the next step or finish; commit it now, otherwise
        # its values (e.g. a per-step pref_acc) would overwrite the final metrics in the summary.
        sync_file = Path(run.settings.sync_file) if self.mode != "disabled" else None
        try:
            run.log({}, commit=True)
            summary = {key: _plain(value) for key, value in metrics.items()}
            summary.update({COST_PREFIX + key: _plain(value) for key, value in cost.items()})
            run.summary.update(summary)
        finally:  # a bad metric value must not leave the W&B run open
            run.finish(exit_code=0 if status == "completed" else 1)
        if sync_file is not None:
            _wait_for_exit_record(sync_file, timeout_s=FLUSH_TIMEOUT_S)

    def _require_run(self, what: str):
        if self._run is None:
            raise RuntimeError(f"WandbLogger.{what} called before start (or after finish)")
        return self._run


def _wait_for_exit_record(path: Path, *, timeout_s: float) -> None:
    """Block until the run's .wandb file holds its exit record.

    wandb 0.31's run.finish() returns before wandb-core has flushed the transaction log (measured
    here: right after finish the file often holds only its 7-byte header; ~0.1 s later it is
    complete). Waiting makes "finish returned" mean "the run is on disk": a reader right after it
    (tests, the analysis) sees the whole run, and a job killed right after loses nothing.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in iter_wandb_records(path)):
                return
        except (OSError, ValueError):
            pass  # not created yet, or caught mid-write: look again
        if time.monotonic() > deadline:
            warnings.warn(f"{path}: W&B had not written the run's exit record after {timeout_s:.0f} s; "
                          "the offline run may be incomplete", RuntimeWarning, stacklevel=3)
            return
        time.sleep(0.02)


def _quiet_settings(settings_cls: Any) -> dict[str, Any]:
    """wandb.Settings that keep a run cheap and private; names this wandb lacks are left out.

    Measured here (2 CPU cores, wandb 0.31, offline): the first init in a process costs ~0.6 s (it
    starts wandb-core); later inits ~0.01 s with these settings vs ~0.1 s with the defaults.
    """
    wanted = {
        "console": "off",               # no stdout/stderr capture: the trainer's log is not W&B's to copy
        "x_disable_stats": True,        # no system-metrics sampler process
        "x_disable_meta": True,         # no host/git/python metadata probe: the run record has provenance
        "x_disable_machine_info": True, # no cloud machine-info probe
        "x_save_requirements": False,   # no pip freeze: the run record lists package versions
        "disable_git": True,
        "save_code": False,
        "quiet": True,                  # fewer terminal messages
        # A run left open by a crash in this process is closed, never handed back to the next run.
        "reinit": "finish_previous",
    }
    fields = getattr(settings_cls, "model_fields", None)
    if fields is None:
        return {}
    return {key: value for key, value in wanted.items() if key in fields}


def _plain(value: Any) -> Any:
    # torch / numpy scalars end up in metrics; W&B wants plain Python numbers
    return value.item() if hasattr(value, "item") else value


def build_logger(cfg: Mapping, *, is_main_process: bool = True) -> RunLogger:
    """The `logger` config group -> a RunLogger. Non-main processes always get a NoneLogger.

    cfg keys: name (none | wandb); for wandb also mode (online | offline | disabled), project,
    entity (null = the key's default entity), tags (list of strings). The W&B key is never a config
    key: wandb reads WANDB_API_KEY or its own `wandb login`.
    """
    cfg = _plain_mapping(cfg)
    name = cfg.get("name")
    if name not in LOGGER_NAMES:
        raise ValueError(f"logger.name must be one of {LOGGER_NAMES}, got {name!r}")
    allowed = ("name",) if name == "none" else WANDB_KEYS
    for key in cfg:
        if key not in allowed:
            # Name the key only: an unknown key may hold a secret, so its value is never echoed.
            hint = (" (the W&B key comes only from WANDB_API_KEY or `wandb login`)"
                    if looks_secret(str(key)) else "")
            raise ValueError(f"logger.{key}: unknown key for logger {name!r}; allowed: {allowed}{hint}")
    if name == "none":
        return NoneLogger()

    mode = cfg.get("mode", "offline")
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.mode must be one of {WANDB_MODES}, got {mode!r}")
    project = cfg.get("project")
    if not isinstance(project, str) or not project or any(c in project for c in PROJECT_FORBIDDEN_CHARS):
        raise ValueError(f"logger.project must be a non-empty string without {PROJECT_FORBIDDEN_CHARS!r}, "
                         f"got {project!r}")
    entity = cfg.get("entity")
    if entity is not None and (not isinstance(entity, str) or not entity):
        raise ValueError(f"logger.entity must be null or a non-empty string, got {entity!r}")
    tags = cfg.get("tags") or []
    if not isinstance(tags, (list, tuple)):
        raise ValueError(f"logger.tags must be a list of strings, got {type(tags).__name__}")
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not 0 < len(tag) <= MAX_TAG_CHARS:
            raise ValueError(f"logger.tags[{i}] must be a string of 1..{MAX_TAG_CHARS} characters, "
                             f"got {tag!r}")
    if not is_main_process:
        return NoneLogger()
    return WandbLogger(mode=mode, project=project, entity=entity, tags=tuple(tags))


def _plain_mapping(cfg: Mapping) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"logger config must be a mapping, got {type(cfg).__name__}")
    return dict(cfg)


# --- reading an offline run back -------------------------------------------------------------------
# The .wandb file is W&B's transaction log: a 7-byte header (b":W&B", magic 0xBEE1 little-endian,
# version 0) then LevelDB-log-format blocks of 32 KiB; each chunk has a 7-byte header (checksum u32,
# length u16, type u8) and chunks of types FIRST/MIDDLE/LAST join into one record. The checksum is
# zlib's CRC-32 over the type byte and the data. Each record is a protobuf `wandb_internal_pb2.Record`.
# This is the format `wandb sync` reads, so it stays readable across wandb versions; reading it here
# needs no subprocess, no network and no key (the `wandb leet inspect --json` CLI reads the same file
# but only exists in recent wandb releases).

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
