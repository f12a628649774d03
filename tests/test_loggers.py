"""bench.loggers: real offline W&B runs, read back with W&B's own reader (`wandb leet inspect`, tests/wandb_runs.py)
right after finish returns; the none logger, secret redaction and config errors. No network, no W&B key; every W&B
path points into tmp_path."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import wandb
from omegaconf import OmegaConf

from bench.loggers import NoneLogger, WandbLogger, build_logger
from bench.redaction import redact_overrides, redact_secrets
from wandb_runs import read_offline_run

CONF = Path(__file__).resolve().parents[1] / "conf" / "logger"
HF_SECRET = "hf_NOTREALbutSECRETxxxxxxxxxxxxxxxxxx"
WANDB_SECRET = "0123456789abcdefSECRET0123456789abcdef01"
OFFLINE = {"name": "wandb", "mode": "offline", "project": "imi-bench", "entity": None,
           "tags": ["quick", "dpo"]}


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Offline W&B with no key, every directory it might touch inside tmp_path, a fresh wandb-core."""
    home = tmp_path / "home"
    home.mkdir()
    for var in list(os.environ):
        if var.startswith("WANDB_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var, sub in [("WANDB_DIR", "wandb_dir"), ("WANDB_CONFIG_DIR", "wandb_config"),
                     ("WANDB_CACHE_DIR", "wandb_cache"), ("WANDB_DATA_DIR", "wandb_data"),
                     ("WANDB_ARTIFACT_DIR", "wandb_artifacts")]:
        monkeypatch.setenv(var, str(tmp_path / sub))
    wandb.teardown()  # a wandb-core left by another test would carry that test's environment
    yield home
    wandb.teardown()


def _wandb_processes() -> list[str]:
    names = []
    for child in psutil.Process().children(recursive=True):
        try:
            names.append(child.name())
        except psutil.Error:
            pass
    return [name for name in names if name.startswith("wandb")]


def _child_remote_addresses() -> list[str]:
    addresses = []
    for child in psutil.Process().children(recursive=True):
        try:
            addresses += [c.raddr.ip for c in child.net_connections(kind="inet") if c.raddr]
        except psutil.Error:
            pass
    return addresses


def _run_config() -> dict:
    return {
        "method": {"name": "dpo", "beta": 0.1},
        "seed": 3,
        "model": {"tokenizer": "byt5", "max_tokens": 64, "pad_token": "<pad>", "pad_token_id": 0},
        "hf_token": HF_SECRET,
        "logger": {**OFFLINE, "WANDB_API_KEY": WANDB_SECRET},
        "datasets": [{"name": "toy", "auth": {"password": "hunter2-SECRET"}}],
    }


EXPECTED_CONFIG = {
    "method": {"name": "dpo", "beta": 0.1},
    "seed": 3,
    "model": {"tokenizer": "byt5", "max_tokens": 64, "pad_token": "<pad>", "pad_token_id": 0},
    "logger": OFFLINE,  # WANDB_API_KEY dropped, the logger settings kept
    "datasets": [{"name": "toy", "auth": {}}],
}


