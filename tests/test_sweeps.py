"""Sweeps for real (docs/design.md §10, §12): presets run in fast mode, Hydra multiruns in subprocesses.

- the first and last job of a representative few presets run in-process (budget=fast); every job of every
  preset under `slow`. Every job of every preset is composed and validated in tests/test_presets.py: the
  presets differ in swept values, not in code paths, beyond the few run here;
- `./multirun.sh quick` end to end in fast mode (slow, and run by CI): 10 jobs in 2 sweeps through the
  joblib launcher, lm-eval inside the workers, the report at the end; with secrets in the environment,
  not one of the files it writes holds them;
- a 4-job `python -m bench.train -m hydra/launcher=joblib` sweep brings back 4 completed records (slow:
  the quick suite takes the same launcher path in CI);
- a multirun.sh sweep with one failing job keeps the others' completed records, writes a failed record
  and exits non-zero saying how many failed; re-running it skips the completed runs (their records
  untouched) and redoes the failed one (slow: two sweeps; run by CI).
Every subprocess has a timeout and runs in its own process group, killed whole on expiry, so a hung
sweep fails the test instead of hanging it.
"""
from __future__ import annotations

import itertools
import re
import sys

import pytest

from bench import records
from bench.pipeline import run
from helpers import MULTIRUN, PRESETS, REAL_MODEL, SECRETS, assert_no_secret, preset_jobs, run_command, sweep_records

# Fast mode for every test here. sft.steps is repeated because conf/config.yaml composes an experiment
# preset after the budget group, so quick_budget's own SFT length would beat budget=fast's.
FAST = ("budget=fast", "sft.steps=40", "progress=false")


