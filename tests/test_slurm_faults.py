"""Faults on the real one-node SLURM cluster (tests/cluster/local_slurm.sh), through `hydra/launcher=slurm`.

- preempted: `scontrol requeue` of a job mid-training (SLURM sends SIGTERM, the run checkpoints at its
  next step boundary and exits, SLURM queues the job again) -> the job resumes from its checkpoint and
  its metrics equal an uninterrupted run's bit for bit; the record counts one resume;
- preemption signal: `scancel --signal=USR2` (what submitit treats as preemption) -> checkpoint, then
  submitit's own handler requeues the job -> resumed;
- time limit: a 1-minute job whose warning signal comes 30 s before the limit -> checkpoint, requeued as
  timed out (max_num_timeout), resumed, finished in a later attempt;
- cancelled: `scancel` of a whole sweep -> the driver ends within seconds naming every cancelled run, and
  the re-launched command finishes them, each from its checkpoint. Both launches run with WANDB_API_KEY
  and HF_TOKEN in the environment: not one file either writes (records, Hydra's dumps, submitit's logs and
  job pickles, the cancelled runs' checkpoints) nor what the drivers print holds them (the SLURM case of
  tests/test_secrets_scan.py).

SLURM delays a requeued job by about two minutes (its BeginTime); the tests release it at once with
`scontrol update StartTime=now`, which changes nothing but the wait. Every driver runs under a timeout
and its jobs are cancelled on the way out.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bench.pipeline import run
from helpers import SECRETS, assert_no_secret, submitit_logs

# Long enough to be interrupted mid-training (~25 steps/s on one core), short enough for a test.
JOB = ["budget=fast", "progress=false", "eval.lm_eval.enabled=false", "train.max_steps=600"]
DRIVER_TIMEOUT_S = 420


def _env(cluster_env: dict, tmp_path: Path, sweep_id: str, cache: Path) -> dict:
    # the session's shared cache: its SFT/dataset/reference builds are made once for every test that needs them
    return {**cluster_env, "IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(cache),
            "IMI_BENCH_SWEEP_ID": sweep_id, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}


class Driver:
    """A `python -m bench.train -m hydra/launcher=slurm ...` sweep driver running in the background."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict, launcher: list[str] = ()):
        self.name = f"imi-fault-{uuid.uuid4().hex[:8]}"
        self.env = env
        self.sweep_dir = cwd / "hydra" / self.name
        command = [sys.executable, "-m", "bench.train", "-m", "hydra/launcher=slurm", f"hydra.launcher.name={self.name}",
                   f"hydra.sweep.dir={self.sweep_dir}", *launcher, *args]
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def jobs(self) -> dict[str, str]:
        """{job id: state} of this driver's jobs in the queue."""
        out = subprocess.run(["squeue", f"--name={self.name}", "-h", "-o", "%i %T"], env=self.env, capture_output=True,
                             text=True, timeout=30).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def release_requeued(self) -> None:
        """Start requeued jobs now instead of after SLURM's requeue delay."""
        for job_id, state in self.jobs().items():
            if state == "PENDING":
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=self.env,
                               capture_output=True, timeout=30)

    def wait(self, timeout: float = DRIVER_TIMEOUT_S, release: bool = False) -> subprocess.CompletedProcess:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if release:
                self.release_requeued()
            time.sleep(2)
        if self.proc.poll() is None:
            self.cancel()
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"driver did not finish in {timeout} s\n{out[-2000:]}\n{err[-3000:]}\n{submitit_logs(self.sweep_dir)}")
        out, err = self.proc.communicate()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def cancel(self) -> None:
        subprocess.run(["scancel", f"--name={self.name}"], env=self.env, timeout=30)

    def restarts(self, job_id: str) -> int:
        """How often SLURM started the job again (requeues), while it is still known to slurmctld.
        (submitit's own log of an earlier attempt is gone: each attempt truncates the job's log file.)"""
        out = subprocess.run(["scontrol", "show", "job", job_id], env=self.env, capture_output=True, text=True,
                             timeout=30).stdout
        return int(out.split("Restarts=", 1)[1].split()[0])


