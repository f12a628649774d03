"""Optuna studies as sweeps (docs/design.md §10): what the suite's sweeper (`hydra/sweeper=optuna`,
hydra_plugins/imi_bench/optuna_sweeper.py) and multirun.sh's planner share, so both name, place and count a
study the same way.

    split_sweep     a sweep's overrides -> the grid (plain comma lists: one study per combination) and the
                    search space (interval, tag(log, interval), choice)
    corners         the search space's extreme values: the configs the planner validates before any compute
    Settings        `hydra.sweeper` checked: n_trials, sampler, objective, direction, ...
    study_plan      a study's identity, name and SQLite file, from its composed config
    read_trials     a study's trials from its SQLite file with the standard library (multirun.sh's progress)

Imports nothing heavy at the top (progress.py counts with `read_trials` every few seconds); Hydra's override
types and Optuna are imported where they are used.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import records
from bench.fingerprint import run_fingerprint

# What `hydra.sweeper._target_` names when a sweep is a study (conf/hydra/sweeper/optuna.yaml).
SWEEPER_TARGET = "hydra_plugins.imi_bench.optuna_sweeper.OptunaSweeper"
STUDIES_DIR = "studies"      # <runs root>/<sweep id>/studies/<study name>.db: beside the records, never a run
TAG_KEY = "tuning"           # every trial's record: config.tuning = {"study": <name>, "trial": <number>}
RUN_ID_ATTR = "run_id"       # every trial's user attribute: the run folder (in the study's sweep folder)
# Samplers whose whole sequence follows from one seed and keeps its place in the study's storage: they get the
# configured seed unchanged (every other sampler gets a seed per trial: see `trial_seed`).
ONE_SEED_SAMPLERS = ("QMCSampler",)
_NAME = re.compile(r"[A-Za-z0-9._-]+")
SETTINGS_KEYS = {"_target_", "_recursive_", "params", "n_trials", "sampler", "direction", "objective", "study_name",
                 "batch_size", "max_failed_trials"}


class StudyError(ValueError):
    """A study cannot run as configured; the message names the key, the study or the file."""


def is_study(sweeper: Any) -> bool:
    """Whether a composed `hydra.sweeper` node (or a plain dict of it) is the suite's Optuna sweeper."""
    return sweeper is not None and sweeper.get("_target_") == SWEEPER_TARGET


# --------------------------------------------------------------------------- the search space and the grid

