"""imi-bench, the training side: methods, data, models, trainer, evaluation, cost and run records.

This file holds only what every entry point needs before anything heavy is imported: where the Hydra
config tree is (`conf_dir`).
"""
from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """The Hydra config tree: conf/ beside the package in a source checkout (and an editable install), or
    the copy a wheel installs as bench/conf (pyproject.toml maps conf/ there)."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "conf"
