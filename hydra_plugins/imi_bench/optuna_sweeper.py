"""The suite's Optuna sweeper (`hydra/sweeper=optuna`, conf/hydra/sweeper/optuna.yaml; why the suite's own and
not hydra-optuna-sweeper: docs/design.md §10): a study by ask-and-tell, its trials launched through whatever
`hydra/launcher` is configured, in batches of the launcher's parallelism.

Each trial is a normal run of the entry point, tagged `tuning.{study,trial}` (a config key that never changes a
result), and Optuna is told the VALIDATION metric of the trial's record (`hydra.sweeper.objective`), not what
the entry point returns (the test score). A failed run, a missing record or a non-finite value is told as a
failed trial. The study lives in <runs root>/<sweep id>/studies/<name>.db, so re-running the command resumes it:
trials an interrupted launch left running are launched again first (a completed run is then skipped, an
interrupted one resumes from its checkpoint), then new ones are asked until `n_trials` have completed.
What the sweeper shares with multirun.sh's planner (names, files, the search space) is bench/sweeps/tuning.py.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class StudyFailed(CompactHydraException):
    """A study cannot go on (bench.sweeps.tuning.StudyError); Hydra prints this message alone and exits 1."""


class OptunaSweeper(Sweeper):
    """Hydra builds it from `hydra.sweeper` of the sweep's own config; each study then reads its settings from
    its own composed config (so `sampler.seed: ${seed}` is each study's seed when seeds are a grid)."""

    def __init__(self, params: Optional[dict] = None, **settings: Any) -> None:
        super().__init__()
        self.params = dict(params or {})
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher = None
        self.job_index = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    # ------------------------------------------------------------------------------------------ composing

    def _compose(self, overrides: Sequence[str]) -> tuple[DictConfig, dict]:
        """(the job's full config, its task config resolved as the job will resolve it) for these overrides."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        hydra_config = HydraConfig.instance()
        saved = hydra_config.cfg
        hydra_config.set_config(cfg)  # ${hydra:runtime.cwd} in paths.* resolves as in the job
        try:
            task = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
        finally:
            hydra_config.cfg = saved  # the launcher hands the driver's Hydra state to its jobs
        return cfg, task

    def _run_dir(self, overrides: Sequence[str]) -> tuple[Path, str]:
        from bench import records
        from bench.redaction import redact_secrets

        _, task = self._compose(overrides)
        run_id, digest = records.run_identity(redact_secrets(task))
        return records.run_dir(task["paths"]["runs_root"], task["sweep_id"], run_id), digest

    # ------------------------------------------------------------------------------------------ the sweep

    def sweep(self, arguments: List[str]) -> Any:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        from bench.sweeps import tuning

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{key}={value}" for key, value in self.params.items()] + list(arguments))
        try:
            grid, space = tuning.split_sweep(overrides)
        except tuning.StudyError as err:
            raise StudyFailed(f"[imi-bench] error: {err}") from None
        # the grid as the basic sweeper expands it: one study per combination
        studies = BasicSweeper.split_arguments(grid, max_batch_size=None)[0]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        names, returns = set(), []
        try:
            for fixed in studies:
                plan, settings = self._plan(fixed, space)
                if plan.name in names:
                    raise tuning.StudyError(f"hydra.sweeper.study_name={plan.name} names one study, but this sweep "
                                            f"runs {len(studies)}: leave it unset")
                names.add(plan.name)
                returns.extend(self._run_study(plan, settings, fixed, space))
        except tuning.StudyError as err:
            raise StudyFailed(f"[imi-bench] error: {err}") from None
        return returns

    def _plan(self, fixed: list[str], space: dict):
        from bench.redaction import redact_secrets
        from bench.sweeps import tuning

        # any value of the searched keys gives the study's plan (they are left out of its identity), as in the planner
        cfg, task = self._compose([*fixed, *tuning.corners(space)[0]])
        settings = tuning.Settings.from_node(OmegaConf.to_container(cfg.hydra.sweeper, resolve=True))
        return tuning.study_plan(redact_secrets(task), space, settings), settings

    def _run_study(self, plan, settings, fixed: list[str], space: dict) -> list[JobReturn]:
        import optuna
        from filelock import FileLock, Timeout

        from bench.sweeps import tuning

        plan.db.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{plan.db}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise tuning.StudyError(f"study {plan.name} is open in another process ({plan.db}.lock is held); "
                                    "wait for that sweep to end") from None
        try:
            study = optuna.create_study(storage=plan.storage_url, study_name=plan.name, direction=settings.direction,
                                        load_if_exists=True)
            stored = study.user_attrs.get("identity")
            if stored is None:
                study.set_user_attr("identity", plan.identity)
                study.set_user_attr("objective", settings.objective)
            elif stored != plan.identity:
                raise tuning.StudyError(
                    f"study {plan.name} ({plan.db}) was made for another setting, search space, sampler, objective "
                    "or code (its identity differs); give hydra.sweeper.study_name another name, or leave it unset")
            return _Study(self, study, plan, settings, fixed, tuning.distributions(space)).run()
        finally:
            lock.release()


class _Study:
    """One study's ask-launch-tell loop."""

    def __init__(self, sweeper: OptunaSweeper, study, plan, settings, fixed: list[str], distributions: dict) -> None:
        self.sweeper, self.study, self.plan, self.settings = sweeper, study, plan, settings
        self.fixed, self.distributions = fixed, distributions
        self.failed_now = 0

    def run(self) -> list[JobReturn]:
        import optuna
        from optuna.trial import TrialState

        from bench.sweeps import tuning

        batch_size = self.settings.batch_size or launcher_parallelism(self.sweeper.config.hydra.launcher)
        returns = []
        print(f"[imi-bench] study {self.plan.name}: {self.plan.n_trials} trials in batches of {batch_size}; "
              f"objective {self.settings.objective} ({self.settings.direction}); stored in {self.plan.db}", flush=True)
        while True:
            trials = self.study.get_trials(deepcopy=False)
            completed = sum(t.state == TrialState.COMPLETE for t in trials)
            needed = self.plan.n_trials - completed
            if needed <= 0:
                break
            # trials an interrupted launch left running: launched again with their own values and trial numbers
            stale = [t for t in trials if t.state == TrialState.RUNNING]
            batch = [(t.number, t.params) for t in stale[:batch_size]]
            for frozen in stale[:batch_size]:
                if tuning.RUN_ID_ATTR not in frozen.user_attrs:  # interrupted between its ask and its tag
                    run_dir, _ = self.sweeper._run_dir(self._overrides(frozen.number, frozen.params))
                    optuna.trial.Trial(self.study, frozen._trial_id).set_user_attr(tuning.RUN_ID_ATTR, run_dir.name)
            for _ in range(max(0, min(batch_size - len(batch), needed - len(stale)))):
                batch.append(self._ask())
            returns.extend(self._launch(batch))
        self._summary()
        return returns

    def _ask(self) -> tuple[int, dict]:
        from bench.sweeps import tuning

        number = len(self.study.get_trials(deepcopy=False))
        self.study.sampler = tuning.make_sampler(self.settings.sampler, number)
        trial = self.study.ask(fixed_distributions=self.distributions)
        if trial.number != number:  # the study's lock keeps every other writer out
            raise tuning.StudyError(f"study {self.plan.name}: asked trial {number}, got {trial.number}")
        run_dir, _ = self.sweeper._run_dir(self._overrides(number, trial.params))
        trial.set_user_attr(tuning.RUN_ID_ATTR, run_dir.name)  # the trial's run, before it starts
        return number, trial.params

    def _overrides(self, number: int, params: dict) -> list[str]:
        from bench.sweeps import tuning

        values = [tuning.value_override(key, params[key]) for key in self.distributions]
        return [*self.fixed, *values, *tuning.tag_overrides(self.plan.name, number)]

    def _launch(self, batch: list[tuple[int, dict]]) -> list[JobReturn]:
        from bench.sweeps import tuning

        jobs = [self._overrides(number, params) for number, params in batch]
        for (number, params), job in zip(batch, jobs):
            shown = ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                              for key, value in params.items())
            print(f"[imi-bench] trial {number} of study {self.plan.name}: {shown}", flush=True)
        returns, launch_error = [], None
        try:
            returns = list(self.sweeper.launcher.launch(jobs, initial_job_idx=self.sweeper.job_index))
        except BaseException as err:  # a launcher that fails the batch (SLURM jobs cancelled, Ctrl-C): see below
            launch_error = err
        self.sweeper.job_index += len(jobs)
        # launchers return one JobReturn per job, in the order given
        raised = [r._return_value if r.status == JobStatus.FAILED else None for r in returns] or [None] * len(jobs)
        problem = None
        for (number, _), job, exception in zip(batch, jobs, raised):
            run_dir, digest = self.sweeper._run_dir(job)
            value, error = self._read(run_dir, digest)
            if launch_error is not None and value is None:
                continue  # the job may not have run: left running, launched again by the next launch
            if exception is not None:
                value, error = None, f"the job raised {type(exception).__name__}: {exception}"
                problem = problem or exception
            self._tell(number, value, error)
            if error is not None and error.startswith("no metric"):
                problem = problem or tuning.StudyError(f"{run_dir}: {error}")
        if launch_error is not None:
            raise launch_error
        if problem is not None:  # a config error or a bug: every further trial would fail the same way
            raise problem
        if self.failed_now > self.settings.max_failed_trials:
            raise tuning.StudyError(f"study {self.plan.name}: {self.failed_now} trials failed in this launch "
                                    f"(hydra.sweeper.max_failed_trials={self.settings.max_failed_trials}); "
                                    "their records say why")
        return returns

    def _read(self, run_dir: Path, digest: str) -> tuple[float | None, str | None]:
        """(the objective's value, None) from the trial's completed record, or (None, why not)."""
        from bench import records
        from bench.fingerprint import run_fingerprint

        record = records.read_record(run_dir)
        if record is None:
            return None, "no record (the job ended without writing one)"
        if record.get("status") != "completed":
            error = (record.get("error") or "no error message").splitlines()[0]
            return None, f"the run failed ({error.split(':')[0]}; its record says why)"
        if not records.is_completed(record, digest, run_fingerprint()):
            return None, "the record there was made by another config or other code"
        metrics = record.get("metrics") or {}
        if self.settings.objective not in metrics:
            shown = ", ".join(sorted(k for k in metrics if k.startswith("val/"))) or "none"
            return None, (f"no metric {self.settings.objective} (hydra.sweeper.objective) in the record; "
                          f"its validation metrics: {shown}")
        value = metrics[self.settings.objective]
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None, f"{self.settings.objective} is {value!r}"
        return float(value), None

    def _tell(self, number: int, value: float | None, error: str | None) -> None:
        from optuna.trial import TrialState

        if value is None:
            self.failed_now += 1
            self.study.tell(number, state=TrialState.FAIL)
            print(f"[imi-bench] trial {number} of study {self.plan.name} failed: {error}", flush=True)
            return
        self.study.tell(number, value)
        best = self.study.best_trial
        print(f"[imi-bench] trial {number} of study {self.plan.name}: {self.settings.objective}={value:.4g} "
              f"(best {best.value:.4g}, trial {best.number})", flush=True)

    def _summary(self) -> None:
        best = self.study.best_trial
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        print(f"[imi-bench] study {self.plan.name} done: best {self.settings.objective}={best.value:.4g} at trial "
              f"{best.number} ({shown}), run {best.user_attrs.get('run_id')}", flush=True)


def launcher_parallelism(launcher: DictConfig) -> int:
    """How many jobs the configured launcher runs at once: joblib's n_jobs (-1: one per core), SLURM's
    array_parallelism, 1 for the basic launcher (and any launcher that says nothing)."""
    import os

    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and n_jobs != 0:
        return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    parallel = launcher.get("array_parallelism")
    if isinstance(parallel, int) and not isinstance(parallel, bool) and parallel > 0:
        return parallel
    return 1
