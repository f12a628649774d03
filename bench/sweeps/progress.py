"""A sweep's plan file and its runs' progress, read from the records themselves (whatever the launcher).

Imports nothing heavy: multirun.sh counts progress every few seconds while a sweep runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench import records
from bench.fingerprint import run_fingerprint


@dataclass(frozen=True)
class PlannedRun:
    run_dir: Path
    config_hash: str
    sweep: int  # 1-based index of the sweep that plans it


@dataclass
class Plan:
    sweep_dir: Path
    runs: list[PlannedRun]  # one per job; a run planned by two sweeps of a suite appears twice

    def distinct(self) -> dict[Path, str]:
        """run dir -> config hash, each run once."""
        return {run.run_dir: run.config_hash for run in self.runs}

    def write(self, path: Path) -> None:
        """The sweep folder on the first line, then "<run dir>\\t<config hash>\\t<sweep>" per job."""
        lines = [str(self.sweep_dir)] + [f"{r.run_dir}\t{r.config_hash}\t{r.sweep}" for r in self.runs]
        Path(path).write_text("".join(line + "\n" for line in lines))

    @classmethod
    def read(cls, path: Path) -> "Plan":
        first, *rest = Path(path).read_text().splitlines()
        runs = [PlannedRun(Path(d), h, int(s)) for d, h, s in (line.split("\t") for line in rest)]
        return cls(Path(first), runs)


def run_status(plan: Plan, since: float) -> tuple[dict[Path, str], dict[Path, dict]]:
    """({run dir: "completed" | "failed" | "pending"}, {run dir: its record}) of the planned runs.

    A run is completed when its record is completed with the planned config hash by this code (also from an
    earlier launch: that launch skipped it), failed when its record is failed and was written after `since`
    (epoch seconds, this launch's start); anything else is pending: not written yet (records are
    written atomically, never torn), or an earlier launch's outcome that this launch redoes.
    """
    status, found, code = {}, {}, run_fingerprint()
    for run_dir, digest in plan.distinct().items():
        path = run_dir / records.RECORD_FILE
        try:
            record = found[run_dir] = json.loads(path.read_text())
        except (OSError, ValueError):
            status[run_dir] = "pending"
            continue
        if records.is_completed(record, digest, code):  # a record made by other code is redone: pending
            status[run_dir] = "completed"
        elif record.get("status") == "failed" and path.stat().st_mtime >= since:
            status[run_dir] = "failed"
        else:
            status[run_dir] = "pending"
    return status, found


def _counts(status: dict) -> dict[str, int]:
    return {kind: sum(1 for s in status.values() if s == kind) for kind in ("completed", "failed", "pending")}


def progress_line(status: dict) -> str:
    counts = _counts(status)
    done = counts["completed"] + counts["failed"]
    return f"[multirun] {done}/{len(status)} runs done: {counts['completed']} completed, {counts['failed']} failed"


def runs_table(status: dict, found: dict) -> list[str]:
    """One line per planned run: its name, status and objective metric (when there is no report)."""
    lines = []
    for run_dir, kind in status.items():
        record = found.get(run_dir, {})
        objective = record.get("config", {}).get("objective", "gold_reward")
        value = record.get("metrics", {}).get(objective)
        shown = f"{objective}={value:.4g}" if isinstance(value, (int, float)) else ""
        lines.append(f"  {run_dir.name:<44} {kind:<10} {shown}")
    return lines


def final_lines(status: dict, found: dict) -> list[str]:
    """The counts, then every run without a completed record and why."""
    lines = [progress_line(status)]
    for run_dir, kind in status.items():
        if kind == "failed":
            error = (found[run_dir].get("error") or "no error message").splitlines()[0]
            lines.append(f"[multirun]   failed: {run_dir}\n[multirun]     {error}")
        elif kind == "pending":
            lines.append(f"[multirun]   no record: {run_dir} (the job died before writing one: see the Hydra log)")
    return lines
