"""Reading an offline W&B run back for the tests, with W&B's own reader: `wandb leet inspect` (local, no key,
no network). The suite itself never reads W&B's files; its run records are the source of truth.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _inspect(path: Path, *options: str) -> str:
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", *options, str(path)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise FileNotFoundError(f"wandb leet inspect {' '.join(options)} {path}: {done.stderr.strip()}")
    return done.stdout


def _public(values: dict) -> dict:
    """W&B's own keys (_step, _runtime, _timestamp, _wandb) left out: the shape of the run record's."""
    return {key: value for key, value in values.items() if not key.startswith("_")}


def read_offline_run(run_dir: Path) -> dict:
    """The newest offline W&B run of a run directory (`<run_dir>/wandb/latest-run`):
    {"config", "summary", "history": [{"step": int, <metric>: value, ...}],
     "run": {"id", "name", "project", "entity", "group", "job_type", "tags", "exit_code"}, "file"}.
    exit_code is None for a run that never finished."""
    path = Path(run_dir) / "wandb"
    summary = json.loads(_inspect(path, "--summary", "--json"))
    records = [json.loads(line) for line in _inspect(path, "--json").splitlines() if line.strip()]
    (run_record,) = [r["run"] for r in records if r["type"] == "run"]
    # the config as logged, from the records: the summary view leaves empty dicts out
    config = dict(run_record.get("config", {}).get("update", {}))
    for record in (r["config"] for r in records if r["type"] == "config"):
        config.update(record.get("update", {}))
    history = [{"step": r["history"].get("step", {}).get("num", 0), **_public(r["history"]["item"])}
               for r in records if r["type"] == "history"]
    run = {"id": run_record["run_id"], "name": run_record.get("display_name", ""),
           "project": run_record.get("project", ""), "entity": run_record.get("entity", ""),
           "group": run_record.get("run_group", ""), "job_type": run_record.get("job_type", ""),
           "tags": run_record.get("tags", []), "exit_code": summary.get("exit_code")}
    return {"config": _public(config), "summary": _public(summary["summary"]), "history": history,
            "run": run, "file": Path(summary["file"])}
