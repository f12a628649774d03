"""`python -m bench`: every command of the suite in one list, each with the line that says what it does.

    python -m bench                  this list
    python -m bench <command> ...    runs `python -m <module> ...` (e.g. `python -m bench train method=dpo`)

The commands stay their own modules (each has its own --help); this is where a newcomer finds them.
"""
from __future__ import annotations

import subprocess
import sys

# command -> (module, what it does), in the order a newcomer meets them
COMMANDS = {
    "train": ("bench.train", "one run, or a Hydra sweep with -m (also imi-bench-train)"),
    "sweeps": ("bench.sweeps", "multirun.sh's planner: list presets and suites, plan and count a sweep"),
    "report": ("analysis", "the analysis: report, runs, headline, coverage (also imi-bench-report)"),
    "baseline": ("bench.baseline", "committed baselines: list, describe, reproduce (./multirun.sh reproduce)"),
    "reproduce": ("bench.reproduce", "re-run records of a results folder and compare their metrics"),
    "publish": ("bench.publish", "copy completed records into a results folder, machine paths made portable"),
    "benchmark": ("bench.benchmark", "training throughput against TRL, side by side"),
    "sampling": ("bench.benchmark.sampling", "sampling tokens/s on SmolLM2: generate vs the suite's decode loop"),
    "gpu_check": ("bench.gpu_check", "the prepared GPU check (results/gpu/README.md)"),
}


def usage() -> str:
    lines = ["usage: python -m bench <command> [args...]   (./multirun.sh <preset> runs a named sweep)", "",
             "commands:"]
    lines += [f"  {name:<10} {what}  [python -m {module}]" for name, (module, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"python -m bench: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # a child process of its own: the command sees exactly its own argv and exit status, and this entry
    # changes no interpreter state (sys.argv, sys.modules) that the command could trip on
    return subprocess.call([sys.executable, "-m", COMMANDS[argv[0]][0], *argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