@pytest.fixture
def sweep_env(tmp_path, shared_cache) -> dict:
    """Environment of a subprocess sweep: runs under tmp_path, the session's cache, nothing online."""
    return {"IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(shared_cache),
            "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _run_jobs_in_process(make_config, jobs: list[list[str]]) -> None:
    for job in jobs:
        result = run(make_config(*FAST, *job))
        record = records.read_record(result.directory)
        assert record is not None and record["status"] == "completed", f"{job}: {record and record['error']}"
        for override in job:  # the swept value reached the run's config
            key, value = override.split("=", 1)
            if key in ("method", "dataset"):
                assert record["config"][key]["name"] == value
            elif key != "experiment":
                node = record["config"]
                for part in key.split("."):
                    node = node[part]
                assert str(node) == value or float(node) == float(value), override


# Run in CI, first and last job: compare (every method and task: its first and last jobs differ in both), the
# two ablations whose jobs take pipeline paths of their own (the authors' marginal context; an IMI method
# scoring its marginal with the policy while it also needs the reference). Every other preset sweeps values
# of a method's or a budget's keys, checked on the composed config by tests/test_presets.py, and runs
# whole under `slow` (test_every_job_of_every_preset_runs_in_fast_mode); quick_* run in the quick suite below.
RUN_IN_CI = ("ablation_marginal_context", "ablation_pmi_source", "compare")


def test_the_presets_run_in_ci_exist():
    assert set(RUN_IN_CI) <= set(PRESETS) - REAL_MODEL


@pytest.mark.parametrize("preset", RUN_IN_CI)
def test_first_and_last_job_of_representative_presets_run_in_fast_mode(make_config, preset):
    jobs = preset_jobs(preset)
    _run_jobs_in_process(make_config, [jobs[0], jobs[-1]] if len(jobs) > 1 else jobs)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_job_of_every_preset_runs_in_fast_mode(make_config, preset):
    _run_jobs_in_process(make_config, preset_jobs(preset))


@pytest.mark.slow
def test_joblib_sweep_of_four_jobs_brings_back_four_completed_records(tmp_path, sweep_env):
    """`python -m bench.train -m hydra/launcher=joblib` by hand. In CI, test_multirun_quick_end_to_end_in_fast_mode
    runs the same command (multirun.sh's default launcher) for 10 jobs and checks the same: two jobs at a
    time, every record completed with its history and its lm-eval metrics, in its sweep's folder."""
    args = [sys.executable, "-m", "bench.train", "-m", "hydra/launcher=joblib", *FAST,
            "method=dpo,rmipo", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'hydra'}"]
    result = run_command(args, cwd=tmp_path, env={**sweep_env, "IMI_BENCH_SWEEP_ID": "joblib4"}, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout, "the joblib launcher ran the jobs, two at a time"
    found = sweep_records(tmp_path / "runs" / "joblib4-fast")  # smoke runs: <sweep id>-fast
    assert len(found) == 4, sorted(found)
    assert all(r["status"] == "completed" for r in found.values()), [r["error"] for r in found.values()]
    combos = sorted((r["config"]["method"]["name"], r["config"]["seed"]) for r in found.values())
    assert combos == sorted(itertools.product(["dpo", "rmipo"], [0, 1]))
    for run_id, record in found.items():
        assert record["sweep_id"] == "joblib4-fast" and record["run_id"] == run_id
        assert records.read_history(tmp_path / "runs" / "joblib4-fast" / run_id), f"{run_id} has no history"
        assert any(k.startswith("lm_eval/") for k in record["metrics"]), "lm-eval ran inside the joblib worker"


@pytest.mark.slow
@pytest.mark.ci
def test_failed_job_keeps_the_others_and_a_rerun_redoes_only_it(tmp_path, sweep_env):
    # One DPO β and seed, three learning rates: 1e12 makes the loss non-finite within 5 steps, so that
    # job writes a failed record (NonFiniteLossError) and returns NaN; the other two complete.
    sweep = ["dpo_beta_grid", "--sweep-id", "failing", *FAST, "eval.lm_eval.enabled=false",
             "method.beta=0.1", "seed=0", "train.max_steps=5", "train.lr=5e-4,1e-3,1e12"]
    # First with the basic launcher (in the driver process, and a launcher override must pass through),
    # then again with multirun.sh's default joblib launcher: the launcher is no part of a run's identity.
    first = run_command([str(MULTIRUN), *sweep, "hydra/launcher=basic"], cwd=tmp_path, env=sweep_env, timeout=400)
    out = first.stdout
    assert first.returncode == 1, out[-4000:]
    assert "3 jobs in 1 sweep(s), 3 distinct runs" in out and "launcher: as overridden" in out
    assert "FAILED: 1 of 3 runs have no completed record" in out
    sweep_dir = tmp_path / "runs" / "failing-fast"
    found = sweep_records(sweep_dir)
    by_lr = {r["config"]["train"]["lr"]: r for r in found.values()}
    assert sorted(by_lr) == [5e-4, 1e-3, 1e12]
    assert by_lr[5e-4]["status"] == by_lr[1e-3]["status"] == "completed"
    failed = by_lr[1e12]
    assert failed["status"] == "failed" and "NonFiniteLossError" in failed["error"]
    assert f"failed: {sweep_dir / failed['run_id']}" in out
    # the report ran (or said why not) before the failure was reported
    assert out.index("python -m analysis report") < out.index("FAILED:") or "runs table instead" in out

    mtimes = {run_id: (sweep_dir / run_id / records.RECORD_FILE).stat().st_mtime_ns for run_id in found}
    again = run_command([str(MULTIRUN), "--no-report", *sweep], cwd=tmp_path, env=sweep_env, timeout=400)
    out = again.stdout
    assert again.returncode == 1, out[-4000:]
    assert "2/3 runs already done: 2 completed, 0 failed" in out and "launcher: hydra/launcher=joblib" in out
    completed_ids = [run_id for run_id, r in found.items() if r["status"] == "completed"]
    for run_id in completed_ids:
        assert f"[imi-bench] skipped {run_id}" in out
        assert (sweep_dir / run_id / records.RECORD_FILE).stat().st_mtime_ns == mtimes[run_id], "record rewritten"
    redone = records.read_record(sweep_dir / failed["run_id"])
    assert (sweep_dir / failed["run_id"] / records.RECORD_FILE).stat().st_mtime_ns > mtimes[failed["run_id"]]
    assert redone["status"] == "failed" and redone["provenance"]["started_at"] > failed["provenance"]["finished_at"]
    assert f"[imi-bench] skipped {failed['run_id']}" not in out
    # --no-report: the runs table instead, one line per planned run with its status
    table = re.findall(r"^  (\S+)\s+(completed|failed|pending)\b", out, re.M)
    assert sorted(table) == sorted((run_id, r["status"]) for run_id, r in found.items())
    assert "FAILED: 1 of 3 runs" in out


@pytest.mark.slow
@pytest.mark.ci
def test_multirun_quick_end_to_end_in_fast_mode(tmp_path, sweep_env):
    """The quick suite with the secrets in the environment: what it produced, and that not one of its files
    (records, histories, .hydra dumps, multirun logs, the report) holds a secret — the joblib sweep case of
    tests/test_secrets_scan.py, whose single run and SLURM sweep scan W&B's offline runs and a cache too
    (W&B is left out here: its offline init costs ~2 s per run, and its code is the same in a joblib job)."""
    # the session's cache (its builds are shared with the other fast tests); the secrets test scans a cache
    env = {**sweep_env, **SECRETS, "MULTIRUN_PROGRESS_EVERY": "5"}
    result = run_command([str(MULTIRUN), *FAST], cwd=tmp_path, env=env, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-6000:]
    sweep_dir = tmp_path / "runs" / "quick-fast"
    found = sweep_records(sweep_dir)
    # the sweeps made exactly the planned runs: the final count is over the plan's run folders (each completed
    # with its planned config hash), and the folder holds no other (the plan itself: test_presets' dry run)
    assert "10 jobs in 2 sweep(s), 10 distinct runs" in out and len(found) == 10
    assert "[multirun] 10/10 runs done: 10 completed, 0 failed" in out
    assert all(r["status"] == "completed" for r in found.values())
    assert {r["config"]["method"]["name"] for r in found.values()} == {"dpo", "rmipo", "imi_dpo"}
    assert re.search(r"^\[multirun\] \d+/10 runs done", out, re.M), "progress lines"
    # the joblib launcher ran the jobs two at a time, and lm-eval ran inside its workers (the full logs)
    logs = sorted((tmp_path / "multirun" / "quick-fast").glob("*/*.log"))
    assert len(logs) == 2 and all("Joblib.Parallel(n_jobs=2" in log.read_text() for log in logs), logs
    for run_id, record in found.items():
        assert record["run_id"] == run_id
        assert records.read_history(sweep_dir / run_id), f"{run_id} has no history"
        assert any(k.startswith("lm_eval/") for k in record["metrics"]), f"{run_id}: no lm-eval in the joblib worker"
    assert (sweep_dir / "report" / "report.md").exists(), out[-3000:]
    assert f"report:  {sweep_dir / 'report' / 'report.md'}" in out
    assert "all 10 runs completed" in out
    # every run of the suite shares one sweep id, so the analysis reads them together
    assert {r["sweep_id"] for r in found.values()} == {"quick-fast"}

    n_files = assert_no_secret(tmp_path, [result], list(SECRETS.values()),
                               [".hydra/config.yaml", ".hydra/overrides.yaml", "multirun/quick-fast",
                                "report/report.md", "history.jsonl", "record.json"])
    assert n_files > 50


@pytest.mark.slow
@pytest.mark.ci
def test_a_trainer_change_retrains_a_completed_sweep_but_reuses_its_sft_model(tmp_path, sweep_env):
    """docs/design.md §6, §9: a copy of the suite runs a two-run sweep, then one line of its trainer changes
    and the same command runs again. The runs train again (their records carry the new code fingerprint),
    while the SFT model, the dataset and the reference log-probs come from the cache: the trainer is in none
    of their builds. A third launch with no change skips both runs."""
    import shutil

    from helpers import ROOT

    suite = tmp_path / "suite"
    for part in ("bench", "conf", "analysis"):
        shutil.copytree(ROOT / part, suite / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(MULTIRUN, suite / "multirun.sh")
    # the copy's packages, not the installed ones; a fresh cache, so the first launch builds everything
    env = {**sweep_env, "PYTHONPATH": str(suite), "IMI_BENCH_CACHE": str(tmp_path / "cache")}
    sweep = [str(suite / "multirun.sh"), "--no-report", "dpo_beta_grid", "--sweep-id", "retrain", *FAST,
             "eval.lm_eval.enabled=false", "method.beta=0.1", "seed=0,1", "train.max_steps=5",
             "hydra/launcher=basic"]
    sweep_dir = tmp_path / "runs" / "retrain-fast"

    first = run_command(sweep, cwd=tmp_path, env=env, timeout=400)
    assert first.returncode == 0, first.stdout[-4000:]
    before = sweep_records(sweep_dir)
    assert len(before) == 2 and all(r["status"] == "completed" for r in before.values())
    assert all(r["provenance"]["code_fingerprint"] is not None for r in before.values())

    trainer = suite / "bench" / "trainer.py"
    trainer.write_text(trainer.read_text() + "\nCHANGED_BY_TEST = True\n")  # one line of code, not a comment
    second = run_command(sweep, cwd=tmp_path, env=env, timeout=400)
    assert second.returncode == 0, second.stdout[-4000:]
    assert "[imi-bench] skipped" not in second.stdout and "0/2 runs already done" in second.stdout
    after = sweep_records(sweep_dir)
    assert sorted(after) == sorted(before)  # the same runs, in the same folders
    for run_id, record in after.items():
        old = before[run_id]
        assert record["provenance"]["code_fingerprint"] != old["provenance"]["code_fingerprint"]
        assert record["provenance"]["started_at"] >= old["provenance"]["finished_at"]  # trained again
        for build in ("sft", "dataset", "reference"):
            shared = record["cost"]["shared"][build]
            assert shared["hit"] and shared["key"] == old["cost"]["shared"][build]["key"], (run_id, build)

    third = run_command(sweep, cwd=tmp_path, env=env, timeout=400)
    assert third.returncode == 0, third.stdout[-4000:]
    assert "2/2 runs already done: 2 completed, 0 failed" in third.stdout
    assert all(f"[imi-bench] skipped {run_id}" in third.stdout for run_id in after)
