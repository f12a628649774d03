"""Pre-flight: what must hold before a run or a sweep spends any compute or writes any file (docs/design.md §12).

Checks the world outside the config's own values, each failing in seconds with the key named: local data files;
the model (a local directory, a hub name in the local Hugging Face cache when the hub cannot be reached, a GGUF
package); secrets (docs/design.md §10); launcher limits. `PreflightCallback` runs them with bench.config's
validation before Hydra creates the run's folder. Must not import the training side.
"""
from __future__ import annotations

import functools
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bench.config import ConfigError, validate_config
from bench.data.files import split_files
from bench.redaction import looks_secret

# Environment variables whose values are secrets whatever their name says (the W&B key, the HF token
# under its current and its older names); any other variable whose name looks secret counts too.
SECRET_ENV_VARS = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN")
# Shorter values are too likely to occur in a config by chance ("1", "true") to be refused on sight.
MIN_SECRET_CHARS = 8
HUB_TIMEOUT_S = 3.0  # one TCP connection attempt: the whole hub check stays within seconds
DEBUG_ENV_VARS = ("IMI_BENCH_DEBUG", "HYDRA_FULL_ERROR")


def debug_enabled() -> bool:
    """True when a user asked for tracebacks (IMI_BENCH_DEBUG=1 or Hydra's HYDRA_FULL_ERROR=1)."""
    return any(os.environ.get(name, "") not in ("", "0") for name in DEBUG_ENV_VARS)


# ----------------------------------------------------------------------------- secrets
def secret_env_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{variable name: value} of the secrets in the environment (values of at least MIN_SECRET_CHARS)."""
    environ = os.environ if environ is None else environ
    return {name: value for name, value in environ.items()
            if (name in SECRET_ENV_VARS or looks_secret(name)) and len(value) >= MIN_SECRET_CHARS}


def redact_text(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every secret environment variable's value replaced by <redacted>."""
    for value in secret_env_values(environ).values():
        text = text.replace(value, "<redacted>")
    return text


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
            if looks_secret(str(key)):
                yield f"{prefix}.{key}" if prefix else str(key), _SecretKey
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, node


class _SecretKey:
    """Marks a secret-looking key in `_leaves` (its value is never looked at or echoed)."""


def check_secrets(config: Mapping, overrides: list[str] = (), environ: Mapping[str, str] | None = None) -> None:
    """Refuse a secret-looking key or a secret environment variable's value in the config or overrides.

    config: the resolved config (plain containers); overrides: the command line's key=value words.
    Messages name the key and the variable, never the value.
    """
    secrets = secret_env_values(environ)
    hint = ("secrets are never config values: Hydra would write them into .hydra/ and SLURM job files. "
            "Give the W&B key as WANDB_API_KEY and the Hugging Face token as HF_TOKEN in the environment")
    for override in overrides:
        key, sep, value = override.partition("=")
        name = key.lstrip("+~")
        if sep and looks_secret(name.split(".")[-1].split("/")[-1]):
            raise ConfigError(f"{name}: a secret-looking key on the command line is refused; {hint}")
        for variable, secret in secrets.items():
            if secret in override:
                raise ConfigError(f"{name or override[:20]}: the command line holds the value of ${variable}; {hint}")
    for key, value in _leaves(config):
        if value is _SecretKey:
            raise ConfigError(f"{key}: a secret-looking config key is refused; {hint}")
        if isinstance(value, str):
            for variable, secret in secrets.items():
                if secret in value:
                    raise ConfigError(f"{key} holds the value of ${variable}; {hint}")


# ----------------------------------------------------------------------------- hub
@functools.lru_cache(maxsize=None)
def _route_problem(host: str, port: int) -> str | None:
    try:
        socket.create_connection((host, port), timeout=HUB_TIMEOUT_S).close()
    except OSError as err:  # no DNS, no route, refused, timed out
        return f"no route to {host}:{port} ({type(err).__name__}: {err})"
    return None


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (offline mode set, or no route), or None."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name}={os.environ[name]}"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return _route_problem(endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443))


def _looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything else naming a file system location is a path."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "")


