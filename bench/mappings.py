"""A config group as the checkers read it: plain nested dicts and lists, whatever the caller passed."""
from __future__ import annotations

from typing import Mapping

from omegaconf import DictConfig, OmegaConf


def plain_mapping(cfg: Mapping, what: str) -> dict:
    """A DictConfig (Hydra) or any mapping -> a plain dict (resolved); `what` names the config in the error."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{what} config must be a mapping, got {type(cfg).__name__}")
    return dict(cfg)
