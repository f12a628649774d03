"""kill -9 of a real training process (docs/design.md §9, §12), and the re-launch of its sweep.

The process is the real entry point running a 2-run sweep in one process (`-m hydra/launcher=basic`),
started through tests/fault_harness.py, which announces each phase so a test knows where a kill landed.
After every kill:
- no record looks complete unless it is: every record.json parses, and a completed one holds exactly
  the metrics and history of the uninterrupted reference sweep (bit for bit, CPU);
- the caches are intact: every published entry has its meta.json and loads; a killed build leaves only
  its hidden temp folder, which readers ignore;
and the next launch of the same command redoes exactly the killed runs: it skips every run that has a
completed record (that record untouched) and no other, resumes from checkpoints, and the last launch
completes every run with the reference's numbers.

- `test_targeted_kills` (slow, ci): one kill at each of the worst moments — a cache entry built but not
  renamed, mid-step, entering evaluation, a record and a checkpoint half-written;
- `test_random_kills` (slow): N_RANDOM_KILLS kills at random times (seeded), drawn over the time an
  uninterrupted launch takes on this machine (measured); the first round starts from a cold cache, later
  ones from a warm one, so kills land in setup and cache builds as well as in training, evaluation and
  record writes; it counts where the kills landed and what they left.
"""
from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import records

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "fault_harness.py"
# budget=fast with smaller prompt sets: every phase a kill targets (cache builds, steps, checkpoints,
# evaluation, record writes) happens, on less data; the sweep is launched up to seven times per test.
SWEEP = ["-m", "hydra/launcher=basic", "seed=0,1", "budget=fast", "progress=false", "eval.lm_eval.enabled=false",
         "train.max_steps=12", "checkpoint.every_steps=1", "dataset.n_train_prompts=48", "dataset.n_eval_pair_prompts=8",
         "dataset.n_val_prompts=8", "dataset.n_test_prompts=8", "eval.curve.n_prompts=4"]
N_RANDOM_KILLS = 20
RANDOM_SEED = int(os.environ.get("IMI_BENCH_KILL_SEED", "20261130"))
TIMING_KEYS = {"train_tokens_per_s"}


