"""How runs group for the tuning-cost analysis: settings, configurations, grids and arms (DESIGN §11).

Vocabulary used everywhere in `analysis`:
    setting        one (dataset, model, setup) combination (`load.SETTING_KEYS`); a grid is tuned on a
                   setting, and settings are the strata of the stratified bootstrap.
    configuration  a method with all its hyperparameters on a setting; its runs differ only by seed.
    grid           all configurations of one baseline (non-IMI) method on a setting, usually a β grid.
    arm            what gets compared: a baseline method with its grid (kind "grid"), or one
                   configuration of an IMI method, which is run at fixed defaults (kind "fixed"). Several
                   configurations of one IMI method on a setting are ablation variants, each its own arm.

Owns: the method families, the published default β, and `annotate`, which adds the columns above to
a runs frame. Pure functions over DataFrames; no I/O, no plotting.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis.load import SETTING_KEYS

# IMI-regulated methods run at fixed, untuned defaults (DESIGN §3-§4); every other method is a baseline
# whose β is tuned on a grid.
IMI_METHODS = frozenset({"rmipo", "imi_dpo", "imi_ipo", "imi_simpo"})

# Published default β (DESIGN §3): DPO-family 0.1 (Rafailov et al. 2023 and the TRL default), SimPO 2.0
# (Meng et al. 2024), RMiPO 2.0 (the released configs). IMI variants inherit their base loss's default.
DEFAULT_BETA = {
    "dpo": 0.1, "cdpo": 0.1, "robust": 0.1, "ipo": 0.1, "hinge": 0.1, "beta_dpo": 0.1,
    "simpo": 2.0, "rmipo": 2.0, "imi_dpo": 0.1, "imi_ipo": 0.1, "imi_simpo": 2.0,
}

# Config subtrees that never change a result (where a run logs, how it is launched, where it writes);
# the same list as the run records' config hash uses, plus Hydra's own keys.
NON_RESULT_PREFIXES = ("logger", "paths", "sweep_id", "launcher", "progress", "hydra", "run_id", "run_name")

ANNOTATION_COLUMNS = ("setting", "config_id", "config_label", "arm", "arm_kind", "is_default")


def is_imi_method(name: str) -> bool:
    """True for the IMI-regulated methods (run at defaults), False for the β-grid baselines."""
    return name in IMI_METHODS or str(name).startswith("imi_")


def published_default_beta(name: str) -> float | None:
    """The published default β of a method, or None if the suite does not know one."""
    return DEFAULT_BETA.get(name)


def _short(column: str) -> str:
    return "β" if column == "method.beta" else column.split(".")[-1]


def _format_value(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:g}"
    return str(value)


def configuration_columns(frame: pd.DataFrame, config_columns: Iterable[str]) -> list[str]:
    """The columns whose values identify a configuration: SETTING_KEYS, method.name, every method.*
    column, plus any other config column that a sweep varied independently of the seed.

    `config_columns` names the frame's config columns (`LoadedRuns.config_columns`). A column outside
    method.* counts when, within one setting+method configuration, one seed has several values of it
    (e.g. an lr ablation run with the same seeds), or it takes fewer distinct values than there are
    seeds while still varying (the same ablation with fresh seeds). A column that is a one-to-one
    function of the seed (a data seed interpolated from `seed`) does not count. Without this, an
    ablation over a non-method key would be pooled as if its runs were seeds.
    """
    config_columns = [c for c in config_columns if c in frame.columns]
    base = [*SETTING_KEYS, "method.name"]
    base += sorted(c for c in config_columns if c.startswith("method.") and c != "method.name")
    candidates = [c for c in config_columns if c not in base and c != "seed" and not c.startswith(NON_RESULT_PREFIXES)]
    if not candidates or frame.empty or "seed" not in frame.columns:
        return base
    per_config = frame.groupby(base, dropna=False)[[*candidates, "seed"]].nunique(dropna=False)
    per_seed = frame.groupby([*base, "seed"], dropna=False)[candidates].nunique(dropna=False)
    extra = []
    for column in candidates:
        several_per_seed = bool((per_seed[column] > 1).any())
        shared_across_seeds = bool(((per_config[column] > 1) & (per_config[column] < per_config["seed"])).any())
        if several_per_seed or shared_across_seeds:
            extra.append(column)
    return base + sorted(extra)


def setting_labels(frame: pd.DataFrame) -> pd.Series:
    """A readable label per row: the dataset, plus model and setup where the frame has several."""
    parts = [frame["dataset.name"].astype(str)]
    for key in SETTING_KEYS[1:]:
        if frame[key].nunique(dropna=False) > 1:
            parts.append(frame[key].astype(str))
    label = parts[0]
    for part in parts[1:]:
        label = label + " · " + part
    return label


def annotate(frame: pd.DataFrame, config_columns: Sequence[str]) -> pd.DataFrame:
    """A copy of a runs frame with the ANNOTATION_COLUMNS added.

    In:  frame, one row per run, with SETTING_KEYS, method.name, method.beta, seed, config columns.
    Out: the same rows plus
         setting       str   setting label (see `setting_labels`)
         config_id     int   one id per configuration (see `configuration_columns`)
         config_label  str   e.g. "β=0.1", or "β=2, regulator=beta" when other method keys vary
         arm           str   baseline: the method name; IMI: the method name, plus the configuration
                             label when the method has several configurations on that setting
         arm_kind      str   "grid" (baseline) or "fixed" (IMI)
         is_default    bool  the configuration is at the method's published default β (IMI: always)
    """
    out = frame.copy()
    if out.empty:
        for column in ANNOTATION_COLUMNS:
            out[column] = pd.Series(dtype=object)
        return out
    keys = configuration_columns(out, config_columns)
    out["setting"] = setting_labels(out)
    out["config_id"] = out.groupby(keys, dropna=False, sort=True).ngroup()

    labels: dict[int, str] = {}
    varying_by_method: dict[tuple, list[str]] = {}
    for (setting, method), group in out.groupby(["setting", "method.name"], sort=False):
        configs = group.drop_duplicates("config_id")
        varying = [c for c in keys if c not in (*SETTING_KEYS, "method.name", "method.beta")
                   and configs[c].nunique(dropna=False) > 1]
        varying_by_method[(setting, method)] = varying
        for _, row in configs.iterrows():
            shown = (["method.beta"] if pd.notna(row["method.beta"]) else []) + varying
            labels[row["config_id"]] = ", ".join(f"{_short(c)}={_format_value(row[c])}" for c in shown) or "default"
    out["config_label"] = out["config_id"].map(labels)

    imi = out["method.name"].map(is_imi_method).astype(bool)
    out["arm_kind"] = np.where(imi, "fixed", "grid")
    n_configs = out.groupby(["setting", "method.name"])["config_id"].transform("nunique")
    out["arm"] = np.where(imi & (n_configs > 1), out["method.name"] + " (" + out["config_label"] + ")",
                          out["method.name"])
    default = out["method.name"].map(lambda m: published_default_beta(m) if published_default_beta(m) else math.nan)
    at_default = np.isclose(out["method.beta"].astype(float), default.astype(float), rtol=1e-9, atol=0.0)
    out["is_default"] = imi | at_default
    return out
