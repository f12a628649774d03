"""Expanding sweeps into jobs exactly as `python -m bench.train -m` does, and validating every job's
config (bench.config, bench.preflight) before any compute, with the run folder and config hash it will have.
"""
from __future__ import annotations

import shlex
import warnings
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from bench import conf_dir, records
from bench.preflight import check_choices, check_launcher, check_run_config, check_secrets
from bench.redaction import redact_overrides, redact_secrets
from bench.sweeps.progress import Plan, PlannedRun


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


def sweep_jobs(parser: OverridesParser, args: list[str]) -> tuple[list[list[str]], list[str]]:
    """(each job's task overrides, the hydra.* overrides shared by all) of `python -m bench.train -m <args>`.
    Call inside `hydra_context()`, with the parser it yields."""
    overrides = parser.parse_overrides(args)
    hydra_args = [o.input_line for o in overrides if o.is_hydra_override()]
    task_args = [o.input_line for o in overrides if not o.is_hydra_override()]
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    params = compose(config_name="config", overrides=fixed, return_hydra_config=True).hydra.sweeper.params or {}
    swept = parser.parse_overrides([f"{key}={value}" for key, value in params.items()] + task_args)
    return _split_arguments(swept), hydra_args


def job_config(job: list[str], hydra_args: list[str] = ()):
    """A job's config as the job sees it (no hydra node; ${hydra:...} resolved as in a real job), after its
    optional group choices and its launcher were checked. Call inside `hydra_context()`."""
    cfg = compose(config_name="config", overrides=[*job, *hydra_args], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:runtime.cwd} as in a real job
    check_choices(cfg.hydra.runtime.choices)
    check_launcher(OmegaConf.to_container(cfg.hydra.launcher, resolve=True),
                   {"hardware": OmegaConf.to_container(cfg.hardware, resolve=True)})
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


class PlanError(ValueError):
    """A sweep or one of its jobs cannot run; the message names the sweep, the job and the key."""


def plan(steps: list[str], echo=print) -> Plan:
    """Expand, compose and validate every job of every sweep (each step: one sweep's overrides, as one
    string); `echo` gets one line per sweep. Raises PlanError on the first bad sweep or job."""
    runs, sweep_dirs = [], set()
    with hydra_context() as parser:
        for index, step in enumerate(steps, 1):
            args = shlex.split(step)
            shown = " ".join(redact_overrides(args))  # echoed redacted: it may hold the very secret refused
            try:  # the command line itself: secrets, unknown group options, malformed overrides
                check_secrets({}, args)
                jobs, hydra_args = sweep_jobs(parser, args)
            except Exception as err:
                raise PlanError(f"[multirun] bad config in sweep {index} ({shown}):\n  {err}") from err
            for job in jobs:
                try:
                    cfg = job_config(job, hydra_args)
                    check_run_config(cfg)
                except Exception as err:
                    raise PlanError(f"[multirun] bad config in sweep {index}, job "
                                    f"{' '.join(redact_overrides(job))}:\n  {err}") from err
                run_id, digest = records.run_identity(redact_secrets(OmegaConf.to_container(cfg, resolve=True)))
                sweep_dirs.add(Path(cfg.paths.runs_root) / cfg.sweep_id)
                runs.append(PlannedRun(records.run_dir(cfg.paths.runs_root, cfg.sweep_id, run_id), digest, index))
            echo(f"[multirun]   sweep {index}/{len(steps)}: {shown}  ->  {len(jobs)} jobs")
    if len(sweep_dirs) != 1:
        raise PlanError(f"[multirun] the jobs would write to {len(sweep_dirs)} sweep folders "
                        f"({sorted(map(str, sweep_dirs))}); do not sweep sweep_id or paths.runs_root")
    return Plan(sweep_dirs.pop(), runs)
