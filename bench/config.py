"""Whole-config validation, before the first tensor (DESIGN §12).

Every error names the config key and what was expected, e.g.
"train.lr must be > 0, got -0.1" or "method: unknown method 'dpp'; available: cdpo, dpo, ...".
"""
from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from bench.logps import LAYOUT_NAMES
from bench.methods import build_method


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the key."""


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key} must be a number {bound}, got {value!r}")


def _integer(cfg: DictConfig, key: str, minimum: int = 1) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _resolved(cfg: DictConfig) -> dict:
    """The config as plain containers, resolved where it can be (outside a Hydra app `paths.*` cannot)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. ${hydra:runtime.cwd} with no Hydra app running
        return OmegaConf.to_container(cfg, resolve=False)


def validate_config(cfg: DictConfig) -> None:
    """Every check that needs no compute; then the pre-flight checks of files, hub names and secrets
    (bench.preflight). Raises ConfigError naming the key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required config value(s): {', '.join(missing)} (set them on the command line, e.g. {missing[0]}=...)")
    try:
        build_method(OmegaConf.to_container(cfg.method, resolve=True))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for key in ("train.batch_size", "train.lr", "train.grad_accum_steps", "train.log_every", "sft.batch_size", "sft.lr"):
        _positive(cfg, key)
    for key in ("train.epochs", "train.weight_decay", "train.warmup_ratio", "sft.steps"):
        _positive(cfg, key, allow_zero=True)
    if cfg.train.get("layout", "padded") not in LAYOUT_NAMES:
        raise ConfigError(f"train.layout must be one of {', '.join(LAYOUT_NAMES)}, got {cfg.train.layout!r}")
    if not isinstance(cfg.train.get("fused_adamw", False), bool):
        raise ConfigError(f"train.fused_adamw must be true or false, got {cfg.train.fused_adamw!r}")
    if cfg.train.max_steps is not None:
        _positive(cfg, "train.max_steps")
    if cfg.train.get("checkpoint_every") is not None:
        _integer(cfg, "train.checkpoint_every")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}")
    sweep_id = cfg.get("sweep_id")
    if not isinstance(sweep_id, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", sweep_id) or sweep_id in (".", ".."):
        raise ConfigError(f"sweep_id names the sweep's folder: letters, digits, . _ - only, got {sweep_id!r}")
    if cfg.dataset.get("on_bad_row", "error") not in ("error", "drop"):
        raise ConfigError(f"dataset.on_bad_row must be 'error' or 'drop', got {cfg.dataset.on_bad_row!r}")
    source = cfg.dataset.get("source")
    if source not in ("builtin", "ultrafeedback", "hh_rlhf", "local"):
        raise ConfigError(f"dataset.source must be one of builtin, ultrafeedback, hh_rlhf, local; got {source!r}")
    if cfg.model.kind not in ("tiny", "hf"):
        raise ConfigError(f"model.kind must be 'tiny' or 'hf', got {cfg.model.kind!r}")
    _integer(cfg, "model.max_length", minimum=2)  # at least a boundary token and one response token
    if cfg.model.kind == "tiny":
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            _integer(cfg, f"model.{key}")
        if cfg.model.hidden_size % cfg.model.num_heads:
            raise ConfigError(f"model.hidden_size={cfg.model.hidden_size} must be a multiple of "
                              f"model.num_heads={cfg.model.num_heads}")
    if cfg.model.kind == "tiny" and source != "builtin":
        raise ConfigError(
            f"model=tiny builds its tokenizer from a built-in task's vocabulary, but dataset.source={source!r}; "
            "use model=hf model.pretrained=<name or path> for real datasets"
        )
    if source != "builtin":
        from bench.data.adapters import check_dataset_config

        try:
            check_dataset_config(cfg.dataset)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if source == "builtin":
        from bench.data.tasks import TASKS, available_tasks

        if cfg.dataset.task not in available_tasks():
            raise ConfigError(f"dataset.task: unknown task {cfg.dataset.task!r}; available: {', '.join(available_tasks())}")
        if TASKS[cfg.dataset.task].requires_pretrained_model and cfg.model.kind != "hf":
            raise ConfigError(f"dataset.task={cfg.dataset.task!r} is written for a pretrained model's tokenizer: "
                              f"use model=smollm2 (or model=hf), not model={cfg.model.get('name', cfg.model.kind)}")
        if cfg.model.kind == "hf" and cfg.sft.steps != 0:
            raise ConfigError(f"sft.steps={cfg.sft.steps}: a pretrained model on a built-in task is the reference "
                              "as it is (no SFT warm start is implemented for it); set sft.steps=0")
        if not 0.0 <= cfg.dataset.label_noise <= 0.5:
            raise ConfigError(f"dataset.label_noise must be in [0, 0.5] (a flip rate above 0.5 inverts the labels), got {cfg.dataset.label_noise!r}")
        _positive(cfg, "dataset.bt_temperature")
        if not isinstance(cfg.dataset.get("drop_ties", False), bool):
            raise ConfigError(f"dataset.drop_ties must be true or false, got {cfg.dataset.drop_ties!r}")
        for key in ("n_train_prompts", "n_eval_pair_prompts", "n_val_prompts", "n_test_prompts"):
            _positive(cfg, f"dataset.{key}")
    _integer(cfg, "hardware.num_processes")
    _integer(cfg, "hardware.torch_threads")
    _positive(cfg, "hardware.dist_timeout_s")
    if cfg.hardware.accelerator not in ("cpu", "cuda"):
        raise ConfigError(f"hardware.accelerator must be 'cpu' or 'cuda', got {cfg.hardware.accelerator!r}")
    if cfg.hardware.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"hardware.mixed_precision must be no, bf16 or fp16, got {cfg.hardware.mixed_precision!r}")
    fractions = list(cfg.eval.curve.fractions)
    if not fractions or any(not isinstance(f, (int, float)) or not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"eval.curve.fractions must be a non-empty list of fractions in (0, 1], got {fractions!r}")
    _positive(cfg, "eval.curve.n_prompts")
    if cfg.eval.lm_eval.enabled:
        _integer(cfg, "eval.lm_eval.n_items")
        _integer(cfg, "eval.lm_eval.batch_size")
    if cfg.objective is None:
        raise ConfigError("objective must name a metric (e.g. gold_reward or pref_acc)")
    from bench.loggers import check_logger_config

    try:
        check_logger_config(cfg.logger)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    from bench import preflight  # imports this module: imported here, not at the top

    resolved = _resolved(cfg)
    preflight.check_secrets(resolved)
    preflight.check_inputs(resolved)
