"""The package as users install it: a (non-editable) wheel carries conf/ and its console script runs from
any directory; pyproject.toml lists every package; no module hides a standard-library module."""
from __future__ import annotations

import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT, run_command

PACKAGE_DIRS = ("bench", "analysis", "hydra_plugins")  # hydra_plugins: the SLURM launcher


def _packages_on_disk() -> set[str]:
    return {".".join(init.parent.relative_to(ROOT).parts)
            for top in PACKAGE_DIRS for init in (ROOT / top).rglob("__init__.py")}


def test_pyproject_lists_every_package_and_maps_conf_into_bench():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # hydra_plugins is a namespace package (no __init__.py: other plugins share it), listed so that an
    # editable install puts this checkout's part on its path, where Hydra scans for launchers
    assert set(setuptools["packages"]) == _packages_on_disk() | {"bench.conf", "hydra_plugins"}
    assert setuptools["package-dir"] == {"bench.conf": "conf"}


def test_no_module_shadows_the_standard_library():
    """`python bench/train.py` puts bench/ first on sys.path: a bench/secrets.py once hid `secrets`."""
    for top in PACKAGE_DIRS:
        for path in (ROOT / top).rglob("*.py"):
            assert path.stem not in sys.stdlib_module_names, f"{path.relative_to(ROOT)} hides the stdlib {path.stem}"


@pytest.mark.slow
@pytest.mark.ci
def test_a_wheel_ships_conf_and_its_console_script_runs_from_another_directory(tmp_path):
    source = tmp_path / "src"  # a copy: building must leave no build/ or egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("bench", "analysis", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = run_command([*pip, "wheel", source, "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist"],
                        cwd=tmp_path, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:]
    (wheel,) = (tmp_path / "dist").glob("imi_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for config in (ROOT / "conf").rglob("*.yaml"):
        assert f"bench/conf/{config.relative_to(ROOT / 'conf').as_posix()}" in names, config
    site = tmp_path / "site"
    installed = run_command([*pip, "install", "--no-deps", "--no-compile", "--target", site, wheel],
                            cwd=tmp_path, timeout=300)
    assert installed.returncode == 0, installed.stdout[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site)}  # before the checkout's editable install on sys.path
    where = run_command([sys.executable, "-c", "import bench; print(bench.__file__); print(bench.conf_dir())"],
                        cwd=elsewhere, env=env, timeout=120)
    module, conf = where.stdout.split()[-2:]
    assert Path(module).is_relative_to(site) and Path(conf) == site / "bench" / "conf", where.stdout
    help_ = run_command([site / "bin" / "imi-bench-train", "--help"], cwd=elsewhere, env=env, timeout=300)
    assert help_.returncode == 0, help_.stdout[-3000:]
    assert "method: " in help_.stdout and "rmipo" in help_.stdout, help_.stdout[-3000:]
    assert sorted(p.name for p in elsewhere.iterdir()) == [], "--help wrote files into the working directory"
