"""Process setup for multi-process training (docs/design.md §10): the one place that reads launcher state.

Decides how this process was launched (torchrun / `accelerate launch`, a SLURM job step, or nothing) and makes
the torch.distributed rendezvous variables right for it (the rules per launcher: docs/design.md §10); call
`prepare_distributed_env` first, then build `Accelerator(**accelerator_kwargs(hardware), ...)`. Must not build the
Accelerator, touch a model, init the process group or set torch's thread count: the trainer owns those.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Mapping

# The env:// rendezvous variables (torch.distributed "Environment variable initialization").
RENDEZVOUS_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
# Set beside the rendezvous variables by whoever chose them inside a SLURM job: the job id they belong to.
DIST_JOB_ID_VAR = "IMI_BENCH_DIST_JOB_ID"
# How long ranks wait for each other at rendezvous and in collectives before failing. torch's default
# is 30 minutes, so a rank that died before rendezvous would hold the others (and the allocation) that
# long; two minutes is ample on one node. Hardware configs override it with `dist_timeout_s`.
DEFAULT_DIST_TIMEOUT_S = 120
ACCELERATORS = ("cpu", "cuda")
MIXED_PRECISIONS = ("no", "bf16", "fp16")


class DistributedSetupError(RuntimeError):
    """The launch does not match the hardware config; the message names the key or variable."""


def launcher() -> str:
    """How this process was started: "torchrun", "slurm" (inside a SLURM job) or "none"."""
    if "TORCHELASTIC_RUN_ID" in os.environ:  # set by torchrun's agent (also under accelerate launch)
        return "torchrun"
    if "SLURM_JOB_ID" in os.environ:
        return "slurm"
    return "none"


def _in_slurm_step() -> bool:
    # srun sets SLURM_STEP_ID; the batch script and an salloc shell are one process whatever
    # SLURM_NTASKS (the allocation's task count) says.
    return "SLURM_STEP_ID" in os.environ


def world_size() -> int:
    """Number of processes of this run, from the launcher (1 when there is none)."""
    kind = launcher()
    if kind == "torchrun":
        return _int_env("WORLD_SIZE")
    if kind == "slurm" and _in_slurm_step():
        return _int_env("SLURM_NTASKS")
    return 1


def global_rank() -> int:
    """This process's rank among `world_size()` processes, from the launcher (0 when there is none)."""
    kind = launcher()
    if kind == "torchrun":
        return _int_env("RANK")
    if kind == "slurm" and _in_slurm_step():
        return _int_env("SLURM_PROCID")
    return 0


def is_main_process() -> bool:
    """True in the one process that may write run records, history and logs (global rank 0).

    Reads the initialised process group when there is one, else the launcher's variables, so it
    gives the same answer before and after the Accelerator exists (unlike a plain
    `Accelerator().is_main_process` under torchrun on CPU without cpu=True, which says True on every
    rank). Every rank must still run the same collectives; only the writing is rank 0's.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return global_rank() == 0


def prepare_distributed_env(num_processes: int, accelerator: str) -> None:
    """Make this process's environment right for `num_processes`-way training; call before Accelerator().

    num_processes: `hardware.num_processes`, which must equal the launcher's world size (1 without one).
    accelerator:   `hardware.accelerator`, "cpu" or "cuda".
    Raises DistributedSetupError when the launch and the config disagree (e.g. a 2-process config run
    without a launcher would otherwise train alone and silently report single-process numbers).
    """
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise DistributedSetupError(f"hardware.num_processes must be an integer >= 1, got {num_processes!r}")
    if accelerator not in ACCELERATORS:
        raise DistributedSetupError(f"hardware.accelerator must be one of {', '.join(ACCELERATORS)}, got {accelerator!r}")
    kind = launcher()
    if kind == "slurm":
        _prepare_slurm_job()
    size = world_size()
    if size != num_processes:
        raise DistributedSetupError(_mismatch_message(kind, size, num_processes))


def check_hardware_config(hardware_cfg: Mapping[str, Any]) -> None:
    """The `hardware` group's values, checked without looking at the machine (bench.config runs this
    before any compute, also when planning a GPU sweep on a CPU-only machine). Raises
    DistributedSetupError naming `hardware.<key>`."""
    _check_device_keys(hardware_cfg)
    for key in ("num_processes", "torch_threads"):
        value = _required(hardware_cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DistributedSetupError(f"hardware.{key} must be an integer >= 1, got {value!r}")


def _check_device_keys(hardware_cfg: Mapping[str, Any]) -> None:
    """accelerator, mixed_precision and dist_timeout_s: the keys `accelerator_kwargs` reads."""
    device = _required(hardware_cfg, "accelerator")
    if device not in ACCELERATORS:
        raise DistributedSetupError(f"hardware.accelerator must be one of {', '.join(ACCELERATORS)}, got {device!r}")
    precision = _required(hardware_cfg, "mixed_precision")
    if precision not in MIXED_PRECISIONS:
        raise DistributedSetupError(
            f"hardware.mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got {precision!r}")
    timeout_s = hardware_cfg.get("dist_timeout_s", DEFAULT_DIST_TIMEOUT_S)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise DistributedSetupError(f"hardware.dist_timeout_s must be a number of seconds > 0, got {timeout_s!r}")


def accelerator_kwargs(hardware_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for `accelerate.Accelerator` from a hardware config (conf/hardware/*.yaml).

    Reads `accelerator` (cpu|cuda), `mixed_precision` (no|bf16|fp16) and `dist_timeout_s` (optional,
    default 120). Returns {"cpu", "mixed_precision", "kwargs_handlers"}; the caller adds its own
    (e.g. gradient_accumulation_steps).
    cpu=True matters beyond device placement: without it, accelerate under torchrun on a CPU-only
    torch reports DistributedType.NO and every rank trains alone on the full data.
    """
    from accelerate.utils import InitProcessGroupKwargs

    _check_device_keys(hardware_cfg)
    device, precision = hardware_cfg["accelerator"], hardware_cfg["mixed_precision"]
    timeout_s = hardware_cfg.get("dist_timeout_s", DEFAULT_DIST_TIMEOUT_S)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DistributedSetupError("hardware.accelerator is 'cuda' but no CUDA device is visible; "
                                        "use hardware=cpu or run on a GPU machine")
    return {
        "cpu": device == "cpu",
        "mixed_precision": precision,
        "kwargs_handlers": [InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))],
    }


