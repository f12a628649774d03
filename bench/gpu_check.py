"""The prepared GPU check (docs/design.md §14): on a machine with CUDA, run the `gpu`-marked tests and a short
real-model study with every layer trainable, each step under its own time limit (10 minutes in all), and
write what happened, with the device's name, for committing.

    python -m bench.gpu_check --out results/gpu        # on a GPU machine
    python -m bench.gpu_check --dry-run                # what it would run (any machine)

Without CUDA it says so and exits 2 before running anything. The throughput benchmark against TRL
(`python -m bench.benchmark`) times CPU workloads only, so it is not a step here.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.provenance import hardware, now, package_versions

# (name, seconds allowed, command): 180 + 360 s, with room for start-up under the 10-minute budget.
STEPS = (
    ("gpu_tests", 180, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                        "-m", "gpu", "tests/test_gpu.py"]),
    ("smollm2_full_model", 360, [sys.executable, "-m", "bench.train", "experiment=smollm2_budget", "method=dpo",
                                 "hardware=gpu", "model.trainable_layers=null", "eval.lm_eval.enabled=false",
                                 "progress=false", "sweep_id=gpu-check"]),
)


def run_step(name: str, limit_s: int, command: list[str], out: Path) -> dict:
    """Run one step with its time limit; its output goes to <out>/<name>.log."""
    started = time.perf_counter()
    env = {**os.environ, "IMI_BENCH_RUNS": str(out / "runs")}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s, env=env)
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        # on a timeout the captured output comes back as bytes, whatever text=True asked for
        partial = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                          for part in (err.stdout, err.stderr) if part)
        rc, output = 124, f"{partial}\n[gpu_check] stopped after {limit_s} s"
    (out / f"{name}.log").write_text(output)
    return {"name": name, "command": " ".join(command), "limit_s": limit_s, "rc": rc,
            "wall_s": round(time.perf_counter() - started, 1), "tail": output[-2000:]}


def markdown(result: dict) -> str:
    lines = [f"# GPU check on {result['device']}", "", f"{result['finished_at']}, torch {result['packages'].get('torch')}",
             "", "| step | exit | wall (s) | limit (s) |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['rc']} | {s['wall_s']} | {s['limit_s']} |" for s in result["steps"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/gpu"), help="where results land")
    parser.add_argument("--dry-run", action="store_true", help="list the steps, run nothing")
    args = parser.parse_args(argv)
    import torch

    for name, limit, command in STEPS:
        print(f"[gpu_check] {name} (<= {limit} s): {' '.join(command)}")
    if args.dry_run:
        return 0
    if not torch.cuda.is_available():
        print("[gpu_check] no CUDA device here: nothing run (run this on a GPU machine)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    steps = [run_step(name, limit, command, args.out) for name, limit, command in STEPS]
    result = {"device": torch.cuda.get_device_name(0), "hardware": hardware(), "packages": package_versions(),
              "finished_at": now(), "steps": steps}
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(result))
    print(f"[gpu_check] results: {args.out / 'gpu_check.json'} and gpu_check.md")
    return 0 if all(s["rc"] == 0 for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
