"""Bad configurations fail before any compute, naming the key (docs/design.md §12), table-driven.

BAD_CONFIGS holds one row per mistake, across every config group (method, dataset, model, hardware,
logger, budget, experiment, launcher, and the sweep id), each with the text its message must contain
(the key, or the group/option Hydra could not find). Every row is run three ways:
- the real entry point (`python -m bench.train`, run in this process through runpy so the whole table
  takes seconds): exit status 2, the message alone (no traceback), no output folder, no run record,
  and the training side never entered;
- a few rows as real subprocesses (the exit status a shell sees), one per kind of failure;
- `multirun.sh --dry-run`: refused with status 2 before any job starts (every row under `slow`, four
  kinds by default: each costs a Python start with torch).
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import preflight

ROOT = Path(__file__).resolve().parents[1]
MULTIRUN = ROOT / "multirun.sh"
HF_DIR = "HF_DIR"  # replaced by a local model directory (config.json only: pre-flight reads no weights)
SECRET = "0123456789abcdef-not-a-real-key"

# (group, command-line overrides, text the message must contain). "-m" rows are multiruns: the launcher
# config only matters when a launcher launches.
BAD_CONFIGS = [
    ("method", ["method=dpp"], "Could not find 'method/dpp'"),
    ("method", ["method.beta=-1"], "method.beta must be > 0"),
    ("method", ["method.beta=0"], "method.beta must be > 0"),
    ("method", ["method.beta=???"], "missing required config value(s): method.beta"),
    ("method", ["method=cdpo", "method.epsilon=0.7"], "method.epsilon"),
    ("method", ["method=simpo", "method.gamma_beta_ratio=-1"], "method.gamma_beta_ratio"),
    ("method", ["method=rmipo", "method.g_min=2.0", "method.g_max=1.0"], "method.g_min must be <= method.g_max"),
    ("method", ["method=imi_dpo", "method.pmi_source=oracle"], "method.pmi_source"),
    ("method", ["method=beta_dpo", "method.rho=1.5"], "method.rho"),
    ("method", ["method=imi_dpo", "method.signal=random"], "method.signal must be one of"),
    ("method", ["method=kto", "method.desirable_weight=0"], "method.desirable_weight must be > 0"),
    # KTO's imbalance rule at config time: a built-in task keeps 10% of its desirables, λ_D must be 10-13.3
    ("method", ["method=kto", "unpaired.desirable_fraction=0.1"], "set method.desirable_weight in [10, 13.3]"),
    ("method", ["method=kto", "train.batch_size=1"], "train.batch_size must be >= 2 for method.name='kto'"),
    ("method", ["method=dpo", "unpaired.desirable_fraction=0.5"], "learns from pairs: leave it at 1.0"),
    ("dataset", ["+dataset.feedback=thumbs"], "dataset.feedback must be one of"),
    ("dataset", ["dataset=nope"], "Could not find 'dataset/nope'"),
    ("dataset", ["dataset.task=chess"], "dataset.task"),
    ("dataset", ["dataset.label_noise=0.7"], "dataset.label_noise"),
    ("dataset", ["dataset.on_bad_row=skip"], "dataset.on_bad_row"),
    ("dataset", ["dataset.n_train_prompts=0"], "dataset.n_train_prompts"),
    ("dataset", ["dataset=local_file", "model=hf", f"model.pretrained={HF_DIR}"], "dataset.data_files"),
    ("dataset", ["dataset=local_file", "model=hf", f"model.pretrained={HF_DIR}", "dataset.data_files.train=no/such.jsonl",
                 "dataset.data_files.test=null", "dataset.eval_split=null"], "dataset.data_files.train: no file at"),
    ("dataset", ["dataset=ultrafeedback", "model=hf", f"model.pretrained={HF_DIR}", "dataset.max_rows=0"], "dataset.max_rows"),
    ("dataset", ["dataset=hh_rlhf", "model=hf", f"model.pretrained={HF_DIR}"], "dataset.path='Anthropic/hh-rlhf'"),
    ("model", ["model=hf"], "missing required config value(s): model.pretrained"),
    ("model", ["model=hf", "model.pretrained=gpt2", "sft.steps=0"], "model.pretrained='gpt2' is a hub name"),
    ("model", ["model=hf", "model.pretrained=/no/such/model", "sft.steps=0"], "model.pretrained='/no/such/model'"),
    ("model", ["model=hf", f"model.pretrained={HF_DIR}"], "a pretrained model on a built-in task is the reference as it is"),
    ("model", ["model.kind=gpt"], "model.kind"),
    ("model", ["model.max_length=1"], "model.max_length"),
    ("model", ["model.num_heads=3"], "model.hidden_size=128 must be a multiple of model.num_heads=3"),
    ("hardware", ["hardware=tpu"], "Could not find 'hardware/tpu'"),
    ("hardware", ["hardware.accelerator=tpu"], "hardware.accelerator"),
    ("hardware", ["hardware.mixed_precision=fp8"], "hardware.mixed_precision"),
    ("hardware", ["hardware.torch_threads=0"], "hardware.torch_threads"),
    ("hardware", ["hardware.num_processes=0"], "hardware.num_processes"),
    ("logger", ["logger=mlflow"], "Could not find 'logger/mlflow'"),
    ("logger", ["logger=wandb", "logger.mode=live"], "logger.mode"),
    ("logger", ["logger=wandb", "logger.project=a/b"], "logger.project"),
    ("logger", ["logger=wandb", "logger.tags=[" + "x" * 80 + "]"], "logger.tags[0]"),
    ("logger", [f"+logger.api_key={SECRET}"], "logger.api_key"),
    ("budget", ["budget=turbo"], "Could not find 'budget/turbo'"),
    ("budget", ["train.max_steps=0"], "train.max_steps"),
    ("budget", ["train.batch_size=0"], "train.batch_size"),
    ("budget", ["train.lr=-1e-4"], "train.lr"),
    ("budget", ["train.layout=diagonal"], "train.layout"),
    ("checkpoint", ["checkpoint.every_steps=0"], "checkpoint.every_steps"),
    ("budget", ["sft.steps=-1"], "sft.steps"),
    ("budget", ["eval.curve.fractions=[0.5,1.5]"], "eval.curve.fractions"),
    ("experiment", ["experiment=nope"], "Could not find 'experiment/nope'"),
    ("experiment", ["experiment=smollm2_budget", "model=tiny"], "dataset.task='constraints'"),
    ("experiment", ["experiment=quick_dpo", "seed=zero"], "seed must be an integer"),
    ("launcher", ["-m", "hydra/launcher=ray"], "Could not find 'hydra/launcher/ray'"),
    ("launcher", ["-m", "hydra/launcher=slurm", "hydra.launcher.signal_delay_s=3600"], "hydra.launcher.signal_delay_s"),
    ("launcher", ["-m", "hydra/launcher=slurm", "hydra.launcher.partition="], "hydra.launcher.partition"),
    ("launcher", ["-m", "hydra/launcher=slurm", "hydra.launcher.mem_gb=0"], "hydra.launcher.mem_gb"),
    ("launcher", ["-m", "hydra/launcher=slurm", "hardware=multi_gpu", "hydra.launcher.tasks_per_node=1"],
     "hydra.launcher.tasks_per_node=1 must equal hardware.num_processes=2"),
    ("launcher", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs"),
    ("sweep", ["sweep_id=../elsewhere"], "sweep_id"),
]
GROUPS = ("method", "dataset", "model", "hardware", "logger", "budget", "experiment", "launcher")

def _row(text: str):
    return next(row for row in BAD_CONFIGS if text in row[2])


# A Hydra composition error, one of our config checks, a missing file, a refused secret, a launcher check.
SUBPROCESS_ROWS = [_row("method/dpp"), _row("method.beta must be > 0"), _row("no file at"), _row("n_jobs")]
MULTIRUN_ROWS = [_row("method.beta must be > 0"), _row("no file at"), _row("logger.api_key"), _row("signal_delay_s")]


def _ids(rows):
    return [f"{group}:{' '.join(overrides)[:60]}" for group, overrides, _ in rows]


@pytest.fixture
def hf_dir(tmp_path) -> Path:
    path = tmp_path / "local-model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def _with_dir(overrides: list[str], hf_dir: Path) -> list[str]:
    return [o.replace(HF_DIR, str(hf_dir)) for o in overrides]


def test_the_table_covers_every_group():
    assert len(BAD_CONFIGS) >= 30
    assert {group for group, _, _ in BAD_CONFIGS} >= set(GROUPS)


@pytest.mark.parametrize("group, overrides, expected", BAD_CONFIGS, ids=_ids(BAD_CONFIGS))
def test_entry_point_refuses_with_the_key_and_status_2(group, overrides, expected, hf_dir, tmp_path, monkeypatch, capsys):
    import bench.pipeline

    def no_compute(*args, **kwargs):  # reaching the pipeline means the mistake went through
        raise AssertionError("the run started: the bad config was accepted")

    monkeypatch.setattr(bench.pipeline, "run", no_compute)
    monkeypatch.setattr(preflight, "_composed", False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMI_BENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IMI_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in preflight.DEBUG_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["bench.train", *_with_dir(overrides, hf_dir), "progress=false"])
    started = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("bench.train", run_name="__main__")
    elapsed = time.perf_counter() - started
    out = capsys.readouterr()
    text = out.out + out.err
    assert stop.value.code == 2, text[-3000:]
    assert expected in text, text[-3000:]
    assert "Traceback" not in text
    assert SECRET not in text  # a refused secret is named by its key, never echoed
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local-model"], "nothing may be written"


def test_debug_switch_shows_the_traceback(monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(preflight, "_composed", False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMI_BENCH_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["bench.train", "method.beta=-1"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("bench.train", run_name="__main__")
    text = "".join(capfd.readouterr())
    assert stop.value.code == 2
    assert "Traceback" in text and "bench.config.ConfigError: method.beta must be > 0" in text
    assert not (tmp_path / "outputs").exists()


def _subprocess_env(tmp_path: Path) -> dict:
    return {**os.environ, "IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(tmp_path / "cache"),
            "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "IMI_BENCH_DEBUG": "", "HYDRA_FULL_ERROR": ""}


@pytest.mark.parametrize("group, overrides, expected", SUBPROCESS_ROWS, ids=_ids(SUBPROCESS_ROWS))
def test_shell_sees_status_2_and_the_message_alone(group, overrides, expected, hf_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.train", *_with_dir(overrides, hf_dir)], cwd=tmp_path,
                          env=_subprocess_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert expected in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    if "Could not find" not in expected:
        assert proc.stderr.strip().splitlines() == [f"[imi-bench] error: {proc.stderr.split('error: ', 1)[1].strip()}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local-model"]


def _multirun_args(overrides: list[str]) -> list[str]:
    """multirun.sh takes the preset as its first word and every run is a multirun already."""
    preset, rest = "quick_dpo", []
    for override in overrides:
        if override == "-m":
            continue
        if override.startswith("experiment="):
            preset = override.split("=", 1)[1]
        else:
            rest.append(override)
    return [preset, "--dry-run", "budget=fast", *rest]


def _multirun_refuses(overrides, expected, hf_dir, tmp_path):
    args = _multirun_args(_with_dir(overrides, hf_dir))
    proc = subprocess.run([str(MULTIRUN), *args], cwd=tmp_path, env={**_subprocess_env(tmp_path), "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=180)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-3000:]
    expected = "unknown preset 'nope'" if args[0] == "nope" else expected
    assert expected in text, text[-3000:]
    assert "Traceback" not in text and SECRET not in text
    assert "[multirun] sweep 1/" not in text, "a sweep started"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.parametrize("group, overrides, expected", MULTIRUN_ROWS, ids=_ids(MULTIRUN_ROWS))
def test_multirun_dry_run_refuses_before_any_job(group, overrides, expected, hf_dir, tmp_path):
    _multirun_refuses(overrides, expected, hf_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("group, overrides, expected", BAD_CONFIGS, ids=_ids(BAD_CONFIGS))
def test_multirun_dry_run_refuses_every_row(group, overrides, expected, hf_dir, tmp_path):
    _multirun_refuses(overrides, expected, hf_dir, tmp_path)
