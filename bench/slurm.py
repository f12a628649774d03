"""The SLURM launcher (`hydra/launcher=slurm`): hydra-submitit-launcher's, with a driver that notices a
cancelled, failed or killed job in seconds and reports every such job (docs/design.md §10, §12).

It submits the plugin's array job unchanged and watches all jobs together (result files every second, `sacct`
every POLL_S seconds); why the plugin's own driver is not enough is in docs/design.md §10. Owns nothing of the
run itself: the job side is the plugin's `__call__` (Hydra's run_job), unchanged.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

POLL_S = 5.0  # sacct at most this often per driver: a cancelled job is reported within a few seconds
# Parameters submitit takes when the executor is built (the plugin's split), not in update_parameters.
_EXECUTOR_INIT_KEYS = ("submitit_folder", "max_num_timeout")


class SweepIncomplete(CompactHydraException):
    """Some jobs of a sweep ended without a result; Hydra prints this message alone and exits 1."""


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def _executor(self):
        import submitit

        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init["slurm_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster="slurm", **init)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())  # keys every submitit cluster takes
        executor.update_parameters(**{key if key in generic else f"slurm_{key}": value
                                      for key, value in self.params.items() if key not in _EXECUTOR_INIT_KEYS})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        params = []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            log.info(f"\t#{index} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", index, f"job_id_for_{index}", Singleton.get_state()))
        jobs = self._executor().map_array(self, *zip(*params))
        wait_for_all(jobs)
        return collect(jobs, job_overrides)


def wait_for_all(jobs: list, poll_s: float = POLL_S) -> None:
    """Return once every job has its results or SLURM says it ended (COMPLETED, CANCELLED, FAILED, ...)."""
    last_poll = float("-inf")
    pending = list(jobs)
    while pending:
        if time.monotonic() - last_poll >= poll_s:
            pending[0].watcher.update()  # one sacct call for every job of the sweep
            last_poll = time.monotonic()
        pending = [job for job in pending if not (_has_results(job) or job.watcher.is_done(job.job_id, mode="cache"))]
        if pending:
            time.sleep(1.0)


def _has_results(job) -> bool:
    return all(task.paths.result_pickle.exists() for task in (job._sub_jobs or [job]))


def collect(jobs: list, job_overrides: Sequence[Sequence[str]]) -> list[JobReturn]:
    """Every job's JobReturn (its first task's), or SweepIncomplete naming each job that has none."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    returns, lost = [], []
    for job, overrides in zip(jobs, job_overrides):
        state = job.watcher.get_state(job.job_id, mode="cache")
        problem = None
        if _has_results(job) or state.upper() == "COMPLETED":
            try:  # a COMPLETED job's result may still be on its way through a slow shared filesystem
                returns.append(job.results()[0])
            except (UncompletedJobError, FailedJobError) as err:
                problem = str(err).strip().splitlines()[0]
        else:
            problem = "no result"
        if problem is not None:
            lost.append(f"  job {job.job_id} {state}: {' '.join(filter_overrides(overrides))}\n"
                        f"    {problem} (log: {job.paths.stdout})")
    if lost:
        raise SweepIncomplete(
            f"[imi-bench] {len(lost)} of {len(jobs)} SLURM jobs ended without a result:\n" + "\n".join(lost)
            + "\n[imi-bench] re-launch the same command to finish them: completed runs are skipped, and a run with "
              "a checkpoint resumes from it")
    return returns
