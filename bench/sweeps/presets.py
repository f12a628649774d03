"""The named presets multirun.sh runs: suites (several Hydra sweeps sharing one sweep id) and the
conf/experiment/<name>.yaml presets (one sweep each), with the one-line description --help shows."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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


def suites() -> dict[str, Suite]:
    """Suites by name, in the order --help lists them."""
    tasks = "dataset=" + ",".join(builtin_datasets())
    ablations = ("regulator", "pmi_source", "margin_units", "warmup", "marginal_context")
    return {
        "quick": Suite("DPO over 3 β × 2 seeds + rmipo and imi_dpo × 2 seeds on sentiment, short SFT "
                       "(~3 min on 2 CPU cores from a cold cache)", ("experiment=quick_dpo", "experiment=quick_imi")),
        # the citable testbed study (results/beta_sensitivity/): the DPO β grid, a documented SimPO subset
        # (β ∈ {2, 10} × γ/β ∈ {0.15, 0.5}: both ends of the β range, the default γ/β and a small one), and
        # the IMI methods at their defaults, on every built-in task, 5 seeds
        "beta_sensitivity": Suite(
            "the citable testbed study: DPO β grid + SimPO 2×2 subset + rmipo, imi_dpo, imi_simpo on every "
            "built-in task, 5 seeds (325 runs)",
            (f"experiment=dpo_beta_grid {tasks}",
             f"experiment=simpo_grid {tasks} method.beta=2.0,10.0 method.gamma_beta_ratio=0.15,0.5",
             f"experiment=imi_defaults {tasks} method=rmipo,imi_dpo,imi_simpo")),
        "compare": Suite("the headline: every method at its defaults + the DPO, IPO and SimPO grids, on every "
                         "built-in task, 5 seeds",
                         ("experiment=compare", *(f"experiment={grid} {tasks}"
                                                  for grid in ("dpo_beta_grid", "ipo_beta_grid", "simpo_grid")))),
        "ablations": Suite("every ablation_* preset: regulator × base loss, PMI source, margin units, warm-up, "
                           "marginal context", tuple(f"experiment=ablation_{name}" for name in ablations)),
        # the real-model lane (DESIGN §13): DPO β grid and the IMI methods on SmolLM2-135M-Instruct
        "smollm2": Suite("the real-model lane: DPO β grid + rmipo and imi_dpo on SmolLM2-135M-Instruct "
                         "(constraints task; needs the smollm2 extra)", ("experiment=smollm2_dpo",
                                                                         "experiment=smollm2_imi")),
    }


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
