"""Secrets never reach a file (docs/design.md §10): everything a run or a sweep writes is scanned byte for byte.

With WANDB_API_KEY and HF_TOKEN set in the environment, a run (here, with W&B offline and a cache of its
own), a multirun.sh sweep (joblib: the quick suite, scanned by the end-to-end test in tests/test_sweeps.py
that runs it) and a SLURM sweep (submitit: the cancelled and re-launched sweep of
tests/test_slurm_faults.py) write their records, histories, Hydra's .hydra/ dumps and logs, offline W&B
runs, a cache, multirun.sh's logs, checkpoints, and submitit's logs and job pickles; not one of those
files, nor what the processes print, holds either value. (W&B writes the same files under every launcher,
so its offline runs are scanned here only.) A secret on the command line (a secret-looking key, or a key holding
a secret's value) is refused before anything is written, so the same scan finds nothing either.
The scanner itself is checked on a planted file, so an empty result means "scanned and clean".
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import MULTIRUN, SECRETS, TOKEN, assert_no_secret, scan

FAST = ["budget=fast", "progress=false", "eval.lm_eval.n_items=4", "logger=wandb"]
OVERRIDE_SECRET = f"imibench-override-{TOKEN}"


def test_the_scanner_finds_a_planted_secret(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "blob.bin").write_bytes(b"\x00\xff" + SECRETS["HF_TOKEN"].encode() + b"\x00")
    (tmp_path / "clean.txt").write_text("nothing here")
    assert scan([tmp_path], list(SECRETS.values())) == (2, {str(tmp_path / "a" / "b" / "blob.bin"): [SECRETS["HF_TOKEN"]]})


def _env(tmp_path: Path) -> dict:
    return {**os.environ, **SECRETS, "IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(tmp_path / "cache"),
            "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHON": sys.executable,
            "IMI_BENCH_DEBUG": "", "HYDRA_FULL_ERROR": ""}


def _run(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.ci
def test_a_run_writes_no_secret_and_a_secret_on_the_command_line_is_refused(tmp_path, capsys):
    needles = [*SECRETS.values(), OVERRIDE_SECRET]
    single = _run([sys.executable, "-m", "bench.train", *FAST], tmp_path)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    n_files = assert_no_secret(tmp_path, [single], needles, ["record.json", "history.jsonl", ".hydra/config.yaml",
                                                              ".hydra/overrides.yaml", "train.log", ".wandb",
                                                              "logs/debug.log", "cache/sft", "cache/dataset"])
    assert n_files > 20

    # A secret on the command line: refused, and the refusal itself writes nothing.
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    refused = [
        _run([sys.executable, "-m", "bench.train", *FAST, f"+logger.api_key={OVERRIDE_SECRET}"], tmp_path),
        _run([sys.executable, "-m", "bench.train", *FAST, f"+model.note={SECRETS['HF_TOKEN']}"], tmp_path),
        _run([sys.executable, "-m", "bench.train", "-m", *FAST, f"+logger.api_key={OVERRIDE_SECRET}", "seed=0,1"], tmp_path),
        _run([str(MULTIRUN), "quick_dpo", *FAST, f"++wandb_api_key={OVERRIDE_SECRET}"], tmp_path),
    ]
    for proc in refused:
        assert proc.returncode == 2 and "secret" in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before, "a refused command wrote something"
    assert_no_secret(tmp_path, refused, needles, [])
    with capsys.disabled():
        print(f"\n[secrets] {n_files} files of a run scanned: clean; {len(refused)} commands with a secret "
              "refused with status 2, nothing written")