def _wait_for(condition, what: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


# budget=fast runs land in <sweep id>-fast (smoke runs never mix with real ones): match both.
def _checkpoints(runs: Path, sweep_id: str = "") -> list[Path]:
    return sorted(runs.glob(f"{sweep_id}*/*/checkpoint/state.pt"))


def _records(runs: Path, sweep_id: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(runs.glob(f"{sweep_id}*/*/record.json"))}


@pytest.fixture
def reference(cluster_env, tmp_path, shared_cache):
    """Builds the shared caches and runs the job once, uninterrupted, outside SLURM: the numbers to match."""
    def run(extra: list[str]) -> dict:
        env = _env(cluster_env, tmp_path, "reference", shared_cache)
        proc = subprocess.run([sys.executable, "-m", "bench.train", *JOB, *extra], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (record,) = _records(tmp_path / "runs", "reference").values()
        return record
    return run


def _assert_resumed(record: dict, reference: dict | None, min_step: int = 1) -> None:
    assert record["status"] == "completed", record["error"]
    assert record["provenance"]["resumes"] >= 1 and all(s >= min_step for s in record["provenance"]["resumed_at_steps"])
    assert "slurm_job_id" in record["provenance"]["hardware"]
    if reference is not None:
        assert record["metrics"] == reference["metrics"], "a resumed SLURM job must match the uninterrupted run"
        assert record["config_hash"] == reference["config_hash"]


def _interrupt_after_first_checkpoint(cluster_env, tmp_path, cache: Path, sweep_id: str, overrides: list[str],
                                      interrupt: list[str]):
    """Run one job on SLURM, send `interrupt` (a SLURM command, the job id appended) once it has written its
    first checkpoint, and wait for the driver: (the finished driver process, the job id, its record)."""
    driver = Driver([*JOB, *overrides], cwd=tmp_path, env=_env(cluster_env, tmp_path, sweep_id, cache),
                    launcher=["hydra.launcher.timeout_min=10"])
    try:
        _wait_for(lambda: _checkpoints(tmp_path / "runs", sweep_id), "the first checkpoint")
        (job_id,) = driver.jobs()
        subprocess.run([*interrupt, job_id], env=driver.env, check=True, timeout=30)
        done = driver.wait(release=True)
    finally:
        driver.cancel()
    assert done.returncode == 0, done.stderr[-3000:] + submitit_logs(driver.sweep_dir)
    (record,) = _records(tmp_path / "runs", sweep_id).values()
    return driver, job_id, record


@pytest.mark.slurm
def test_requeued_job_resumes_from_its_checkpoint_bit_for_bit(cluster_env, tmp_path, shared_cache, reference):
    # CI's SLURM fault: 150 steps, a checkpoint every 25 (the requeue lands within ~1 s of the first
    # checkpoint, with ~125 steps, ~5 s on a quiet core, to go)
    short = ["train.max_steps=150", "checkpoint.every_steps=25"]
    expected = reference(short)
    _, _, record = _interrupt_after_first_checkpoint(cluster_env, tmp_path, shared_cache, "requeue", short, ["scontrol", "requeue"])
    _assert_resumed(record, expected, min_step=25)
    assert not _checkpoints(tmp_path / "runs"), "checkpoints are removed once the record is complete"


@pytest.mark.slurm
@pytest.mark.slow
def test_preemption_signal_checkpoints_and_submitit_requeues(cluster_env, tmp_path, shared_cache, reference):
    every = ["checkpoint.every_steps=100"]
    expected = reference(every)
    driver, job_id, record = _interrupt_after_first_checkpoint(cluster_env, tmp_path, shared_cache, "preempt", every,
                                                               ["scancel", "--signal=USR2"])
    assert driver.restarts(job_id) == 1  # submitit's handler requeued the job after ours saved the checkpoint
    _assert_resumed(record, expected, min_step=100)


@pytest.mark.slurm
@pytest.mark.slow
def test_time_limit_checkpoints_and_the_job_resumes_in_a_later_attempt(cluster_env, tmp_path, shared_cache, reference):
    expected = reference(["train.max_steps=900", "checkpoint.every_steps=null"])
    # SLURM's limit is 1 minute; submitit's warning comes 30 s before it, ~15 s into training: the run
    # checkpoints at its next step and submitit requeues the job as timed out (max_num_timeout times at most).
    driver = Driver([*JOB, "train.max_steps=900", "checkpoint.every_steps=null"], cwd=tmp_path,
                    env=_env(cluster_env, tmp_path, "timeout", shared_cache),
                    launcher=["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30"])
    try:
        (job_id,) = _wait_for(driver.jobs, "the job")
        done = driver.wait(timeout=600, release=True)
    finally:
        driver.cancel()
    assert done.returncode == 0, done.stderr[-3000:] + submitit_logs(driver.sweep_dir)
    assert driver.restarts(job_id) >= 1  # requeued by submitit as timed out
    (record,) = _records(tmp_path / "runs", "timeout").values()
    _assert_resumed(record, expected)


@pytest.mark.slurm
def test_cancelled_sweep_ends_the_driver_in_seconds_and_a_relaunch_finishes_it(cluster_env, tmp_path, shared_cache,
                                                                               make_config, capsys):
    # builds the shared caches (a 1-step run, in this process), so both jobs reach training at once
    assert run(make_config("train.max_steps=1", "sweep_id=warm-up")).record["status"] == "completed"
    # long enough that the first job cannot finish while the second, started late on a busy machine, reaches
    # its first checkpoint (at 150 steps one did, once, under CI's two test workers: "1 of 2 ... ended")
    sweep = [*JOB, "train.max_steps=450", "checkpoint.every_steps=25", "method.beta=0.1,1.0"]
    env = {**_env(cluster_env, tmp_path, "cancel", shared_cache), **SECRETS}
    driver = Driver(sweep, cwd=tmp_path, env=env, launcher=["hydra.launcher.timeout_min=10"])
    try:
        _wait_for(lambda: len(_checkpoints(tmp_path / "runs", "cancel")) == 2, "both jobs' first checkpoints")
        assert _records(tmp_path / "runs", "cancel") == {}, "a job finished before the other's first checkpoint"
        cancelled_at = time.monotonic()
        driver.cancel()
        done = driver.wait(timeout=120)
        took = time.monotonic() - cancelled_at
    finally:
        driver.cancel()
    assert done.returncode != 0
    assert took < 30, f"the driver took {took:.0f} s to notice the cancellation"
    assert "2 of 2 SLURM jobs ended without a result" in done.stderr, done.stderr[-3000:]
    for beta in ("0.1", "1.0"):
        assert f"method.beta={beta}" in done.stderr
    assert done.stderr.count("CANCELLED") == 2 and "Traceback" not in done.stderr
    assert _records(tmp_path / "runs", "cancel") == {}, "a cancelled run wrote a record"

    again = Driver(sweep, cwd=tmp_path, env=env, launcher=["hydra.launcher.timeout_min=10"])
    try:
        finished = again.wait()
    finally:
        again.cancel()
    assert finished.returncode == 0, finished.stderr[-3000:] + submitit_logs(again.sweep_dir)
    found = _records(tmp_path / "runs", "cancel")
    assert sorted(r["config"]["method"]["beta"] for r in found.values()) == [0.1, 1.0]
    for record in found.values():
        _assert_resumed(record, None, min_step=25)
    assert not _checkpoints(tmp_path / "runs")
    n_files = assert_no_secret(tmp_path, [done, finished], list(SECRETS.values()),
                               ["record.json", ".hydra/config.yaml", ".submitit", "_log.out", "_log.err", "_submitted.pkl",
                                "_result.pkl"])
    with capsys.disabled():
        steps = [r["provenance"]["resumed_at_steps"] for r in found.values()]
        print(f"\n[cancel] driver ended {took:.1f} s after scancel; re-launch resumed the runs at steps {steps}; "
              f"{n_files} files scanned for secrets: clean")
