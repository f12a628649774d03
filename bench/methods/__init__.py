"""The method registry: config group `method` (conf/method/<name>.yaml) → a `Method` instance.

Owns the name → class table and the config check: `build_method(cfg)` takes the `method` group as a
mapping with `name` plus exactly the hyperparameters of conf/method/<name>.yaml, which are exactly
the keyword arguments of the class's constructor. An unknown method, an unknown key or a missing key
fails here with a ValueError naming `method.<key>`; bad values fail in the constructor (DESIGN §12),
before any compute. Adding a method = one module + one line in `_REGISTRY` + one YAML + one test.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.beta_dpo import BetaDPO
from bench.methods.cdpo import CDPO
from bench.methods.dpo import DPO
from bench.methods.hinge import Hinge
from bench.methods.imi_regulated import ImiDPO, ImiIPO, ImiSimPO
from bench.methods.ipo import IPO
from bench.methods.rmipo import RMiPO
from bench.methods.robust import RobustDPO
from bench.methods.simpo import SimPO

__all__ = ["LossOutput", "Method", "Needs", "PairLogps", "available_methods", "build_method", "method_keys"]

_REGISTRY: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (DPO, CDPO, RobustDPO, IPO, Hinge, SimPO, BetaDPO, RMiPO, ImiDPO, ImiIPO, ImiSimPO)
}


def available_methods() -> list[str]:
    """Names accepted by `build_method`, sorted."""
    return sorted(_REGISTRY)


def method_keys(name: str) -> list[str]:
    """The hyperparameter keys of method `name` (its constructor's keyword arguments), in order."""
    return list(inspect.signature(_method_class(name)).parameters)


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
