"""The method registry: config group `method` (conf/method/<name>.yaml) → a `Method` instance (docs/design.md §3).

The name → class table is found, not written: every `Method` subclass of this package that sets `name` in its own
body is a method, so adding one changes nothing here. `build_method(cfg)` checks the group's keys, each error
naming `method.<key>` (docs/design.md §12); `method_info(name)` is what a run record stores about the method.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

from bench.methods.base import FAMILIES, ExampleLogps, LossOutput, Method, Needs, PairLogps

__all__ = ["ExampleLogps", "LossOutput", "Method", "Needs", "PairLogps", "available_methods", "build_method", "method_info",
           "method_keys"]


def _discover() -> dict[str, type[Method]]:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    found: dict[str, type[Method]] = {}
    pending = list(Method.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        # only this package's classes: a test's Method subclass is not a method users can pick
        if "name" not in vars(cls) or not cls.__module__.startswith(f"{__name__}."):
            continue
        if cls.name in found and found[cls.name] is not cls:
            raise RuntimeError(f"two methods are named {cls.name!r}: {found[cls.name].__module__} and {cls.__module__}")
        if cls.family not in FAMILIES:
            raise RuntimeError(f"method {cls.name!r} ({cls.__module__}) must set family to one of {FAMILIES}")
        found[cls.name] = cls
    return found


_REGISTRY: dict[str, type[Method]] = _discover()


def available_methods() -> list[str]:
    """Names accepted by `build_method`, sorted."""
    return sorted(_REGISTRY)


def method_keys(name: str) -> list[str]:
    """The hyperparameter keys of method `name`, in order."""
    return list(_method_class(name).defaults())


def method_info(name: str) -> dict:
    """What a run record says about method `name` (its top-level `method_info`):
    {"family": "dpo"|"ipo"|"simpo"|"kto", "imi": bool, "defaults": {key: published default}, "swept": [keys]}."""
    cls = _method_class(name)
    return {"family": cls.family, "imi": cls.imi, "defaults": cls.defaults(), "swept": list(cls.swept)}


def build_method(cfg: Mapping) -> Method:
    """Build the method described by the `method` config group (e.g. {"name": "dpo", "beta": 0.1})."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f"method config must be a mapping with a 'name' key, got {type(cfg).__name__}")
    values = dict(cfg)
    if "name" not in values:
        raise ValueError(f"method.name is missing; available methods: {available_methods()}")
    name = values.pop("name")
    expected = method_keys(name)
    unknown = sorted(set(values) - set(expected))
    if unknown:
        raise ValueError(
            f"method.{unknown[0]} is not a key of method {name!r} (unknown keys: {unknown}); "
            f"its keys are: {expected}"
        )
    # Every hyperparameter comes from the config: a key left out is an error, never a silent default.
    missing = [key for key in expected if key not in values]
    if missing:
        raise ValueError(f"method.{missing[0]} is missing for method {name!r} (missing keys: {missing})")
    return _REGISTRY[name](**values)


def _method_class(name: object) -> type[Method]:
    if name not in _REGISTRY:
        raise ValueError(f"method.name={name!r} is not a known method; available methods: {available_methods()}")
    return _REGISTRY[name]  # type: ignore[index]
