"""Secrets never reach a file (DESIGN §10): everything a run or a sweep writes is scanned byte for byte.

With WANDB_API_KEY and HF_TOKEN set in the environment, a run, a multirun.sh sweep (joblib) and a SLURM
sweep (submitit) write their records, histories, Hydra's .hydra/ dumps and logs, offline W&B runs, the
shared cache, multirun.sh's logs and submitit's logs and job pickles; not one of those files, nor what the
processes print, holds either value. A secret on the command line (a secret-looking key, or a key holding
a secret's value) is refused before anything is written, so the same scan finds nothing either.
The scanner itself is checked on a planted file, so an empty result means "scanned and clean".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MULTIRUN = ROOT / "multirun.sh"
FAST = ["budget=fast", "progress=false", "eval.lm_eval.n_items=4", "logger=wandb"]
TOKEN = uuid.uuid4().hex  # per session: a value no file could hold by chance
SECRETS = {"WANDB_API_KEY": f"imibench-wandb-{TOKEN}", "HF_TOKEN": f"hf_imibench{TOKEN}"}
OVERRIDE_SECRET = f"imibench-override-{TOKEN}"


def scan(roots: list[Path], needles: list[str]) -> tuple[int, dict[str, list[str]]]:
    """(files scanned, {file: the needles found in its bytes}) over every file under `roots`."""
    encoded = [(n, n.encode()) for n in needles]
    n_files, hits = 0, {}
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            n_files += 1
            data = path.read_bytes()
            found = [n for n, raw in encoded if raw in data]
            if found:
                hits[str(path)] = found
    return n_files, hits


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


def _assert_clean(tmp_path: Path, outputs: list[subprocess.CompletedProcess], needles: list[str], kinds: list[str]):
    n_files, hits = scan([tmp_path], needles)
    assert hits == {}, f"secrets found in {sorted(hits)}"
    for proc in outputs:
        assert not any(n in proc.stdout + proc.stderr for n in needles), "a secret was printed"
    written = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()]
    for kind in kinds:  # the scan covered what the issue names, not an empty folder
        assert any(kind in path for path in written), f"no {kind} among the {n_files} files scanned"
    return n_files


@pytest.mark.slow
@pytest.mark.ci
def test_a_run_and_a_sweep_write_no_secret(tmp_path, capsys):
    needles = [*SECRETS.values(), OVERRIDE_SECRET]
    single = _run([sys.executable, "-m", "bench.train", *FAST], tmp_path)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    sweep = _run([str(MULTIRUN), "quick_dpo", *FAST, "method.beta=0.1,1.0", "seed=0"], tmp_path, timeout=900)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    n_files = _assert_clean(tmp_path, [single, sweep], needles,
                            ["record.json", "history.jsonl", ".hydra/config.yaml", ".hydra/overrides.yaml",
                             "train.log", ".wandb", "logs/debug.log", "multirun/quick_dpo", "cache/sft"])
    assert n_files > 50

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
    _assert_clean(tmp_path, refused, needles, [])
    with capsys.disabled():
        print(f"\n[secrets] {n_files} files of a run and a 2-run sweep scanned: clean; {len(refused)} commands "
              "with a secret refused with status 2, nothing written")


@pytest.mark.slurm
def test_a_slurm_sweep_writes_no_secret(cluster_env, tmp_path, capsys):
    env = cluster_env
    job_name = f"imi-secrets-{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "bench.train", "-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=5",
            f"hydra.launcher.name={job_name}", *FAST, "method.beta=0.1,1.0"]
    try:
        proc = subprocess.run(args, cwd=tmp_path, env={**_env(tmp_path), "SLURM_CONF": env.get("SLURM_CONF", "")},
                              capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(["scancel", f"--name={job_name}"], env=env, timeout=30)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").rglob("record.json"))]
    assert sorted(r["config"]["method"]["beta"] for r in found) == [0.1, 1.0]
    assert all(r["status"] == "completed" and "slurm_job_id" in r["provenance"]["hardware"] for r in found)
    n_files = _assert_clean(tmp_path, [proc], list(SECRETS.values()),
                            ["record.json", ".submitit", "_log.out", "_log.err", "_submitted.pkl", "_result.pkl", ".wandb"])
    with capsys.disabled():
        print(f"\n[secrets] {n_files} files of a 2-job SLURM sweep scanned: clean")
