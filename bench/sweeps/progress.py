"""A sweep's plan file and its runs' progress, read from the records themselves (whatever the launcher).

Imports nothing heavy: multirun.sh counts progress every few seconds while a sweep runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench import records
from bench.fingerprint import run_fingerprint
from bench.sweeps.tuning import read_trials


@dataclass(frozen=True)
class PlannedRun:
    run_dir: Path
    config_hash: str
    sweep: int  # 1-based index of the sweep that plans it


@dataclass(frozen=True)
class PlannedStudy:
    """An Optuna study (`hydra/sweeper=optuna`): its trials' runs are known only as it goes (bench.sweeps.tuning)."""
    db: Path          # its SQLite file, <sweep folder>/studies/<name>.db
    name: str
    n_trials: int     # completed trials it runs to
    sweep: int


@dataclass
class Plan:
    sweep_dir: Path
    runs: list[PlannedRun]  # one per job; a run planned by two sweeps of a suite appears twice
    studies: list[PlannedStudy] = field(default_factory=list)

    def distinct(self) -> dict[Path, str]:
        """run dir -> config hash, each run once."""
        return {run.run_dir: run.config_hash for run in self.runs}

    def write(self, path: Path) -> None:
        """The sweep folder on the first line, then "<run dir>\\t<config hash>\\t<sweep>" per job and
        "study\\t<SQLite file>\\t<study name>\\t<n_trials>\\t<sweep>" per study."""
        lines = [str(self.sweep_dir)] + [f"{r.run_dir}\t{r.config_hash}\t{r.sweep}" for r in self.runs]
        lines += [f"study\t{s.db}\t{s.name}\t{s.n_trials}\t{s.sweep}" for s in self.studies]
        Path(path).write_text("".join(line + "\n" for line in lines))

    @classmethod
    def read(cls, path: Path) -> "Plan":
        first, *rest = Path(path).read_text().splitlines()
        fields = [line.split("\t") for line in rest]
        runs = [PlannedRun(Path(d), h, int(s)) for d, h, s in (f for f in fields if f[0] != "study")]
        studies = [PlannedStudy(Path(db), name, int(n), int(s)) for _, db, name, n, s in (f for f in fields if f[0] == "study")]
        return cls(Path(first), runs, studies)

    def n_sweeps(self) -> int:
        return len({r.sweep for r in self.runs} | {s.sweep for s in self.studies})

    def size(self) -> int:
        """How many runs the plan ends with: its distinct runs and every study's trials."""
        return len(self.distinct()) + sum(s.n_trials for s in self.studies)

    def describe(self) -> str:
        """What multirun.sh says it will run, e.g. "10 jobs in 2 sweep(s), 10 distinct runs"."""
        parts = []
        if self.runs:
            parts.append(f"{len(self.runs)} jobs in {len({r.sweep for r in self.runs})} sweep(s), "
                         f"{len(self.distinct())} distinct runs")
        if self.studies:
            trials = sum(s.n_trials for s in self.studies)
            parts.append(f"{len(self.studies)} Optuna studies of {trials} trials in "
                         f"{len({s.sweep for s in self.studies})} sweep(s), each trial's values chosen as its study goes")
        return "; ".join(parts)

    def listing(self) -> list[str]:
        """One line per job and per study (--dry-run): "<run dir>\\t<sweep>", "study <file> (<n> trials)\\t<sweep>"."""
        return ([f"{r.run_dir}\t{r.sweep}" for r in self.runs]
                + [f"study {s.db} ({s.n_trials} trials)\t{s.sweep}" for s in self.studies])


@dataclass(frozen=True)
class Trial:
    """A planned study's trial, as the progress counts see it: its run folder once the study asked it (None
    for a trial not asked yet)."""
    study: str
    number: int | None         # None: not asked yet
    run_dir: Path | None = None
    slot: int = 0              # tells apart the trials not asked yet

    @property
    def name(self) -> str:
        return f"{self.study} trial {self.number}" if self.number is not None else f"{self.study} trial not asked yet"


def run_status(plan: Plan, since: float) -> tuple[dict, dict]:
    """({run dir or Trial: "completed" | "failed" | "pending"}, {the same: its record}) of the planned runs
    and the planned studies' trials.

    A run is completed when its record is completed with the planned config hash by this code (also from an
    earlier launch: that launch skipped it), failed when its record is failed and was written after `since`
    (epoch seconds, this launch's start); anything else is pending: not written yet (records are
    written atomically, never torn), or an earlier launch's outcome that this launch redoes.
    A study's trials are what its SQLite file says (the sweeper tells it each trial's outcome from the trial's
    record): completed, failed in this launch, or pending (running, or not asked yet, up to n_trials
    completed). A trial that failed in an earlier launch is left out: the study asked another in its place.
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
    for study in plan.studies:
        rows = read_trials(study.db, study.name)
        completed = sum(row.state == "COMPLETE" for row in rows)
        running = sum(row.state in ("RUNNING", "WAITING") for row in rows)
        for row in rows:
            trial = Trial(study.name, row.number, study.db.parent.parent / row.run_id if row.run_id else None)
            if row.state == "COMPLETE":
                status[trial] = "completed"
            elif row.state in ("RUNNING", "WAITING"):
                status[trial] = "pending"
            elif row.finished_at is not None and row.finished_at >= since:
                status[trial] = "failed"
            else:
                continue
            if trial.run_dir is not None and status[trial] != "pending":
                record = records.read_record(trial.run_dir)
                if record is not None:
                    found[trial] = record
        for index in range(max(0, study.n_trials - completed - running)):
            status[Trial(study.name, None, slot=index)] = "pending"
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
    for key, kind in status.items():
        record = found.get(key, {})
        objective = record.get("config", {}).get("objective", "gold_reward")
        value = record.get("metrics", {}).get(objective)
        shown = f"{objective}={value:.4g}" if isinstance(value, (int, float)) else ""
        lines.append(f"  {_name(key):<44} {kind:<10} {shown}")
    return lines


def _name(key) -> str:
    """A run's folder name; a trial's run folder name, or its study and number before it has one."""
    if isinstance(key, Trial):
        return key.run_dir.name if key.run_dir is not None else key.name
    return key.name


def final_lines(status: dict, found: dict) -> list[str]:
    """The counts, then every run without a completed record and why."""
    lines = [progress_line(status)]
    for key, kind in status.items():
        trial = isinstance(key, Trial)
        if kind == "failed":
            error = (found.get(key, {}).get("error") or "no error message").splitlines()[0]
            where = key.run_dir if trial and key.run_dir is not None else key
            told = f" ({key.name}, told to Optuna as failed)" if trial else ""
            lines.append(f"[multirun]   failed: {where}{told}\n[multirun]     {error}")
        elif kind == "pending" and trial:
            lines.append(f"[multirun]   not completed: {key.name} (the study stopped before it: see the Hydra log)")
        elif kind == "pending":
            lines.append(f"[multirun]   no record: {key} (the job died before writing one: see the Hydra log)")
    return lines
