"""The commands a user types, run as the user runs them: in a subprocess, from outside the checkout.

- the entry point as a module (`python -m bench.train`) and as a script (`python bench/train.py`, the form
  records once stored as their command): bench/ then comes first on sys.path, where a module named like a
  standard-library one would hide it. The second process finds every shared cache the first built (their
  keys are stable across processes);
- the command a record stores in `provenance.command` runs that very job again (it is skipped: its
  completed record has the same config hash).
"""
from __future__ import annotations

import json
import shlex
import sys

import pytest

from bench import records
from helpers import ROOT, run_command

FAST = ["budget=fast", "progress=false", "eval.lm_eval.enabled=false", "method=dpo"]


def _record(runs, seed: int) -> dict:
    (path,) = runs.glob(f"entry-fast/*-s{seed}-*/{records.RECORD_FILE}")  # budget=fast: <sweep id>-fast
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.ci
def test_module_and_script_forms_share_the_caches_and_the_recorded_command_reruns(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a cache of its own: the first process builds every entry, the second must find them all
    env = {"IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(tmp_path / "cache"),
           "IMI_BENCH_SWEEP_ID": "entry"}
    first = run_command([sys.executable, "-m", "bench.train", *FAST, "seed=0"], cwd=tmp_path, env=env, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "[imi-bench] completed:" in first.stdout and "record.json" in first.stdout
    record = _record(tmp_path / "runs", 0)
    command = shlex.split(record["provenance"]["command"])
    assert command[:3] == [sys.executable, "-m", "bench.train"] and command[3:] == [*FAST, "seed=0"]

    script = run_command([sys.executable, ROOT / "bench" / "train.py", *FAST, "seed=1"], cwd=elsewhere, env=env,
                         timeout=900)
    assert script.returncode == 0, script.stdout[-3000:]
    second = _record(tmp_path / "runs", 1)
    assert second["status"] == "completed", second["error"]
    # the SFT model is shared by every seed; seed 1 draws its own data, so its dataset, reference terms and
    # the reference's evaluation samples are built once for it (docs/design.md §5, §7)
    assert {name: shared["hit"] for name, shared in second["cost"]["shared"].items()} == {
        "sft": True, "dataset": False, "reference": False, "reference_samples": False}

    again = run_command(command, cwd=elsewhere, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"[imi-bench] skipped {record['run_id']}" in again.stdout, again.stdout[-3000:]
    assert list(elsewhere.iterdir()) == [], "the entry point wrote into the working directory"