def _env(tmp_path: Path, sweep_id: str, cache: str | Path, kill_at: str = "") -> dict:
    return {**os.environ, "IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(tmp_path / cache),
            "IMI_BENCH_SWEEP_ID": sweep_id, "IMI_BENCH_KILL_AT": kill_at, "WANDB_MODE": "disabled",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _launch(tmp_path: Path, sweep_id: str, cache: str | Path, *, kill_after: float | None = None, kill_at: str = ""):
    """(output, killed?) of one launch of the sweep, SIGKILLed after `kill_after` s if still running."""
    proc = subprocess.Popen([sys.executable, str(HARNESS), *SWEEP], cwd=tmp_path, env=_env(tmp_path, sweep_id, cache, kill_at),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=kill_after if kill_after is not None else 600)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the training process itself
        out, _ = proc.communicate()
    killed = proc.returncode == -signal.SIGKILL
    assert killed or proc.returncode == 0, out[-4000:]
    return out, killed


def _sweep_dir(tmp_path: Path, sweep_id: str) -> Path:
    return tmp_path / "runs" / f"{sweep_id}-fast"  # budget=fast runs land apart from real ones


def _completed(sweep_dir: Path) -> dict[str, int]:
    """{run id: record mtime} of the completed records."""
    found = {}
    for path in sweep_dir.glob(f"*/{records.RECORD_FILE}"):
        record = json.loads(path.read_text())  # never torn: written whole or not at all
        assert record["status"] == "completed", f"{path}: {record['status']}: {record.get('error')}"
        found[path.parent.name] = path.stat().st_mtime_ns
    return found


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _assert_records_match(sweep_dir: Path, reference: dict) -> None:
    for run_id in _completed(sweep_dir):
        record = records.read_record(sweep_dir / run_id)
        assert record["metrics"] == reference["runs"][run_id]["metrics"], f"{run_id}: a completed record differs"
        assert _without_timing(records.read_history(sweep_dir / run_id)) == reference["runs"][run_id]["history"]
        for key in ("config", "cost", "provenance", "val_curve", "data"):
            assert record[key], f"{run_id}: {key} is empty"


def _assert_caches_intact(cache: Path) -> int:
    """Every published cache entry is whole and loads; returns how many were checked."""
    from safetensors.torch import load_file

    checked = 0
    if not cache.exists():
        return 0
    for kind in sorted(p for p in cache.iterdir() if p.is_dir()):
        for entry in sorted(kind.iterdir()):
            if entry.name.startswith(".") or entry.suffix == ".lock":
                continue  # a killed build's temp folder (ignored and rebuilt), or a lock file
            assert (entry / "meta.json").exists(), f"{entry}: a published entry without meta.json"
            json.loads((entry / "meta.json").read_text())
            for path in entry.rglob("*"):
                if path.suffix == ".pt":
                    torch.load(path, weights_only=False)
                elif path.suffix == ".safetensors":
                    load_file(path)
                elif path.suffix == ".json":
                    json.loads(path.read_text())
            checked += 1
    return checked


def _assert_relaunch_redid_exactly_the_killed(out: str, before: dict[str, int], sweep_dir: Path) -> None:
    skipped = {line.split()[2].rstrip(":") for line in out.splitlines() if line.startswith("[imi-bench] skipped ")}
    ran = {line.split()[2] for line in out.splitlines() if line.startswith("[imi-bench] completed: ")}
    assert skipped <= set(before), f"skipped runs without a completed record: {skipped - set(before)}"
    assert not ran & set(before), f"re-ran completed runs: {ran & set(before)}"
    after = _completed(sweep_dir)
    for run_id, mtime in before.items():
        assert after[run_id] == mtime, f"{run_id}: its completed record was rewritten"


def _phase_of(out: str) -> str:
    """Where a kill landed: the last phase announced, or between two runs."""
    last = "startup"
    for line in out.splitlines():
        if line.startswith("[phase] ") and not line.startswith("[phase] killing"):
            last = line.split()[1]
        elif line.startswith(("[imi-bench] completed", "[imi-bench] skipped")):
            last = "between runs"
    return last


def _uninterrupted(tmp_path: Path, sweep_id: str) -> tuple[dict, float]:
    """({run id: {metrics, history}}, seconds) of one launch of the sweep, never interrupted."""
    started = time.monotonic()
    out, killed = _launch(tmp_path, sweep_id, "cache")
    took = time.monotonic() - started
    assert not killed
    sweep_dir = _sweep_dir(tmp_path, sweep_id)
    runs = {run_id: {"metrics": records.read_record(sweep_dir / run_id)["metrics"],
                     "history": _without_timing(records.read_history(sweep_dir / run_id))}
            for run_id in _completed(sweep_dir)}
    assert len(runs) == 2, out[-3000:]
    return runs, took


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The sweep, never interrupted, from a cold cache: {"runs": {run id: {metrics, history}}, "cache": its
    cache, "reference_s": how long the launch took here}."""
    tmp_path = tmp_path_factory.mktemp("kill-reference")
    runs, took = _uninterrupted(tmp_path, "reference")
    return {"runs": runs, "reference_s": took, "cache": tmp_path / "cache", "tmp_path": tmp_path}


def _after_kill(tmp_path, sweep_id, cache, out, before, reference) -> str:
    sweep_dir = _sweep_dir(tmp_path, sweep_id)
    _assert_relaunch_redid_exactly_the_killed(out, before, sweep_dir)
    _assert_records_match(sweep_dir, reference)
    _assert_caches_intact(tmp_path / cache)
    left = []
    if set(_completed(sweep_dir)) - set(before):
        left.append("a completed record")
    checkpoints = sorted(sweep_dir.glob("*/checkpoint/state.pt"))
    if checkpoints:
        steps = [torch.load(c, weights_only=False)["step"] for c in checkpoints]
        left.append(f"checkpoint(s) at step {steps}")
    if any(p.name.startswith(".") and "tmp" in p.name for p in (tmp_path / cache).glob("*/*")):
        left.append("a cache build's temp folder")
    return ", ".join(left) or "nothing new"


def _finish(tmp_path, sweep_id, cache, reference) -> None:
    sweep_dir = _sweep_dir(tmp_path, sweep_id)
    before = _completed(sweep_dir) if sweep_dir.exists() else {}
    out, killed = _launch(tmp_path, sweep_id, cache)
    assert not killed
    _assert_relaunch_redid_exactly_the_killed(out, before, sweep_dir)
    assert sorted(_completed(sweep_dir)) == sorted(reference["runs"]), out[-3000:]
    _assert_records_match(sweep_dir, reference)
    assert _assert_caches_intact(tmp_path / cache) >= 3  # sft, dataset, reference terms
    assert not list(sweep_dir.glob("*/checkpoint")), "checkpoints outlived their records"
    assert not list((tmp_path / cache).glob("*/.*.tmp-*")), "a killed build's temp folder outlived the rebuild"


@pytest.mark.slow
@pytest.mark.ci
def test_targeted_kills(tmp_path, reference, capsys):
    """One launch killed at each worst moment in turn, each the re-launch of the one before."""
    outcomes = []
    for kill_at in ("cache-build:1", "step:5", "eval:1", "record-write:1", "checkpoint-write:3"):
        sweep_dir = _sweep_dir(tmp_path, "targeted")
        before = _completed(sweep_dir) if sweep_dir.exists() else {}
        out, killed = _launch(tmp_path, "targeted", "cache", kill_at=kill_at)
        assert killed and f"killing myself at {kill_at.replace(':', ' #')}" in out, out[-3000:]
        outcomes.append((kill_at, _after_kill(tmp_path, "targeted", "cache", out, before, reference)))
    _finish(tmp_path, "targeted", "cache", reference)
    resumes = [records.read_record(d)["provenance"]["resumes"] for d in sorted(_sweep_dir(tmp_path, "targeted").glob("*-s*"))]
    # the first run went on from a checkpoint three times (after the kills mid-step, in evaluation and in
    # the record write), the second once (after the kill in its checkpoint write)
    assert resumes == [3, 1]
    with capsys.disabled():
        print("\n[kill] targeted: " + "; ".join(f"{k} -> {v}" for k, v in outcomes) + f"; resumes per run {resumes}")


@pytest.mark.slow
def test_random_kills(tmp_path, reference, capsys):
    """N_RANDOM_KILLS kills at random times; each round a fresh sweep and cache, relaunched until done."""
    # the same sweep again from the reference's warm cache: the same numbers (a cache hit changes nothing),
    # and how long a warm launch takes here, the span of the later rounds' kill times
    warm, reference["warm_s"] = _uninterrupted(reference["tmp_path"], "warm")
    assert warm == reference["runs"]
    rng = random.Random(RANDOM_SEED)
    landed, left = collections.Counter(), collections.Counter()
    kills, rounds = 0, 0
    while kills < N_RANDOM_KILLS:
        rounds += 1
        # round 1 builds its own cache (kills in cache builds); later rounds read the reference's warm one
        sweep_id, cache = f"round{rounds}", ("cache1" if rounds == 1 else reference["cache"])
        longest = 1.1 * reference["reference_s" if rounds == 1 else "warm_s"]
        while kills < N_RANDOM_KILLS:
            sweep_dir = _sweep_dir(tmp_path, sweep_id)
            before = _completed(sweep_dir) if sweep_dir.exists() else {}
            after_s = rng.uniform(0.5, longest)
            out, killed = _launch(tmp_path, sweep_id, cache, kill_after=after_s)
            if not killed:  # the launch finished first: this round is done
                _assert_relaunch_redid_exactly_the_killed(out, before, sweep_dir)
                assert sorted(_completed(sweep_dir)) == sorted(reference["runs"])
                _assert_records_match(sweep_dir, reference)
                break
            kills += 1
            landed[_phase_of(out)] += 1
            left[_after_kill(tmp_path, sweep_id, cache, out, before, reference)] += 1
        else:
            _finish(tmp_path, sweep_id, cache, reference)
    assert kills == N_RANDOM_KILLS and sum(landed.values()) == kills
    with capsys.disabled():
        print(f"\n[kill] {kills} random kills (seed {RANDOM_SEED}; a launch takes {reference['reference_s']:.0f} s cold, "
              f"{reference['warm_s']:.0f} s warm) over {rounds} rounds; landed in: {dict(landed)}; "
              f"left: {dict(left)}; every round finished with the reference's numbers")
