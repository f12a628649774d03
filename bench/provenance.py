"""Where a number came from: code version, packages, hardware and command (docs/design.md §9)."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from bench.fingerprint import run_fingerprint
from bench.redaction import redact_overrides

PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "datasets", "hydra-core", "omegaconf",
            "lm_eval", "wandb", "numpy", "pandas", "trl", "peft", "submitit")


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def hardware() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if os.environ.get("SLURM_JOB_ID"):
        info["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return info


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def rerun_command(overrides: list[str] | None) -> list[str]:
    """The command that runs this run again. From the Hydra entry point (`overrides` = the job's own
    overrides): `python -m bench.train <overrides>`, which works from any directory and, for one job of a
    sweep, re-runs that job alone. Otherwise (a script calling bench.pipeline.run): the process's argv."""
    if overrides is None:
        return [sys.executable, *sys.argv]
    return [sys.executable, "-m", "bench.train", *overrides]


def provenance(seed: int, overrides: list[str] | None) -> dict:
    """`overrides`: the job's Hydra overrides, or None when the run was not started by bench.train."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "code_fingerprint": run_fingerprint(),  # the library's code (bench.fingerprint): a re-launch skips only its own
        "packages": package_versions(),
        "hardware": hardware(),
        "seed": seed,
        "command": " ".join(shlex.quote(a) for a in redact_overrides(rerun_command(overrides))),
        "overrides": redact_overrides(overrides or []),
    }