def test_offline_run_round_trip(wandb_env, tmp_path):
    run_dir = tmp_path / "runs" / "sweep-7" / "run-003"
    logger = build_logger(OFFLINE)
    assert isinstance(logger, WandbLogger)
    logger.start(config=_run_config(), run_id="run-003", sweep_id="sweep-7", method="dpo", run_dir=run_dir)
    for step in range(5):
        logger.log_step(step, {"loss": 1.0 / (step + 1), "pref_acc": 0.125 * step})
    logger.log_step(4, {"eval/kl": 0.5})  # same step: merges into the step-4 row
    assert _wandb_processes(), "a started offline run runs wandb-core"
    assert all(ipaddress.ip_address(ip).is_loopback for ip in _child_remote_addresses())
    # pref_acc was also logged per step: the final value must win in the summary
    logger.finish(status="completed", metrics={"pref_acc": 0.75, "win_rate": 0.625},
                  cost={"device_hours": 0.002, "wall_s": {"setup": 1.5, "train": 7.25}})
    # finish returns once the run is on disk: W&B's service, which writes it, has exited
    assert _wandb_processes() == []
    logger.finish(status="completed", metrics={}, cost={})  # second finish is a no-op

    run = read_offline_run(run_dir)
    assert run["config"] == EXPECTED_CONFIG
    assert run["history"] == [
        {"step": 0, "loss": 1.0, "pref_acc": 0.0},
        {"step": 1, "loss": 0.5, "pref_acc": 0.125},
        {"step": 2, "loss": 1 / 3, "pref_acc": 0.25},
        {"step": 3, "loss": 0.25, "pref_acc": 0.375},
        {"step": 4, "loss": 0.2, "pref_acc": 0.5, "eval/kl": 0.5},
    ]
    assert run["summary"] == {
        "loss": 0.2, "eval/kl": 0.5, "pref_acc": 0.75, "win_rate": 0.625,
        "cost/device_hours": 0.002, "cost/wall_s": {"setup": 1.5, "train": 7.25},
    }
    assert run["run"] == {"id": run["run"]["id"], "name": "run-003", "project": "imi-bench", "entity": "",
                          "group": "sweep-7", "job_type": "dpo", "tags": ["quick", "dpo"], "exit_code": 0}
    assert run["file"].parent.parent == run_dir / "wandb"

    # no secret reached any file W&B wrote, and nothing was written under the (redirected) home
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            for secret in (HF_SECRET, WANDB_SECRET, "hunter2-SECRET"):
                assert secret.encode() not in blob, f"{secret} leaked into {path}"
    assert list(wandb_env.rglob("*")) == []


def test_failed_run_has_exit_code_1_and_disabled_mode_writes_nothing(wandb_env, tmp_path):
    logger = build_logger(OFFLINE)
    logger.start(config={"seed": 1}, run_id="r1", sweep_id="s", method="ipo", run_dir=tmp_path / "r1")
    logger.log_step(0, {"loss": 2.0})
    logger.finish(status="failed", metrics={}, cost={"device_hours": 0.0})
    run = read_offline_run(tmp_path / "r1")
    assert run["run"]["exit_code"] == 1
    assert run["summary"] == {"loss": 2.0, "cost/device_hours": 0.0}

    disabled = build_logger({**OFFLINE, "mode": "disabled"})
    disabled.start(config={"seed": 1}, run_id="r2", sweep_id="s", method="ipo", run_dir=tmp_path / "r2")
    disabled.log_step(0, {"loss": 2.0})
    disabled.finish(status="completed", metrics={"pref_acc": 1.0}, cost={})
    assert not list((tmp_path / "r2").glob("wandb/offline-run-*"))
    with pytest.raises(FileNotFoundError, match="r2"):
        read_offline_run(tmp_path / "r2")


def test_runs_one_after_another_in_one_process_are_each_complete_when_finish_returns(wandb_env, tmp_path):
    """A sweep's worker runs job after job in one process: each run's file is whole as soon as its finish
    returns (wandb 0.31's own run.finish() returns before its service has written the last records)."""
    for i in range(3):
        logger = build_logger(OFFLINE)
        logger.start(config={"seed": i}, run_id=f"r{i}", sweep_id="s", method="dpo", run_dir=tmp_path / f"r{i}")
        for step in range(3):
            logger.log_step(step, {"loss": float(step + i)})
        logger.finish(status="completed", metrics={"pref_acc": 0.5}, cost={})
        run = read_offline_run(tmp_path / f"r{i}")
        assert run["run"]["exit_code"] == 0 and run["config"] == {"seed": i}
        assert [row["loss"] for row in run["history"]] == [float(i), i + 1.0, i + 2.0]