def _dimension(override) -> dict:
    """One searched key as plain data (the study's identity and the Optuna distribution both come from it)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep

    key, sweep = override.get_key_element(), override.value()
    tags = set(getattr(sweep, "tags", None) or ())
    if isinstance(sweep, IntervalSweep):
        if tags - {"log"}:
            raise StudyError(f"{key}: unknown tag(s) {sorted(tags - {'log'})}; only tag(log, interval(low, high))")
        low, high, log = float(sweep.start), float(sweep.end), "log" in tags
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise StudyError(f"{key}: interval({low}, {high}) must have finite bounds, low < high")
        if log and low <= 0:
            raise StudyError(f"{key}: tag(log, interval({low}, {high})) needs low > 0")
        return {"kind": "float", "low": low, "high": high, "log": log}
    if isinstance(sweep, ChoiceSweep) and not sweep.simple_form:
        if tags:
            raise StudyError(f"{key}: tags apply to interval(...) only, got tag({', '.join(sorted(tags))}, choice(...))")
        choices = list(sweep.list)
        if len(set(map(repr, choices))) != len(choices) or not choices:
            raise StudyError(f"{key}: choice(...) needs distinct values, got {choices}")
        return {"kind": "categorical", "choices": choices}
    raise StudyError(f"{key}={override.input_line.split('=', 1)[1]}: a study searches interval(low, high), "
                     "tag(log, interval(low, high)) or choice(a, b, ...); a plain list a,b runs one study per value")


def split_sweep(overrides: list) -> tuple[list, dict[str, dict]]:
    """(the grid's overrides, {searched key: dimension}) of a study sweep's parsed task overrides (the sweeper's
    `params` first, then the command line; a later override of a key replaces an earlier one). Plain comma
    lists and globs are the grid, as Hydra's basic sweeper expands them: one study per combination. Searching
    `seed` or `dataset` is refused: a study tunes one setting at one seed (the practitioner's tuner)."""
    last = {}
    for override in overrides:
        last[override.get_key_element()] = override
    grid, space = [], {}
    for key, override in last.items():
        sweep = override.value() if override.is_sweep_override() else None
        if sweep is None or override.is_discrete_sweep() and getattr(sweep, "simple_form", True):
            grid.append(override)
        else:
            if key in ("seed", "dataset", "+seed"):
                raise StudyError(f"{key} cannot be searched: a study tunes one setting at one seed; "
                                 f"list values ({key}=a,b) to run one study each")
            space[key] = _dimension(override)
    if not space:
        raise StudyError("the study has no search space: give hydra.sweeper.params (or the command line) a key "
                         "with interval(low, high), tag(log, interval(low, high)) or choice(a, b, ...)")
    return grid, space


def value_override(key: str, value: Any) -> str:
    """The override that sets a searched key to a value (floats in full precision: repr round-trips)."""
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def corners(space: dict[str, dict]) -> list[list[str]]:
    """Every combination of each dimension's extremes (an interval's bounds, every choice): the configs a planner
    composes and validates before any compute, since an invalid value sits at a bound if anywhere."""
    values = [[d["low"], d["high"]] if d["kind"] == "float" else d["choices"] for d in space.values()]
    return [[value_override(key, v) for key, v in zip(space, combo)] for combo in itertools.product(*values)]


def distributions(space: dict[str, dict]) -> dict:
    """The search space as Optuna distributions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {key: FloatDistribution(d["low"], d["high"], log=d["log"]) if d["kind"] == "float"
            else CategoricalDistribution(d["choices"]) for key, d in space.items()}


# --------------------------------------------------------------------------- the sweeper's settings

@dataclass(frozen=True)
class Settings:
    n_trials: int               # the study's completed trials wanted (failed ones are asked again)
    sampler: dict               # {_target_: an optuna.samplers class, seed: ..., its keyword arguments}
    direction: str              # maximize | minimize
    objective: str              # the record metric told to Optuna: a VALIDATION metric, val/<name>
    study_name: str | None      # None: <method>-<dataset>-s<seed>-<identity>
    batch_size: int | None      # trials launched together; None: the launcher's parallelism
    max_failed_trials: int      # this many failed trials in one launch stop the study

    @classmethod
    def from_node(cls, node: dict) -> "Settings":
        """`hydra.sweeper` resolved to plain containers, checked; errors name the key."""
        def integer(key: str, minimum: int, allow_none: bool = False):
            value = node.get(key)
            if value is None and allow_none:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise StudyError(f"hydra.sweeper.{key} must be an integer >= {minimum}, got {value!r}")
            return value

        unknown = sorted(set(node) - SETTINGS_KEYS)
        if unknown:
            raise StudyError(f"hydra.sweeper has no key(s) {', '.join(unknown)}; known: {', '.join(sorted(SETTINGS_KEYS))}")
        n_trials = integer("n_trials", 1)
        sampler = node.get("sampler")
        if not isinstance(sampler, dict) or not str(sampler.get("_target_", "")).startswith("optuna.samplers."):
            raise StudyError(f"hydra.sweeper.sampler._target_ must name an optuna.samplers class, got {sampler!r}")
        seed = sampler.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise StudyError(f"hydra.sweeper.sampler.seed must be an integer >= 0 or null, got {seed!r}")
        direction = node.get("direction")
        if direction not in ("maximize", "minimize"):
            raise StudyError(f"hydra.sweeper.direction must be maximize or minimize, got {direction!r}")
        objective = node.get("objective")
        if not isinstance(objective, str) or not objective.startswith("val/"):
            # the test score stays for the analysis: a tuner that selects on it has seen the test set
            raise StudyError(f"hydra.sweeper.objective must name a validation metric (val/<name>), got {objective!r}")
        name = node.get("study_name")
        if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", "..")):
            raise StudyError(f"hydra.sweeper.study_name names a file: letters, digits, . _ - only, got {name!r}")
        failures = node.get("max_failed_trials")
        return cls(n_trials, dict(sampler), direction, objective, name, integer("batch_size", 1, allow_none=True),
                   n_trials if failures is None else integer("max_failed_trials", 0))


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial `number`: a function of the study's seed and the trial alone, so that a study
    resumed after an interruption asks exactly what an uninterrupted one would (a sampler seeded once at the
    start of each launch would repeat its first proposals)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def make_sampler(sampler: dict, number: int):
    """The Optuna sampler that asks trial `number` (`sampler`: Settings.sampler)."""
    import warnings

    from hydra.utils import get_class
    from optuna.exceptions import ExperimentalWarning

    kwargs = {k: v for k, v in sampler.items() if k != "_target_"}
    cls = get_class(sampler["_target_"])
    if kwargs.get("seed") is not None and cls.__name__ not in ONE_SEED_SAMPLERS:
        kwargs["seed"] = trial_seed(kwargs["seed"], number)
    with warnings.catch_warnings():
        # TPE's constant_liar (conf/hydra/sweeper/optuna.yaml) is marked experimental since Optuna 2.8; with a sampler
        # built per trial, the warning would come once per trial. pyproject.toml bounds Optuna's version.
        warnings.filterwarnings("ignore", message=r".*``constant_liar``", category=ExperimentalWarning)
        return cls(**kwargs)


# --------------------------------------------------------------------------- a study's identity and files

@dataclass(frozen=True)
class StudyPlan:
    name: str
    identity: str      # 16 hex digits: what the study is (its setting, search space, sampler, objective, code)
    db: Path           # the SQLite file: <runs root>/<sweep id>/studies/<name>.db
    n_trials: int

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.db}"


def study_plan(task_config: dict, space: dict[str, dict], settings: Settings) -> StudyPlan:
    """A study's plan from the resolved task config of one of its trials (any searched value: they are left out).

    The identity covers what a trial's value depends on, as a run's config hash does (the config less the
    keys that never change a result, and less the searched keys), plus the search space, the sampler and its
    seed, the objective and the code's fingerprint; not n_trials (a study grows by raising it) nor the batch
    size. The default name is the run id's pattern with the identity's first 8 digits: re-running a command
    resumes its studies, and any change to what they are starts new ones. A name given in the config is
    checked against the identity stored in the study (the sweeper refuses a mismatch)."""
    base = copy.deepcopy(task_config)
    for key in space:
        node, *path = base, *key.lstrip("+").split(".")
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    blob = json.dumps({"config": records.config_hash(base), "space": space, "sampler": settings.sampler,
                       "objective": settings.objective, "direction": settings.direction, "code": run_fingerprint()},
                      sort_keys=True, default=str)
    identity = hashlib.sha256(blob.encode()).hexdigest()[:16]
    name = settings.study_name or (f"{task_config['method']['name']}-{task_config['dataset']['name']}"
                                   f"-s{task_config['seed']}-{identity[:8]}")
    db = Path(task_config["paths"]["runs_root"]) / task_config["sweep_id"] / STUDIES_DIR / f"{name}.db"
    return StudyPlan(name, identity, db, settings.n_trials)


def tag_overrides(study: str, number: int) -> list[str]:
    """The overrides that tag a trial's record (config.tuning; a key that never changes a result)."""
    return [f"++{TAG_KEY}.study={study}", f"++{TAG_KEY}.trial={number}"]


# --------------------------------------------------------------------------- reading a study without Optuna

@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str                  # Optuna's TrialState name: RUNNING, COMPLETE, FAIL, ...
    run_id: str | None
    finished_at: float | None   # epoch seconds


def read_trials(db: Path, study: str) -> list[TrialRow]:
    """The trials of `study` in the SQLite file `db`, read-only with the standard library ([] when the file
    does not exist yet): multirun.sh counts progress with it every few seconds while the sweeper writes.
    Reads Optuna's RDB schema (tables studies, trials, trial_user_attributes), stable across Optuna 2-4;
    tests/test_optuna_sweeper.py checks it against a study Optuna wrote."""
    if not Path(db).exists():
        return []
    query = """SELECT t.number, t.state, t.datetime_complete, a.value_json
               FROM trials t JOIN studies s ON s.study_id = t.study_id
               LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = ?
               WHERE s.study_name = ? ORDER BY t.number"""
    connection = sqlite3.connect(f"file:{Path(db).resolve()}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute(query, (RUN_ID_ATTR, study)).fetchall()
    except sqlite3.DatabaseError as err:
        raise StudyError(f"{db}: not an Optuna study file ({err})") from err
    finally:
        connection.close()
    return [TrialRow(number, state, json.loads(run_id) if run_id else None,
                     datetime.fromisoformat(done).timestamp() if done else None)
            for number, state, done, run_id in rows]