def _prepare_slurm_job() -> None:
    job_id = os.environ["SLURM_JOB_ID"]
    # MASTER_ADDR/MASTER_PORT are per job: kept only if this job chose them (docs/design.md §10).
    chosen_here = os.environ.get(DIST_JOB_ID_VAR) == job_id
    kept = {key: os.environ[key] for key in ("MASTER_ADDR", "MASTER_PORT") if chosen_here and key in os.environ}
    # RANK/WORLD_SIZE/LOCAL_* are per task and always follow SLURM's own numbering.
    for key in RENDEZVOUS_VARS:
        os.environ.pop(key, None)
    os.environ.pop(DIST_JOB_ID_VAR, None)
    # accelerate otherwise sets torch's threads to physical cores / local world size, ignoring the
    # allocation: 2 ranks on a 16-core node would each take 8 threads while SLURM gave them 1 CPU.
    if "SLURM_CPUS_PER_TASK" in os.environ:
        os.environ["OMP_NUM_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]
    if world_size() == 1:
        return  # one process: no rendezvous, and stale copies must not make accelerate look for one
    from submitit.helpers import TorchDistributedEnvironment

    # submitit picks its job environment by SUBMITIT_EXECUTOR, which only its own job script sets:
    # name SLURM explicitly so plain `srun python -m bench.train` works too.
    os.environ["SUBMITIT_EXECUTOR"] = "slurm"
    if "MASTER_PORT" in kept:  # TorchDistributedEnvironment reuses an exported port, else derives one from the job id
        os.environ["MASTER_PORT"] = kept["MASTER_PORT"]
    # All GPUs of the node stay visible: accelerate picks cuda:LOCAL_RANK itself.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if "MASTER_ADDR" in kept:
        os.environ["MASTER_ADDR"] = kept["MASTER_ADDR"]
    # A second call in this process (or a job this one submits) can tell these values apart.
    os.environ[DIST_JOB_ID_VAR] = job_id


def _mismatch_message(kind: str, size: int, num_processes: int) -> str:
    if kind == "none":
        return (f"hardware.num_processes={num_processes} but this process was started without a "
                f"multi-process launcher; launch it with `accelerate launch --multi_gpu --num_processes "
                f"{num_processes} -m bench.train ...`, torchrun, or on SLURM with "
                f"hydra.launcher.tasks_per_node={num_processes}")
    if kind == "torchrun":
        return (f"hardware.num_processes={num_processes} but torchrun started WORLD_SIZE={size} "
                f"processes; make them agree")
    where = (f"this SLURM job step has SLURM_NTASKS={size} tasks" if _in_slurm_step()
             else "this process runs in a SLURM batch script or salloc shell, outside srun (one process)")
    return (f"hardware.num_processes={num_processes} but {where}; set hydra.launcher.tasks_per_node "
            f"(x nodes) to {num_processes}, or hardware.num_processes={size}")


def _int_env(name: str) -> int:
    value = os.environ.get(name)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DistributedSetupError(f"environment variable {name} must be an integer, got {value!r}") from None


def _required(cfg: Mapping[str, Any], key: str) -> Any:
    if key not in cfg:
        raise DistributedSetupError(f"hardware.{key} is missing from the hardware config")
    return cfg[key]
