"""The commands a user types, run as the user runs them: in a subprocess, from outside the checkout.

- the entry point as a script (`python bench/train.py`, the form records once stored as their command):
  bench/ then comes first on sys.path, where a module named like a standard-library one would hide it;
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

FAST = ["budget=fast", "progress=false", "eval.lm_eval.enabled=false", "method=dpo", "seed=3"]


@pytest.mark.slow
@pytest.mark.ci
def test_script_form_and_the_recorded_command_run_from_another_directory(tmp_path, shared_cache):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(shared_cache),
           "IMI_BENCH_SWEEP_ID": "entry"}
    script = run_command([sys.executable, ROOT / "bench" / "train.py", "--help"], cwd=elsewhere, env=env, timeout=300)
    assert script.returncode == 0 and "method: " in script.stdout, script.stdout[-3000:]

    first = run_command([sys.executable, "-m", "bench.train", *FAST], cwd=tmp_path, env=env, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:]
    (record_path,) = (tmp_path / "runs").glob(f"entry-fast/*/{records.RECORD_FILE}")
    record = json.loads(record_path.read_text())
    command = shlex.split(record["provenance"]["command"])
    assert command[:3] == [sys.executable, "-m", "bench.train"] and command[3:] == FAST
    again = run_command(command, cwd=elsewhere, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"[imi-bench] skipped {record['run_id']}" in again.stdout, again.stdout[-3000:]
    assert list(elsewhere.iterdir()) == [], "the entry point wrote into the working directory"
