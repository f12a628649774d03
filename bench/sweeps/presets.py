"""The named presets multirun.sh runs: suites (bench/sweeps/suites.yaml: several Hydra sweeps sharing one
sweep id) and the conf/experiment/<name>.yaml presets (one sweep each), with the line --help shows."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf

from bench import conf_dir
from bench.data.tasks import TASKS


@dataclass(frozen=True)
class Suite:
    description: str
    sweeps: tuple[str, ...]  # one Hydra sweep each: "experiment=<preset> [overrides]"


@lru_cache(maxsize=None)
def builtin_datasets() -> tuple[str, ...]:
    """The tiny model's built-in tasks (conf/dataset/*.yaml with source builtin and a task that needs no
    pretrained model), sorted: what the compare and beta_sensitivity suites sweep, as compare.yaml does."""
    configs = {path.stem: OmegaConf.load(path) for path in (conf_dir() / "dataset").glob("*.yaml")}
    return tuple(sorted(name for name, cfg in configs.items()
                        if cfg.get("source") == "builtin" and not TASKS[cfg.task].requires_pretrained_model))


def clean_builtin_datasets() -> tuple[str, ...]:
    """The built-in tasks with clean labels (no `trap`: the settings a headline aggregates), sorted."""
    return tuple(name for name in builtin_datasets()
                 if OmegaConf.load(conf_dir() / "dataset" / f"{name}.yaml").get("trap") is None)


SUITES_FILE = Path(__file__).with_name("suites.yaml")


def suites() -> dict[str, Suite]:
    """Suites by name, in the order --help lists them (bench/sweeps/suites.yaml), with {builtin_tasks} and
    {clean_builtin_tasks} spelled out as a `dataset=` override."""
    tasks = {"{builtin_tasks}": builtin_datasets(), "{clean_builtin_tasks}": clean_builtin_datasets()}

    def spell(step: str) -> str:
        for placeholder, names in tasks.items():
            step = step.replace(placeholder, "dataset=" + ",".join(names))
        return step

    raw = OmegaConf.to_container(OmegaConf.load(SUITES_FILE))
    return {name: Suite(entry["description"], tuple(spell(step) for step in entry["sweeps"]))
            for name, entry in raw.items()}


def experiment_presets() -> list[str]:
    return sorted(path.stem for path in (conf_dir() / "experiment").glob("*.yaml"))


def preset_description(preset: str) -> str:
    """Line 2 of conf/experiment/<preset>.yaml, which reads "# <preset> — <what it measures>"."""
    lines = (conf_dir() / "experiment" / f"{preset}.yaml").read_text().splitlines()
    prefix = f"# {preset} — "
    return next((line[len(prefix):] for line in lines[:3] if line.startswith(prefix)), "")


def sweep_steps(preset: str) -> list[str]:
    """The sweeps a preset runs: a suite's, or the one sweep of conf/experiment/<preset>.yaml."""
    known = suites()
    if preset in known:
        return list(known[preset].sweeps)
    if preset in experiment_presets():
        return [f"experiment={preset}"]
    raise KeyError(preset)
