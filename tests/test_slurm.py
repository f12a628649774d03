"""Scale-out on SLURM (docs/design.md §10), on the real one-node cluster of tests/cluster/local_slurm.sh.

Marked `slurm` (excluded by default): Hydra multiruns through `hydra/launcher=slurm` bring their
results back, a tasks_per_node=2 job forms one gloo group of 2 ranks, and the real entry point
(`python -m bench.train`) sweeps in fast mode. Without a cluster they skip, naming the reason;
set IMI_BENCH_REQUIRE_SLURM=1 (CI, after `local_slurm.sh start`) to make that a failure instead.
Every sweep runs under a subprocess timeout and cancels its jobs on expiry, so a hung driver fails.

Unmarked (no cluster needed): the launcher configs in conf/hydra/launcher/ resolve.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import SUBMITTING_SHELL_RENDEZVOUS, submitit_logs

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SWEEP_TIMEOUT_S = 300  # a 3-job sweep takes ~15 s on 2 cores; this only bounds a hang
FAST_OVERRIDES = ["budget=fast", "progress=false"]  # the entry point's fast mode (conf/budget/fast.yaml)
# A 2-rank CPU job: the multi-process hardware config with gloo on CPU, one thread per rank, and a short
# process-group timeout so that a rank that dies fails the job in a minute instead of ten.
TWO_CPU_RANKS = ["hardware=multi_gpu", "hardware.accelerator=cpu", "hardware.mixed_precision=no",
                 "hardware.torch_threads=1", "hardware.dist_timeout_s=60"]


# --- launcher configs (no cluster) --------------------------------------------------------------

def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("hardware, tasks, cpus", [("cpu", 1, 1), ("multi_gpu", 2, 4)])
def test_slurm_launcher_config_follows_the_hardware(hardware, tasks, cpus):
    cfg = compose_with("hydra/launcher=slurm", f"hardware={hardware}")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.imi_bench.SlurmLauncher"  # the plugin's, with a driver that sees cancellations
    assert launcher.partition == "debug"
    assert (launcher.tasks_per_node, launcher.cpus_per_task) == (tasks, cpus)
    assert cfg.hardware.num_processes == tasks and cfg.hardware.torch_threads == cpus
    # submitit's warning signal must fall inside the time limit, with room to spare
    assert launcher.timeout_min >= 3 and launcher.signal_delay_s < launcher.timeout_min * 60 - 60
    assert (launcher.mem_gb, launcher.array_parallelism) == (4, 32)  # conf/hydra/launcher/slurm.yaml


def test_joblib_launcher_config_repeats_the_plugin_schema_with_two_jobs():
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

    ours = OmegaConf.to_container(OmegaConf.load(CONF / "hydra" / "launcher" / "joblib.yaml"))
    plugin = {f.name: f.default for f in dataclasses.fields(JobLibLauncherConf)}
    assert ours == {**plugin, "n_jobs": 2}
    # Hydra 1.3 checks a file named like a plugin's schema against that schema, and says it is deprecated.
    with pytest.warns(UserWarning, match="validated against ConfigStore schema"):
        composed = compose_with("hydra/launcher=joblib").hydra.launcher
    assert composed._target_ == plugin["_target_"] and composed.n_jobs == 2


# --- the cluster (slurm_env, cluster_problem, submitit_logs: tests/helpers.py; cluster_env: conftest.py)

def run_sweep(args: list[str], *, cwd: Path, env: dict[str, str], sweep_dir: Path,
              timeout_s: int = SWEEP_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a Hydra multirun driver to completion; on timeout cancel its jobs and fail the test."""
    job_name = f"imi-test-{uuid.uuid4().hex[:8]}"  # scancel --name finds exactly this sweep's jobs
    command = [sys.executable, *args, f"hydra.sweep.dir={sweep_dir}", f"hydra.launcher.name={job_name}"]
    try:
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        subprocess.run(["scancel", f"--name={job_name}"], env=env, timeout=30)
        output = (exc.stdout or b"").decode(errors="replace")[-2000:] + (exc.stderr or b"").decode(errors="replace")[-2000:]
        pytest.fail(f"sweep did not finish in {timeout_s}s (its jobs were cancelled)\n{output}\n{submitit_logs(sweep_dir)}")
    assert proc.returncode == 0, (f"sweep failed (exit {proc.returncode})\n{proc.stdout[-2000:]}\n"
                                  f"{proc.stderr[-3000:]}\n{submitit_logs(sweep_dir)}")
    return proc


def job_returns(sweep_dir: Path) -> list:
    """Every task's Hydra JobReturn, as submitit handed it back to the driver (one per rank)."""
    returns = []
    for path in sorted(sweep_dir.glob(".submitit/**/*_result.pkl")):
        with open(path, "rb") as f:
            outcome, value = pickle.load(f)
        assert outcome == "success", f"{path}: {outcome}: {value}"
        returns.append(value)
    return returns


TINY_APP = textwrap.dedent('''
    """A tiny Hydra app: one all-reduce across its ranks, rank 0 writes a file, every rank returns."""
    import json, os, pathlib
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(version_base="1.3", config_path="conf", config_name="config")
    def main(cfg):
        from bench.distributed import accelerator_kwargs, is_main_process, prepare_distributed_env
        prepare_distributed_env(cfg.hardware.num_processes, cfg.hardware.accelerator)
        import torch
        from accelerate import Accelerator
        accelerator = Accelerator(**accelerator_kwargs(OmegaConf.to_container(cfg.hardware)))
        rank = accelerator.process_index
        # ranks 0..n-1 contribute rank + 1: one real group of n ranks sums to n (n + 1) / 2
        rank_sum = accelerator.reduce(torch.tensor([rank + 1.0]), "sum").item()
        result = {"beta": cfg.beta, "score": cfg.beta * 10, "rank": rank,
                  "world_size": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
                  "rank_sum": rank_sum, "master_port": os.environ.get("MASTER_PORT"),
                  "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "slurm_job_id": os.environ["SLURM_JOB_ID"]}
        if is_main_process():
            out = pathlib.Path(cfg.out_dir)
            out.mkdir(exist_ok=True)
            (out / f"beta={cfg.beta}-rank{rank}.json").write_text(json.dumps(result))
        return result

    if __name__ == "__main__":
        main()
''')


