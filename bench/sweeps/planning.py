"""Expanding sweeps into jobs exactly as `python -m bench.train -m` does, and validating every job's
config (bench.config, bench.preflight) before any compute, with the run folder and config hash it will have.

A study (`hydra/sweeper=optuna`: the tune_* presets) has no jobs known in advance: Optuna picks each trial's
values as the study goes. Its plan is the study itself (name, SQLite file, trial count: bench.sweeps.tuning),
and what is validated before any compute is every study's config at the corners of its search space.
"""
from __future__ import annotations

import shlex
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from bench import conf_dir, records
from bench.preflight import check_choices, check_launcher, check_run_config, check_secrets
from bench.redaction import redact_overrides, redact_secrets
from bench.sweeps import tuning
from bench.sweeps.progress import Plan, PlannedRun, PlannedStudy


@contextmanager
def hydra_context():
    """Hydra initialised on this package's conf/ (compose calls inside), the parser that knows its groups."""
    # Hydra 1.3 warns on every composition that conf/hydra/launcher/joblib.yaml shares the plugin's name
    # (deliberately: see that file); once per job here would bury the plan.
    with warnings.catch_warnings(), initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")
        yield OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())


def _split_arguments(overrides) -> list[list[str]]:
    # Hydra 1.3 has no public API that expands sweep overrides into jobs. BasicSweeper.split_arguments is
    # the function `-m` itself runs (a later override of a key replaces an earlier one, then the cartesian
    # product), so the plan holds exactly the jobs Hydra launches; this is the suite's only import of
    # Hydra internals.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]


@dataclass
class Expansion:
    """One sweep expanded. For a grid, `jobs` is every job it launches; for a study sweep, `studies` holds each
    study's fixed overrides (one study per combination of the grid keys) and `jobs` each study's corner
    configs (bench.sweeps.tuning.corners): what the planner validates, not what runs."""
    jobs: list[list[str]]
    hydra_args: list[str]
    studies: list[list[str]] = field(default_factory=list)
    space: dict = field(default_factory=dict)  # a study sweep's searched keys


def expand_sweep(parser: OverridesParser, args: list[str]) -> Expansion:
    """`python -m bench.train -m <args>` expanded. Call inside `hydra_context()`, with the parser it yields."""
    overrides = parser.parse_overrides(args)
    hydra_args = [o.input_line for o in overrides if o.is_hydra_override()]
    task_args = [o.input_line for o in overrides if not o.is_hydra_override()]
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    sweeper = compose(config_name="config", overrides=fixed, return_hydra_config=True).hydra.sweeper
    params = sweeper.params or {}
    swept = parser.parse_overrides([f"{key}={value}" for key, value in params.items()] + task_args)
    if not tuning.is_study(sweeper):
        return Expansion(_split_arguments(swept), hydra_args)
    grid, space = tuning.split_sweep(swept)
    studies = _split_arguments(grid)
    return Expansion([[*study, *corner] for study in studies for corner in tuning.corners(space)], hydra_args,
                     studies, space)


def sweep_jobs(parser: OverridesParser, args: list[str]) -> tuple[list[list[str]], list[str]]:
    """(each job's task overrides, the hydra.* overrides shared by all) of `python -m bench.train -m <args>`
    (a study sweep: the configs validated before it runs; see Expansion). Call inside `hydra_context()`."""
    expansion = expand_sweep(parser, args)
    return expansion.jobs, expansion.hydra_args


def _compose_job(job: list[str], hydra_args: list[str] = ()):
    """A job's whole config (hydra node included), its ${hydra:...} resolvable as in a real job, after its
    optional group choices and its launcher were checked. Call inside `hydra_context()`."""
    cfg = compose(config_name="config", overrides=[*job, *hydra_args], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:runtime.cwd} as in a real job
    check_choices(cfg.hydra.runtime.choices)
    check_launcher(OmegaConf.to_container(cfg.hydra.launcher, resolve=True),
                   {"hardware": OmegaConf.to_container(cfg.hardware, resolve=True)})
    return cfg


def _task_only(cfg):
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def job_config(job: list[str], hydra_args: list[str] = ()):
    """A job's config as the job sees it (no hydra node; ${hydra:...} resolved as in a real job), after its
    optional group choices and its launcher were checked. Call inside `hydra_context()`."""
    return _task_only(_compose_job(job, hydra_args))


class PlanError(ValueError):
    """A sweep or one of its jobs cannot run; the message names the sweep, the job and the key."""


def plan(steps: list[str], echo=print) -> Plan:
    """Expand, compose and validate every job of every sweep (each step: one sweep's overrides, as one
    string); `echo` gets one line per sweep. Raises PlanError on the first bad sweep or job."""
    runs, studies, sweep_dirs = [], [], set()
    with hydra_context() as parser:
        for index, step in enumerate(steps, 1):
            args = shlex.split(step)
            shown = " ".join(redact_overrides(args))  # echoed redacted: it may hold the very secret refused
            try:  # the command line itself: secrets, unknown group options, malformed overrides, a bad search space
                check_secrets({}, args)
                expansion = expand_sweep(parser, args)
            except Exception as err:
                raise PlanError(f"[multirun] bad config in sweep {index} ({shown}):\n  {err}") from err
            planned = {}  # study name -> its plan, from the first corner of each study
            for job in expansion.jobs:
                try:
                    full = _compose_job(job, expansion.hydra_args)
                    sweeper = OmegaConf.to_container(full.hydra.sweeper, resolve=True)
                    cfg = _task_only(full)
                    check_run_config(cfg)
                    config = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
                    if expansion.studies:
                        study = tuning.study_plan(config, expansion.space, tuning.Settings.from_node(sweeper))
                        planned.setdefault(study.name, study)
                except Exception as err:
                    raise PlanError(f"[multirun] bad config in sweep {index}, job "
                                    f"{' '.join(redact_overrides(job))}:\n  {err}") from err
                sweep_dirs.add(Path(cfg.paths.runs_root) / cfg.sweep_id)
                if not expansion.studies:
                    run_id, digest = records.run_identity(config)
                    runs.append(PlannedRun(records.run_dir(cfg.paths.runs_root, cfg.sweep_id, run_id), digest, index))
            if expansion.studies:
                if len(planned) != len(expansion.studies):  # an explicit hydra.sweeper.study_name names one
                    raise PlanError(f"[multirun] sweep {index} ({shown}) runs {len(expansion.studies)} studies "
                                    f"under {len(planned)} name(s): leave hydra.sweeper.study_name unset")
                studies.extend(PlannedStudy(s.db, s.name, s.n_trials, index) for s in planned.values())
                trials = sum(s.n_trials for s in planned.values())
                echo(f"[multirun]   sweep {index}/{len(steps)}: {shown}  ->  {len(planned)} Optuna studies, "
                     f"{trials} trials (each study's corners validated: {len(expansion.jobs)} configs)")
            else:
                echo(f"[multirun]   sweep {index}/{len(steps)}: {shown}  ->  {len(expansion.jobs)} jobs")
    if len(sweep_dirs) != 1:
        raise PlanError(f"[multirun] the jobs would write to {len(sweep_dirs)} sweep folders "
                        f"({sorted(map(str, sweep_dirs))}); do not sweep sweep_id or paths.runs_root")
    return Plan(sweep_dirs.pop(), runs, studies)
