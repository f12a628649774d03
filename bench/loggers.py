"""Experiment loggers (docs/design.md §10, W&B): one small interface the trainer calls.

`RunLogger` (start / log_step / finish) with `NoneLogger` and `WandbLogger`; `check_logger_config`, the `logger`
group's checker (also run by bench.config before any compute); `build_logger`. Must not write run records (the
local records are the source of truth), read or store a W&B key, or decide which process logs: the trainer passes
`is_main_process`, and every other rank gets a NoneLogger.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

from bench.mappings import plain_mapping
from bench.redaction import looks_secret, redact_secrets

LOGGER_NAMES = ("none", "wandb")
WANDB_MODES = ("online", "offline", "disabled")
WANDB_KEYS = ("name", "mode", "project", "entity", "tags")
RUN_STATUSES = ("completed", "failed")
COST_PREFIX = "cost/"
# W&B's own limits (its server rejects longer values); checked here so a sweep fails before compute.
MAX_TAG_CHARS = 64
# Characters W&B does not allow in a project name.
PROJECT_FORBIDDEN_CHARS = "/\\#?%:"


class RunLogger:
    """What the trainer calls. The base class logs nothing; subclasses send the calls somewhere.

    Call order: start once, log_step any number of times with non-decreasing steps, finish once
    (also when the run failed, with status="failed"). finish after finish is a no-op.
    """

    def start(self, *, config: dict, run_id: str, sweep_id: str, method: str, run_dir: Path,
              method_info: dict | None = None) -> None:
        """Open the run: `config` is the resolved config, `run_dir` is `<runs root>/<sweep>/<run>`,
        `method_info` what the run record says about the method (bench.methods.method_info)."""

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Per-step metrics (history). Several calls with the same step merge into one row."""

    def finish(self, *, status: str, metrics: dict, cost: dict) -> None:
        """Close the run with its final metrics (docs/design.md §7) and cost (docs/design.md §8)."""


class NoneLogger(RunLogger):
    """logger=none, and every non-main process: the run record alone holds the results."""


class WandbLogger(RunLogger):
    """One W&B run per training run: group = sweep id, job_type = method, name = run id.

    Offline runs land at `<run_dir>/wandb/offline-run-*` and upload later with
    `wandb sync <run_dir>/wandb/offline-run-*`; `wandb leet inspect <run_dir>/wandb` reads them locally.
    """

    def __init__(self, *, mode: str, project: str, entity: str | None = None, tags: tuple[str, ...] = ()):
        self.mode = mode
        self.project = project
        self.entity = entity
        self.tags = tuple(tags)
        self._run = None
        self._last_step: int | None = None

    def start(self, *, config: dict, run_id: str, sweep_id: str, method: str, run_dir: Path,
              method_info: dict | None = None) -> None:
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
        if method_info:  # in the summary, beside the final metrics: the W&B config stays the record's config
            self._run.summary["method_info"] = method_info

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
        try:
            run.log({}, commit=True)
            summary = {key: _plain(value) for key, value in metrics.items()}
            summary.update({COST_PREFIX + key: _plain(value) for key, value in cost.items()})
            run.summary.update(summary)
        finally:  # a bad metric value must not leave the W&B run open
            run.finish(exit_code=0 if status == "completed" else 1)
            if self.mode != "disabled":
                _wait_until_written()

    def _require_run(self, what: str):
        if self._run is None:
            raise RuntimeError(f"WandbLogger.{what} called before start (or after finish)")
        return self._run


def _wait_until_written() -> None:
    """Return once W&B has written the finished run to disk.

    wandb 0.31's run.finish() returns before wandb-core has flushed the run's file (seen here: right after
    it, the .wandb file sometimes lacks the run's exit record). `wandb.teardown()`, W&B's public "waits
    for W&B to finish", stops wandb-core, which writes everything first. So "finish returned" means "the
    run is on disk": a reader right after it sees the whole run, and a job killed right after loses
    nothing. The next run in the process starts wandb-core again (its cost: docs/design.md §10).
    """
    import wandb

    try:
        wandb.teardown()
    except SystemExit as err:  # wandb exits the process when wandb-core itself exited with an error
        warnings.warn(f"W&B's service exited with code {err.code} while finishing the run; the run's W&B "
                      "files may be incomplete (the run record is not affected)", RuntimeWarning, stacklevel=3)


def _quiet_settings(settings_cls: Any) -> dict[str, Any]:
    """wandb.Settings that keep a run cheap and private; names this wandb lacks are left out.

    An init starts wandb-core, which finish stops (`_wait_until_written`); what an init costs with these
    settings is measured in docs/design.md §10.
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


def check_logger_config(cfg: Mapping) -> dict:
    """Check the `logger` config group; return it as a plain dict. Raises ValueError naming `logger.<key>`.

    cfg keys: name (none | wandb); for wandb also mode (online | offline | disabled), project,
    entity (null = the key's default entity), tags (list of strings). The W&B key is never a config
    key: wandb reads WANDB_API_KEY or its own `wandb login`.
    """
    cfg = plain_mapping(cfg, "logger")
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
        return cfg
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
    return {**cfg, "mode": mode, "tags": list(tags)}


def build_logger(cfg: Mapping, *, is_main_process: bool = True) -> RunLogger:
    """The `logger` config group (see `check_logger_config`) -> a RunLogger. Non-main processes
    always get a NoneLogger."""
    cfg = check_logger_config(cfg)
    if cfg["name"] == "none" or not is_main_process:
        return NoneLogger()
    return WandbLogger(mode=cfg["mode"], project=cfg["project"], entity=cfg.get("entity"), tags=tuple(cfg["tags"]))


