"""`python -m bench.sweeps <command>`: what multirun.sh runs (see `main`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.sweeps.presets import experiment_presets, preset_description, suites, sweep_steps
from bench.sweeps.progress import Plan, final_lines, progress_line, run_status, runs_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweeps", description="multirun.sh's planner.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every suite and preset, one line each (multirun.sh --help)")
    steps = commands.add_parser("steps", help="the sweeps of a preset, one line each; exit 2 if unknown")
    steps.add_argument("preset")
    make = commands.add_parser("plan", help="expand and validate every job; write the plan file")
    make.add_argument("plan_file", type=Path)
    make.add_argument("steps", nargs="+", help="one sweep's overrides per argument")
    show = commands.add_parser("show", help="what a plan file holds: describe (one line), size (runs), list (--dry-run)")
    show.add_argument("plan_file", type=Path)
    show.add_argument("what", choices=("describe", "size", "list"))
    count = commands.add_parser("count", help="the planned runs' status from their records")
    count.add_argument("plan_file", type=Path)
    count.add_argument("since", type=float, help="this launch's start (epoch seconds)")
    count.add_argument("mode", choices=("progress", "final", "failed", "table"))
    args = parser.parse_args(argv)

    if args.command == "list":
        print("Suites:")
        for name, suite in suites().items():
            print(f"  {name:<27} {suite.description}")
        print("Experiment presets (conf/experiment/, one Hydra sweep each):")
        for name in experiment_presets():
            print(f"  {name:<27} {preset_description(name)}")
        return 0
    if args.command == "steps":
        try:
            print("\n".join(sweep_steps(args.preset)))
        except KeyError:
            return 2
        return 0
    if args.command == "plan":
        from bench.preflight import redact_text
        from bench.sweeps.planning import PlanError, plan  # Hydra and torch: only when planning

        try:
            plan(args.steps).write(args.plan_file)
        except PlanError as err:  # a user's mistake: the message alone, exit status 2 (as bench.train)
            print(redact_text(str(err)), file=sys.stderr)
            return 2
        return 0
    if args.command == "show":
        planned = Plan.read(args.plan_file)
        shown = {"describe": lambda: planned.describe(), "size": lambda: str(planned.size()),
                 "list": lambda: "\n".join(planned.listing())}
        print(shown[args.what]())
        return 0
    status, found = run_status(Plan.read(args.plan_file), args.since)
    if args.mode == "failed":
        print(sum(1 for kind in status.values() if kind != "completed"))
    elif args.mode == "table":
        print("\n".join(runs_table(status, found)))
    elif args.mode == "progress":
        print(progress_line(status))
    else:
        print("\n".join(final_lines(status, found)))
        return 1 if any(kind != "completed" for kind in status.values()) else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