def _hub_cached(repo_id: str, repo_type: str, revision: str | None, filename: str | None) -> bool:
    """Whether the local Hugging Face cache holds this repo (a file of it when `filename` is given)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if filename is not None:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=constants.HF_HUB_CACHE, revision=revision,
                                       repo_type=repo_type)
        return isinstance(found, str)
    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    return (folder / "snapshots").is_dir() and any((folder / "snapshots").iterdir())


def _datasets_cached(repo_id: str) -> bool:
    """`datasets` keeps a processed copy per dataset under HF_DATASETS_CACHE/<org>___<name>."""
    import datasets

    return (Path(datasets.config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")).is_dir()


def check_model(model: Mapping) -> None:
    """`model.pretrained` (or `model.gguf`) can be loaded without waiting on an unreachable hub."""
    if model.get("kind") != "hf":
        return
    if model.get("gguf"):
        from bench.models import gguf_file_path  # metadata only: reads no weights

        try:
            gguf_file_path(model["gguf"])
        except (ModuleNotFoundError, ValueError, FileNotFoundError) as err:
            raise ConfigError(str(err)) from None
        return
    name = model.get("pretrained")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model.pretrained must name a hub model or a local directory, got {name!r}")
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not (Path(expanded) / "config.json").is_file():
            raise ConfigError(f"model.pretrained={name!r} is a directory without config.json: point it at a "
                              "folder written by save_pretrained (config.json, weights, tokenizer files)")
        return
    if _looks_like_path(name) or os.path.exists(expanded):
        raise ConfigError(f"model.pretrained={name!r}: no model directory there "
                          f"(relative paths resolve against {os.getcwd()})")
    reason = hub_unreachable()
    if reason is not None and not _hub_cached(name, "model", model.get("revision"), "config.json"):
        raise ConfigError(
            f"model.pretrained={name!r} is a hub name, the hub cannot be reached ({reason}) and the local "
            f"Hugging Face cache has no copy of it. Point the config at a local copy: "
            f"model.pretrained=/path/to/dir (a folder written by save_pretrained, or `huggingface-cli download "
            f"{name} --local-dir /path/to/dir` run where there is network)")


def check_dataset(dataset: Mapping) -> None:
    """The files a real dataset names exist; a hub dataset is cached when the hub cannot be reached."""
    source = dataset.get("source")
    if source in (None, "builtin"):
        return
    data_files = dataset.get("data_files")
    if isinstance(data_files, Mapping):
        for role in ("train", "eval"):
            split = dataset.get(f"{role}_split")
            if split is None:
                continue
            try:
                split_files(data_files, split, role)
            except ValueError as err:  # the same words as when the run reads the files
                raise ConfigError(str(err)) from None
        return
    path = dataset.get("path")
    if not isinstance(path, str) or not path:
        return  # bench.config reports the missing key
    if os.path.isdir(os.path.expanduser(path)):
        return
    if _looks_like_path(path):
        raise ConfigError(f"dataset.path={path!r}: no directory there (relative paths resolve against {os.getcwd()})")
    reason = hub_unreachable()
    if reason is not None and not (_hub_cached(path, "dataset", dataset.get("revision"), None) or _datasets_cached(path)):
        raise ConfigError(
            f"dataset.path={path!r} is a hub name, the hub cannot be reached ({reason}) and no local cache holds "
            f"it. Point the config at a local copy: dataset.path=/path/to/copy (a folder with the repo's files), "
            f"or dataset.data_files={{{dataset.get('train_split')}: /path/train.parquet, ...}}")


def _resolved(cfg: DictConfig) -> dict:
    """The config as plain containers, resolved where it can be (outside a Hydra app `paths.*` cannot)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. ${hydra:runtime.cwd} with no Hydra app running
        return OmegaConf.to_container(cfg, resolve=False)


def check_run_config(cfg: DictConfig) -> None:
    """Everything a run must pass before any compute: the config's own values (bench.config), then no
    secret anywhere in it and every file, model and dataset it names present (this module)."""
    validate_config(cfg)
    resolved = _resolved(cfg)
    check_secrets(resolved)
    check_inputs(resolved)