@pytest.fixture
def tiny_app(tmp_path: Path) -> Path:
    """The app above in tmp_path, finding the suite's hydra/launcher and hardware configs by search path."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(textwrap.dedent(f"""
        defaults:
          - hardware: cpu
          - _self_
        beta: 0.1
        out_dir: {tmp_path / "out"}
        hydra:
          searchpath:
            - file://{CONF}
    """))
    (tmp_path / "app.py").write_text(TINY_APP)
    return tmp_path


@pytest.mark.slurm
def test_three_job_sweep_results_come_back(cluster_env, tiny_app):
    sweep_dir = tiny_app / "multirun"
    run_sweep(["app.py", "-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=5", "beta=0.1,0.2,0.5"],
              cwd=tiny_app, env=cluster_env, sweep_dir=sweep_dir)
    returns = sorted((r.return_value for r in job_returns(sweep_dir)), key=lambda r: r["beta"])
    assert [(r["beta"], r["score"], r["world_size"]) for r in returns] == [(0.1, 1.0, 1), (0.2, 2.0, 1), (0.5, 5.0, 1)]
    assert len({r["slurm_job_id"] for r in returns}) == 3  # three array tasks, not one job looping
    assert sorted(p.name for p in (tiny_app / "out").iterdir()) == [
        "beta=0.1-rank0.json", "beta=0.2-rank0.json", "beta=0.5-rank0.json"]


@pytest.mark.slurm
def test_two_task_job_forms_one_gloo_group(cluster_env, tiny_app):
    sweep_dir = tiny_app / "multirun"
    env = {**cluster_env, **SUBMITTING_SHELL_RENDEZVOUS}  # must not leak into the job's rendezvous
    run_sweep(["app.py", "-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=5", *TWO_CPU_RANKS, "beta=0.3"],
              cwd=tiny_app, env=env, sweep_dir=sweep_dir)
    ranks = sorted((r.return_value for r in job_returns(sweep_dir)), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]  # tasks_per_node followed hardware.num_processes
    for rank in ranks:
        assert rank["world_size"] == 2 and rank["distributed_type"] == "DistributedType.MULTI_CPU"
        assert rank["rank_sum"] == 3.0  # 1 + 2: both ranks in one group
        assert rank["master_port"] != SUBMITTING_SHELL_RENDEZVOUS["MASTER_PORT"]
        assert rank["omp_num_threads"] == "1"  # = cpus_per_task, not accelerate's cores / ranks
    assert ranks[0]["master_port"] == ranks[1]["master_port"]
    written = [json.loads(p.read_text()) for p in (tiny_app / "out").iterdir()]
    assert [(w["rank"], w["world_size"], w["distributed_type"]) for w in written] == [(0, 2, "DistributedType.MULTI_CPU")]


# --- the real entry point -----------------------------------------------------------------------

def entry_point_env(cluster_env: dict[str, str], tmp_path: Path, sweep_id: str, cache: Path) -> dict[str, str]:
    return {**cluster_env, "IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(cache),
            "IMI_BENCH_SWEEP_ID": sweep_id, "WANDB_MODE": "disabled"}


def read_records(runs: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*/*/record.json"))]


def same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.slurm
@pytest.mark.slow  # CI runs a 2-job entry-point sweep on SLURM in tests/test_secrets_scan.py (records checked there)
def test_entry_point_two_job_sweep(cluster_env, tmp_path, shared_cache):
    sweep_dir = tmp_path / "multirun"
    env = entry_point_env(cluster_env, tmp_path, "slurm-sweep", shared_cache)
    run_sweep(["-m", "bench.train", "-m", "hydra/launcher=slurm", *FAST_OVERRIDES, "method.beta=0.1,0.5"],
              cwd=tmp_path, env=env, sweep_dir=sweep_dir)
    records = read_records(tmp_path / "runs")
    assert sorted(r["config"]["method"]["beta"] for r in records) == [0.1, 0.5]
    assert all(r["status"] == "completed" for r in records), [r["error"] for r in records]
    assert {r["sweep_id"] for r in records} == {"slurm-sweep-fast"}  # smoke runs: <sweep id>-fast
    # what each job returned to the sweeper is its record's objective metric
    returned = {float(next(o for o in r.overrides if o.startswith("method.beta=")).split("=")[1]): r.return_value
                for r in job_returns(sweep_dir)}
    for record in records:
        objective = record["config"]["objective"]
        assert same_number(returned[record["config"]["method"]["beta"]], record["metrics"][objective])


@pytest.mark.slurm
def test_entry_point_two_rank_job(cluster_env, tmp_path, shared_cache):
    sweep_dir = tmp_path / "multirun"
    env = entry_point_env(cluster_env, tmp_path, "slurm-ranks", shared_cache)
    run_sweep(["-m", "bench.train", "-m", "hydra/launcher=slurm", *FAST_OVERRIDES, *TWO_CPU_RANKS],
              cwd=tmp_path, env=env, sweep_dir=sweep_dir)
    (record,) = read_records(tmp_path / "runs")  # one record: only rank 0 writes
    assert record["status"] == "completed", record["error"]
    assert record["cost"]["device_count"] == 2
    assert len(job_returns(sweep_dir)) == 2  # both ranks ran the job