def test_online_without_key_fails_naming_the_fix(wandb_env, tmp_path):
    # In a subprocess with no stdin: wandb must not prompt for a key, and no key is anywhere
    # (HOME, so ~/.netrc, points into tmp_path). The auth check is local, so nothing is sent.
    code = ("from bench.loggers import build_logger\n"
            "logger = build_logger({'name': 'wandb', 'mode': 'online', 'project': 'imi-bench'})\n"
            "logger.start(config={}, run_id='r', sweep_id='s', method='dpo',\n"
            f"             run_dir={str(tmp_path / 'r')!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "online"})
    assert done.returncode != 0
    assert "logger.mode=online" in done.stderr and "WANDB_API_KEY" in done.stderr


def test_none_logger_and_non_main_process(tmp_path):
    logger = build_logger({"name": "none"})
    assert type(logger) is NoneLogger
    logger.start(config={"seed": 1}, run_id="r", sweep_id="s", method="dpo", run_dir=tmp_path / "r")
    logger.log_step(0, {"loss": 1.0})
    logger.finish(status="completed", metrics={"pref_acc": 1.0}, cost={})
    assert list(tmp_path.iterdir()) == []
    # every rank but the main one gets a NoneLogger, so a multi-rank job makes one W&B run
    assert type(build_logger(OFFLINE, is_main_process=False)) is NoneLogger


def test_repo_logger_configs_build():
    wandb_cfg = OmegaConf.load(CONF / "wandb.yaml")
    logger = build_logger(wandb_cfg)
    assert isinstance(logger, WandbLogger)
    assert (logger.mode, logger.project, logger.entity, logger.tags) == ("offline", "imi-bench", None, ())
    assert type(build_logger(OmegaConf.load(CONF / "none.yaml"))) is NoneLogger


def test_wandb_logger_call_order_errors(tmp_path):
    logger = WandbLogger(mode="disabled", project="p")
    with pytest.raises(RuntimeError, match="before start"):
        logger.log_step(0, {"loss": 1.0})
    with pytest.raises(ValueError, match="status"):
        logger.finish(status="done", metrics={}, cost={})
    logger.start(config={}, run_id="r", sweep_id="s", method="dpo", run_dir=tmp_path / "r")
    logger.log_step(5, {"loss": 1.0})
    with pytest.raises(ValueError, match="step 4 is below the previous step 5"):
        logger.log_step(4, {"loss": 1.0})
    logger.finish(status="completed", metrics={}, cost={})


def test_redact_secrets_nested_and_pure():
    config = {
        "hf_token": "x", "HF_TOKEN": "x", "HFToken": "x",
        "wandb": {"api_key": "x", "apiKey": "x", "APIKEY": "x"},
        "db": {"Password": "x", "client_secret": "x", "aws_secret_access_key": "x", "credentials": "x"},
        "runs": [{"auth_token": "x", "seed": 1}, 2, "hf_token"],
        "tokenizer": "byt5", "max_tokens": 64, "tokens_per_step": 512, "pad_token": "<pad>",
        "eos_token": "</s>", "pad_token_id": 0, "reference_logps": "cached", "keyword": "k",
        "token_budget": 9,
    }
    before = json.dumps(config, sort_keys=True)
    assert redact_secrets(config) == {
        "wandb": {}, "db": {}, "runs": [{"seed": 1}, 2, "hf_token"],
        "tokenizer": "byt5", "max_tokens": 64, "tokens_per_step": 512, "pad_token": "<pad>",
        "eos_token": "</s>", "pad_token_id": 0, "reference_logps": "cached", "keyword": "k",
        "token_budget": 9,
    }
    assert json.dumps(config, sort_keys=True) == before  # the input is untouched


@pytest.mark.parametrize("cfg, key", [
    ({**OFFLINE, "api_key": "SECRETVALUE"}, "logger.api_key"),
    ({**OFFLINE, "projcet": "x"}, "logger.projcet"),
    ({"name": "none", "mode": "offline"}, "logger.mode"),
    ({**OFFLINE, "mode": "online-ish"}, "logger.mode"),
    ({**OFFLINE, "name": "tensorboard"}, "logger.name"),
    ({**OFFLINE, "project": "a/b"}, "logger.project"),
    ({**OFFLINE, "project": ""}, "logger.project"),
    ({**OFFLINE, "entity": 3}, "logger.entity"),
    ({**OFFLINE, "tags": "quick"}, "logger.tags"),
    ({**OFFLINE, "tags": ["ok", "x" * 65]}, "logger.tags[1]"),
])
def test_build_logger_errors_name_the_key(cfg, key):
    with pytest.raises(ValueError) as err:
        build_logger(cfg)
    assert key in str(err.value)
    assert "SECRETVALUE" not in str(err.value)


def test_redact_overrides_hides_secret_values_on_the_command_line():
    args = ["method.beta=0.1", "+hf_token=hf_abc", "logger.api_key=k", "dataset.pad_token=<pad>", "-m"]
    assert redact_overrides(args) == ["method.beta=0.1", "+hf_token=<redacted>", "logger.api_key=<redacted>",
                                      "dataset.pad_token=<pad>", "-m"]