def check_inputs(config: Mapping) -> None:
    """Files and hub names of a resolved config (plain containers): see the module docstring."""
    check_dataset(config.get("dataset") or {})
    check_model(config.get("model") or {})


# ----------------------------------------------------------------------------- launcher
def check_launcher(launcher: Mapping, config: Mapping) -> None:
    """`hydra.launcher` (plain containers) against what the run config asks of it."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("SlurmLauncher"):
        for key in ("timeout_min", "mem_gb", "cpus_per_task", "tasks_per_node", "nodes"):
            value = launcher.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"hydra.launcher.{key} must be a positive integer, got {value!r}")
        if not launcher.get("partition"):
            raise ConfigError(f"hydra.launcher.partition must name a SLURM partition, got {launcher.get('partition')!r}")
        delay, limit_s = launcher.get("signal_delay_s") or 0, (launcher.get("timeout_min") or 0) * 60
        # submitit asks SLURM for its warning signal_delay_s before the limit (the job then checkpoints and is
        # requeued); a delay at or past the limit signals every job at once and fails it "timed-out too many times"
        if delay < 1 or delay >= limit_s:
            raise ConfigError(f"hydra.launcher.signal_delay_s={delay} must be >= 1 and below "
                              f"hydra.launcher.timeout_min={launcher.get('timeout_min')} minutes")
        processes = (config.get("hardware") or {}).get("num_processes", 1)
        if launcher.get("tasks_per_node") != processes:
            raise ConfigError(f"hydra.launcher.tasks_per_node={launcher.get('tasks_per_node')} must equal "
                              f"hardware.num_processes={processes} (one SLURM task per training process)")
    elif target.endswith("JoblibLauncher"):
        n_jobs = launcher.get("n_jobs")
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
            raise ConfigError(f"hydra.launcher.n_jobs must be a positive integer (or -1: one per core), got {n_jobs!r}")


# ----------------------------------------------------------------------------- group choices
# Groups listed as `optional` in conf/config.yaml's defaults: Hydra skips an unknown option of such a
# group without a word (`experiment=nope` would run the defaults), so their choices are checked here.
OPTIONAL_GROUPS = ("experiment",)


def check_choices(choices: Mapping) -> None:
    """Every optional group's choice (`hydra.runtime.choices`) names a config that exists."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    for group in OPTIONAL_GROUPS:
        choice = choices.get(group)
        if choice is not None and choice not in loader.get_group_options(group):
            raise ConfigError(f"Could not find '{group}/{choice}': {group} must be one of "
                              f"{', '.join(loader.get_group_options(group))}")


# ----------------------------------------------------------------------------- the Hydra callback
def refuse(err: Exception) -> None:
    """End the process on a user's mistake: the message alone and exit status 2, the traceback first
    in debug mode. Always SystemExit: Hydra turns an exception in a callback into a warning and goes on."""
    if debug_enabled():
        traceback.print_exception(err, file=sys.stderr)
    print(f"[imi-bench] error: {redact_text(str(err))}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _plain(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


_composed = False


def composed() -> bool:
    """Whether Hydra got as far as a composed config in this process (see bench.train.cli)."""
    return _composed


class PreflightCallback(Callback):
    """Runs before Hydra creates any output folder: the whole config for a single run, the command line
    and the launcher for a multirun (each job validates its own config, and multirun.sh validates
    every job before launching any)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _composed
        _composed = True
        from hydra.core.hydra_config import HydraConfig

        try:
            HydraConfig.instance().set_config(config)  # resolves ${hydra:runtime.cwd} in paths.*
            overrides = list(config.hydra.overrides.task)
            check_secrets({}, overrides)
            check_choices(config.hydra.runtime.choices)
            task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
            check_run_config(task)
        except ConfigError as err:
            refuse(err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _composed
        _composed = True
        try:
            check_secrets({}, list(config.hydra.overrides.task))
            check_choices(config.hydra.runtime.choices)
            task = {k: _plain(config[k]) for k in ("hardware",) if k in config}
            check_launcher(_plain(config.hydra.launcher), task)
        except ConfigError as err:
            refuse(err)
