"""Shared fixtures: composed configs in fast mode, with a per-session cache so SFT is built once."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# Nothing in the test suite may reach the network.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_config(tmp_path, shared_cache):
    """compose(overrides) in fast mode, writing runs under tmp_path and caches to the session cache."""

    def _make(*overrides: str):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(
                config_name="config",
                overrides=[
                    "budget=fast",
                    "progress=false",
                    "eval.lm_eval.enabled=false",
                    f"paths.runs_root={tmp_path / 'runs'}",
                    f"paths.cache_root={shared_cache}",
                    *overrides,
                ],
            )

    return _make


@pytest.fixture(autouse=True)
def _restore_environment():
    """Undo environment changes made by code under test (not just by monkeypatch).

    bench.distributed exports rendezvous variables (MASTER_ADDR, RANK, ...) straight into os.environ;
    leaked into later tests, they make every subprocess try to join a process group that never forms.
    """
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def cluster_env() -> dict[str, str]:
    """The environment for SLURM commands; skips (or, with IMI_BENCH_REQUIRE_SLURM=1, fails) without a cluster."""
    from helpers import cluster_problem, slurm_env

    env = slurm_env()
    problem = cluster_problem(env)
    if problem is not None:
        if os.environ.get("IMI_BENCH_REQUIRE_SLURM") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    return env
