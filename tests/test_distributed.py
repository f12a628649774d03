"""bench.distributed: launcher detection, the rendezvous environment, Accelerator kwargs, and a real
2-process gloo job on CPU under torchrun (DDP must average gradients across ranks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
import torch
from omegaconf import OmegaConf

from bench import distributed
from bench.distributed import (DIST_JOB_ID_VAR, DistributedSetupError, accelerator_kwargs, global_rank,
                               is_main_process, launcher, prepare_distributed_env, world_size)

CPU_HARDWARE = {"name": "cpu", "accelerator": "cpu", "num_processes": 1, "mixed_precision": "no",
                "torch_threads": 1, "gradient_checkpointing": False, "dist_timeout_s": 120}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Each test starts with no launcher variables (the developer's shell may be inside SLURM)."""
    for key in list(os.environ):
        if key.startswith(("SLURM_", "TORCHELASTIC_", "SUBMITIT_")):
            monkeypatch.delenv(key)
    for key in (*distributed.RENDEZVOUS_VARS, DIST_JOB_ID_VAR, "OMP_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)


def slurm_step(monkeypatch, *, job_id="4242", ntasks=2, procid=0, nodes="gpu[07-08]", num_nodes=2,
               cpus_per_task="3"):
    """The variables srun gives one task of a job step (the subset submitit and we read)."""
    env = {"SLURM_JOB_ID": job_id, "SLURM_STEP_ID": "0", "SLURM_NTASKS": str(ntasks),
           "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid % (ntasks // num_nodes)),
           "SLURM_NODEID": str(procid // (ntasks // num_nodes)), "SLURM_JOB_NODELIST": nodes,
           "SLURM_JOB_NUM_NODES": str(num_nodes), "SLURM_CPUS_PER_TASK": cpus_per_task}
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def inherit_submitting_shell(monkeypatch):
    """What sbatch copies into a job when the submitting shell had a rendezvous of its own."""
    for key, value in {"MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "29999", "RANK": "0", "WORLD_SIZE": "2",
                       "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "9", "OMP_NUM_THREADS": "8"}.items():
        monkeypatch.setenv(key, value)


# --- no launcher -------------------------------------------------------------------------------

def test_single_process_without_launcher_changes_nothing(monkeypatch):
    monkeypatch.setenv("MASTER_PORT", "1234")
    prepare_distributed_env(1, "cpu")
    assert os.environ["MASTER_PORT"] == "1234"
    assert (launcher(), world_size(), global_rank(), is_main_process()) == ("none", 1, 0, True)


def test_multi_process_config_without_launcher_fails_naming_the_key():
    with pytest.raises(DistributedSetupError, match=r"hardware.num_processes=2 .*without a multi-process launcher"
                       r".*tasks_per_node=2"):
        prepare_distributed_env(2, "cpu")


@pytest.mark.parametrize("num_processes, accelerator, key", [
    (0, "cpu", "hardware.num_processes"), (True, "cpu", "hardware.num_processes"),
    ("2", "cpu", "hardware.num_processes"), (1, "tpu", "hardware.accelerator")])
def test_bad_arguments_name_the_key(num_processes, accelerator, key):
    with pytest.raises(DistributedSetupError, match=key):
        prepare_distributed_env(num_processes, accelerator)


# --- torchrun ----------------------------------------------------------------------------------

def test_torchrun_environment_is_left_alone(monkeypatch):
    torchrun = {"TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
                "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    for key, value in torchrun.items():
        monkeypatch.setenv(key, value)
    prepare_distributed_env(2, "cpu")
    assert {key: os.environ[key] for key in torchrun} == torchrun
    assert (launcher(), world_size(), global_rank(), is_main_process()) == ("torchrun", 2, 1, False)
    with pytest.raises(DistributedSetupError, match=r"hardware.num_processes=4 but torchrun started WORLD_SIZE=2"):
        prepare_distributed_env(4, "cpu")


# --- SLURM -------------------------------------------------------------------------------------

def test_slurm_step_replaces_what_sbatch_copied_from_the_submitting_shell(monkeypatch):
    slurm_step(monkeypatch, procid=1)
    inherit_submitting_shell(monkeypatch)
    prepare_distributed_env(2, "cpu")
    # rank 1 of 2 tasks on 2 nodes: one task per node, rank 0 on the first node of the list
    assert {key: os.environ[key] for key in ("MASTER_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")} \
        == {"MASTER_ADDR": "gpu07", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    port = int(os.environ["MASTER_PORT"])
    assert port != 29999 and 20000 <= port <= 60000
    assert os.environ["OMP_NUM_THREADS"] == "3"  # the allocation, not the submitting shell's 8
    assert os.environ[DIST_JOB_ID_VAR] == "4242"
    assert (launcher(), world_size(), global_rank(), is_main_process()) == ("slurm", 2, 1, False)


def _port_for(monkeypatch, job_id: str, procid: int) -> str:
    for key in (*distributed.RENDEZVOUS_VARS, DIST_JOB_ID_VAR):
        monkeypatch.delenv(key, raising=False)
    slurm_step(monkeypatch, job_id=job_id, procid=procid)
    monkeypatch.setenv("MASTER_PORT", "29999")  # the same inherited port in every job of the sweep
    prepare_distributed_env(2, "cpu")
    return os.environ["MASTER_PORT"]


def test_slurm_port_is_shared_by_the_ranks_of_a_job_and_differs_between_jobs(monkeypatch):
    ports = {(job, rank): _port_for(monkeypatch, job, rank) for job in ("100", "101", "102_3") for rank in (0, 1)}
    for job in ("100", "101", "102_3"):
        assert ports[(job, 0)] == ports[(job, 1)]
    assert len({ports[(job, 0)] for job in ("100", "101", "102_3")}) == 3


def test_slurm_keeps_a_rendezvous_this_job_chose(monkeypatch):
    slurm_step(monkeypatch, procid=1)
    for key, value in {"MASTER_ADDR": "head", "MASTER_PORT": "31313", "RANK": "7", DIST_JOB_ID_VAR: "4242"}.items():
        monkeypatch.setenv(key, value)
    prepare_distributed_env(2, "cpu")
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], os.environ["RANK"]) == ("head", "31313", "1")
    prepare_distributed_env(2, "cpu")  # a second call in the same process changes nothing
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], os.environ["RANK"]) == ("head", "31313", "1")


def test_slurm_drops_a_rendezvous_marked_by_another_job(monkeypatch):
    slurm_step(monkeypatch, procid=0)
    for key, value in {"MASTER_ADDR": "head", "MASTER_PORT": "31313", DIST_JOB_ID_VAR: "4241"}.items():
        monkeypatch.setenv(key, value)
    prepare_distributed_env(2, "cpu")
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["MASTER_PORT"] != "31313"
    assert os.environ[DIST_JOB_ID_VAR] == "4242"


def test_slurm_single_task_removes_stale_rendezvous(monkeypatch):
    # A stale WORLD_SIZE/LOCAL_RANK would make accelerate wait for ranks that never come.
    slurm_step(monkeypatch, ntasks=1, nodes="localhost", num_nodes=1, cpus_per_task="1")
    inherit_submitting_shell(monkeypatch)
    prepare_distributed_env(1, "cpu")
    assert not any(key in os.environ for key in distributed.RENDEZVOUS_VARS)
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert (launcher(), world_size(), is_main_process()) == ("slurm", 1, True)


def test_slurm_task_count_must_match_the_config(monkeypatch):
    slurm_step(monkeypatch, procid=0)
    with pytest.raises(DistributedSetupError, match=r"hardware.num_processes=1 but this SLURM job step has SLURM_NTASKS=2"):
        prepare_distributed_env(1, "cpu")


def test_slurm_batch_script_is_one_process(monkeypatch):
    # Outside srun (the batch script itself, or an salloc shell) SLURM_NTASKS is the allocation's.
    slurm_step(monkeypatch, procid=0)
    monkeypatch.delenv("SLURM_STEP_ID")
    assert (launcher(), world_size()) == ("slurm", 1)
    with pytest.raises(DistributedSetupError, match="outside srun"):
        prepare_distributed_env(2, "cpu")


# --- Accelerator kwargs ------------------------------------------------------------------------

def test_accelerator_kwargs_for_cpu():
    kwargs = accelerator_kwargs(CPU_HARDWARE)
    assert kwargs["cpu"] is True and kwargs["mixed_precision"] == "no"
    (handler,) = kwargs["kwargs_handlers"]
    assert handler.timeout == timedelta(seconds=120)


def test_accelerator_kwargs_reads_a_dictconfig_and_defaults_the_timeout():
    hardware = OmegaConf.create({k: v for k, v in CPU_HARDWARE.items() if k != "dist_timeout_s"})
    hardware.mixed_precision = "bf16"
    kwargs = accelerator_kwargs(hardware)
    assert kwargs["mixed_precision"] == "bf16"
    assert kwargs["kwargs_handlers"][0].timeout == timedelta(seconds=distributed.DEFAULT_DIST_TIMEOUT_S)


@pytest.mark.parametrize("change, key", [
    ({"accelerator": "tpu"}, "hardware.accelerator"), ({"mixed_precision": "fp8"}, "hardware.mixed_precision"),
    ({"dist_timeout_s": 0}, "hardware.dist_timeout_s"), ({"dist_timeout_s": "2m"}, "hardware.dist_timeout_s")])
def test_accelerator_kwargs_bad_values_name_the_key(change, key):
    with pytest.raises(DistributedSetupError, match=key):
        accelerator_kwargs({**CPU_HARDWARE, **change})


def test_accelerator_kwargs_missing_key():
    with pytest.raises(DistributedSetupError, match="hardware.mixed_precision is missing"):
        accelerator_kwargs({"accelerator": "cpu"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_accelerator_kwargs_cuda_without_a_gpu_fails():
    with pytest.raises(DistributedSetupError, match="no CUDA device"):
        accelerator_kwargs({**CPU_HARDWARE, "accelerator": "cuda"})


# --- a real 2-process job ----------------------------------------------------------------------

LR = 0.1


def rank_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Different data on each rank, so that an unsynchronised step would leave the ranks apart."""
    x = torch.arange(12, dtype=torch.float32).reshape(4, 3) * (rank + 1) / 10
    y = torch.full((4, 1), float(rank) - 0.5)
    return x, y


WORKER = textwrap.dedent("""
    import json, os, pathlib, sys
    import torch
    from bench.distributed import accelerator_kwargs, is_main_process, prepare_distributed_env

    prepare_distributed_env(2, "cpu")
    from accelerate import Accelerator

    accelerator = Accelerator(**accelerator_kwargs(
        {"accelerator": "cpu", "mixed_precision": "no", "dist_timeout_s": 60}))
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    rank = accelerator.process_index
    x, y = rank_batch(rank)
    loss = ((model(x) - y) ** 2).mean()
    accelerator.backward(loss)
    optimizer.step()
    params = torch.cat([p.detach().flatten() for p in accelerator.unwrap_model(model).parameters()])
    report = {"rank": rank, "world_size": accelerator.num_processes,
              "distributed_type": str(accelerator.distributed_type), "ddp": type(model).__name__,
              "is_main_process": is_main_process(), "params": params.tolist()}
    # one write per line: both ranks share stdout, and print() may write the newline separately
    os.write(1, ("REPORT " + json.dumps(report) + "\\n").encode())
    if is_main_process():
        pathlib.Path(sys.argv[1], f"result-rank{rank}.json").write_text(json.dumps(report))
""")


def test_two_cpu_ranks_under_torchrun_form_one_ddp_group(tmp_path):
    import inspect

    script = tmp_path / "worker.py"
    # The worker shares this file's data and learning rate, so the brute force below sees the same batches.
    script.write_text(f"import torch\nLR = {LR}\n" + inspect.getsource(rank_batch) + WORKER)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = sorted((json.loads(line.split("REPORT ", 1)[1]) for line in proc.stdout.splitlines()
                      if line.startswith("REPORT ")), key=lambda r: r["rank"])
    assert [r["rank"] for r in reports] == [0, 1]
    for report in reports:
        assert report["world_size"] == 2
        assert report["distributed_type"] == "DistributedType.MULTI_CPU"
        assert report["ddp"] == "DistributedDataParallel"
    assert [r["is_main_process"] for r in reports] == [True, False]

    # Brute force: DDP's step = one SGD step on the mean of the two ranks' gradients.
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    init = torch.cat([p.detach().flatten() for p in model.parameters()])
    grads = []
    for rank in (0, 1):
        model.zero_grad()
        x, y = rank_batch(rank)
        ((model(x) - y) ** 2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    expected = init - LR * (grads[0] + grads[1]) / 2
    rank0_alone = init - LR * grads[0]
    assert not torch.allclose(expected, rank0_alone, atol=1e-4)  # the data really differ across ranks
    for report in reports:
        torch.testing.assert_close(torch.tensor(report["params"]), expected, atol=1e-6, rtol=1e-5)

    assert [p.name for p in out.iterdir()] == ["result-rank0.json"]  # only rank 0 writes
