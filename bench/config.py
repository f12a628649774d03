"""Whole-config validation, before the first tensor (docs/design.md §12).

Each config group is checked by the module that owns it (its allowed values live there, once): method ->
bench.methods.build_method, dataset -> bench.data.builtin / bench.data.adapters, model -> bench.models,
hardware -> bench.distributed, logger -> bench.loggers. This module checks the sections it owns (train,
sft, eval, seed, sweep_id, objective) and what ties groups together (a tiny model needs a built-in task).
Every error names the config key and what was expected, e.g. "train.lr must be > 0, got -0.1" or
"method.name='dpp' is not a known method; available methods: [...]".
"""
from __future__ import annotations

import re
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from bench.data.adapters import check_dataset_config
from bench.data.tasks import TASKS
from bench.distributed import DistributedSetupError, check_hardware_config
from bench.loggers import check_logger_config


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the key."""


def _check_group(check: Callable[[Any], Any], node) -> Any:
    """Run a group's own checker on its plain values and return what it returns; its error (naming the key)
    becomes a ConfigError."""
    try:
        return check(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)
    except (ValueError, DistributedSetupError) as err:
        raise ConfigError(str(err)) from None


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key} must be a number {bound}, got {value!r}")


def _integer(cfg: DictConfig, key: str, minimum: int = 1) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")


def validate_config(cfg: DictConfig) -> None:
    """Every check of the config's own values, before any compute. Raises ConfigError naming the key.
    What the config points at outside itself (files, hub names, secrets) is bench.preflight's
    `check_run_config`, which runs this first."""
    # The checkers of the method, model and built-in data groups live in modules that import torch, which is
    # slow (docs/design.md §12): imported here, so that importing this module (ConfigError, for a sweep's driver
    # process, which checks only the command line and the launcher: bench.preflight) costs no torch.
    from bench.data.builtin import check_builtin_config
    from bench.logps import LAYOUT_NAMES
    from bench.methods import build_method
    from bench.models import check_model_config

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required config value(s): {', '.join(missing)} (set them on the command line, e.g. {missing[0]}=...)")
    source = cfg.dataset.get("source")
    method = _check_group(build_method, cfg.method)
    for check, group in ((check_model_config, cfg.model),
                         (check_builtin_config if source == "builtin" else check_dataset_config, cfg.dataset),
                         (check_hardware_config, cfg.hardware), (check_logger_config, cfg.logger)):
        _check_group(check, group)
    if cfg.model.kind == "tiny" and source != "builtin":
        raise ConfigError(
            f"model=tiny builds its tokenizer from a built-in task's vocabulary, but dataset.source={source!r}; "
            "use model=hf model.pretrained=<name or path> for real datasets"
        )
    if source == "builtin" and TASKS[cfg.dataset.task].requires_pretrained_model and cfg.model.kind != "hf":
        raise ConfigError(f"dataset.task={cfg.dataset.task!r} is written for a pretrained model's tokenizer: "
                          f"use model=smollm2 (or model=hf), not model={cfg.model.get('name', cfg.model.kind)}")
    if source == "builtin" and cfg.model.kind == "hf" and cfg.sft.steps != 0:
        raise ConfigError(f"sft.steps={cfg.sft.steps}: a pretrained model on a built-in task is the reference "
                          "as it is (no SFT warm start is implemented for it); set sft.steps=0")
    for key in ("train.batch_size", "train.lr", "train.grad_accum_steps", "train.log_every", "sft.batch_size", "sft.lr"):
        _positive(cfg, key)
    for key in ("train.epochs", "train.weight_decay", "train.warmup_ratio", "sft.steps"):
        _positive(cfg, key, allow_zero=True)
    if cfg.train.layout not in LAYOUT_NAMES:
        raise ConfigError(f"train.layout must be one of {', '.join(LAYOUT_NAMES)}, got {cfg.train.layout!r}")
    if not isinstance(cfg.train.fused_adamw, bool):
        raise ConfigError(f"train.fused_adamw must be true or false, got {cfg.train.fused_adamw!r}")
    if cfg.train.max_steps is not None:
        _positive(cfg, "train.max_steps")
    if OmegaConf.select(cfg, "checkpoint.every_steps") is not None:
        _integer(cfg, "checkpoint.every_steps")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}")
    sweep_id = cfg.get("sweep_id")
    if not isinstance(sweep_id, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", sweep_id) or sweep_id in (".", ".."):
        raise ConfigError(f"sweep_id names the sweep's folder: letters, digits, . _ - only, got {sweep_id!r}")
    fractions = list(cfg.eval.curve.fractions)
    if not fractions or any(not isinstance(f, (int, float)) or not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"eval.curve.fractions must be a non-empty list of fractions in (0, 1], got {fractions!r}")
    _positive(cfg, "eval.curve.n_prompts")
    if cfg.eval.lm_eval.enabled:
        _integer(cfg, "eval.lm_eval.n_items")
        _integer(cfg, "eval.lm_eval.batch_size")
    _check_feedback(cfg, method)
    if cfg.objective is None:
        raise ConfigError("objective must name a metric (e.g. gold_reward or pref_acc)")


def _check_feedback(cfg: DictConfig, method) -> None:
    """Paired methods on pairs; unpaired ones on unpaired examples or pairs split into examples
    (docs/design.md §5), with KTO's imbalance rule on the share of desirables a built-in task will give."""
    from bench.data.unpaired import FEEDBACK
    from bench.methods.kto import check_imbalance

    feedback = cfg.dataset.get("feedback", "paired")
    if feedback not in FEEDBACK:
        raise ConfigError(f"dataset.feedback must be one of {list(FEEDBACK)}, got {feedback!r}")
    fraction = OmegaConf.select(cfg, "unpaired.desirable_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"unpaired.desirable_fraction must be in (0, 1], got {fraction!r}")
    name = cfg.method.name
    if not method.needs.unpaired:
        if feedback == "unpaired":
            raise ConfigError(f"method.name={name!r} learns from pairs, but dataset {cfg.dataset.name!r} holds unpaired "
                              "examples (dataset.feedback=unpaired): use an unpaired method (kto, imi_kto)")
        if fraction != 1:
            raise ConfigError(f"unpaired.desirable_fraction={fraction} thins unpaired examples, but method.name={name!r} "
                              "learns from pairs: leave it at 1.0")
        return
    if cfg.train.batch_size < 2:
        raise ConfigError(f"train.batch_size must be >= 2 for method.name={name!r}: KTO's reference point is estimated "
                          "on mismatched completions of the same batch")
    if cfg.dataset.source == "builtin":  # each pair gives one desirable and one undesirable example
        base = getattr(method, "base", method)
        try:
            check_imbalance(base.desirable_weight, base.undesirable_weight, fraction, 1.0,
                            f"unpaired.desirable_fraction={fraction}")
        except ValueError as err:
            raise ConfigError(str(err)) from None
