"""How runs group for the tuning-cost analysis: settings, configurations, grids and arms (docs/design.md §11).

Owns `annotate`, which adds the setting, configuration and arm columns to a runs frame, so every later step
shares one vocabulary (defined in docs/design.md §11). Method knowledge comes from the records' `method_info`;
only older records fall back to LEGACY_METHOD_INFO. Pure functions; no I/O, no plotting.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from analysis.load import SCHEMA, SETTING_KEYS

# --- records without method_info ------------------------------------------------------------------------
# Records written before run records carried `method_info` (every committed result up to and including
# results/beta_sensitivity and results/quick, and W&B runs logged before then) name their method only.
# These are the facts those records' methods had (docs/design.md §3: IMI methods run at fixed defaults, the
# others are tuned baselines). Frozen: a method added since writes its facts into its own records and
# never needs a line here.
LEGACY_METHOD_INFO: dict[str, dict[str, Any]] = {
    "dpo": {"imi": False, "defaults": {"beta": 0.1}},
    "ipo": {"imi": False, "defaults": {"beta": 0.1, "average_logps": True}},
    "hinge": {"imi": False, "defaults": {"beta": 0.1}},
    "cdpo": {"imi": False, "defaults": {"beta": 0.1, "epsilon": 0.1}},
    "robust": {"imi": False, "defaults": {"beta": 0.1, "epsilon": 0.1}},
    "beta_dpo": {"imi": False, "defaults": {"beta": 0.1, "a": 0.6, "rho": 0.2, "momentum": 0.9}},
    "simpo": {"imi": False, "defaults": {"beta": 2.0, "gamma_beta_ratio": 0.5}},
    "rmipo": {"imi": True, "defaults": {}},
    "imi_dpo": {"imi": True, "defaults": {}},
    "imi_ipo": {"imi": True, "defaults": {}},
    "imi_simpo": {"imi": True, "defaults": {}},
}

# Config subtrees that never change a result: the record schema's list (the one the records' config hash
# leaves out), plus Hydra's own keys and W&B's run names.
NON_RESULT_PREFIXES = (*SCHEMA["non_result_config_keys"], "hydra", "run_id", "run_name")

ANNOTATION_COLUMNS = ("setting", "trap", "config_id", "config_label", "is_imi", "is_default", "n_configs", "arm",
                      "arm_kind")
TRAP_COLUMN = "dataset.trap"


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def _legacy(name: Any) -> dict[str, Any]:
    return LEGACY_METHOD_INFO.get(str(name), {"imi": False, "defaults": {}})


def method_is_imi(frame: pd.DataFrame) -> pd.Series:
    """Per run: the record's `method_info.imi`; for a record without it, LEGACY_METHOD_INFO's (a method
    unknown there counts as a baseline). (bool)"""
    recorded = frame["method_info.imi"] if "method_info.imi" in frame.columns else pd.Series(None, index=frame.index)
    return pd.Series([bool(r) if _present(r) else bool(_legacy(name)["imi"])
                      for r, name in zip(recorded, frame["method.name"])], index=frame.index, dtype=bool)


def method_defaults(frame: pd.DataFrame) -> pd.Series:
    """Per run: its method's published defaults {key: value}, from `method_info.defaults.<key>`; for a
    record without method_info, LEGACY_METHOD_INFO's (empty when unknown there)."""
    columns = [c for c in frame.columns if c.startswith("method_info.defaults.")]
    has_info = (frame["method_info.imi"].map(_present) if "method_info.imi" in frame.columns
                else pd.Series(False, index=frame.index))
    # one pass over the rows as dicts: a scalar lookup per row and column costs seconds on a baseline's runs
    recorded = frame[columns].rename(columns=lambda c: c.removeprefix("method_info.defaults.")).to_dict("records")
    out = [{k: v for k, v in row.items() if _present(v)} if info else dict(_legacy(name)["defaults"])
           for name, info, row in zip(frame["method.name"], has_info, recorded)]
    return pd.Series(out, index=frame.index, dtype=object)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))
    return str(a) == str(b)


def at_defaults(frame: pd.DataFrame, defaults: pd.Series) -> pd.Series:
    """Per run: every default its method declares equals the run's `method.<key>` (keys the config
    does not record are not compared). False when no default is known."""
    columns = sorted({f"method.{k}" for wanted in defaults for k in wanted} & set(frame.columns))
    out = []
    for wanted, row in zip(defaults, frame[columns].to_dict("records")):
        keys = [k for k in wanted if f"method.{k}" in row and _present(row[f"method.{k}"])]
        out.append(bool(keys) and all(_same(row[f"method.{k}"], wanted[k]) for k in keys))
    return pd.Series(out, index=frame.index, dtype=bool)


def off_defaults(frame: pd.Series | pd.DataFrame, defaults: pd.Series) -> pd.Series:
    """Per run: "key=value" for each default its method declares that the run's `method.<key>` breaks (in
    the defaults' order), e.g. ["gamma_beta_ratio=0"] for SimPO at γ/β = 0: what a label that shows only
    the keys a sweep varied leaves unsaid."""
    out = []
    for wanted, (_, row) in zip(defaults, frame.iterrows()):
        out.append([f"{_short('method.' + k)}={_format_value(row[f'method.{k}'])}" for k, v in wanted.items()
                    if f"method.{k}" in row and _present(row[f"method.{k}"]) and not _same(row[f"method.{k}"], v)])
    return pd.Series(out, index=frame.index, dtype=object)


def _short(column: str) -> str:
    return "β" if column == "method.beta" else column.split(".")[-1]


def _format_value(value) -> str:
    if not _present(value):  # a key the config left null (or an older record lacks): as a Hydra override spells it
        return "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


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


def setting_traps(frame: pd.DataFrame) -> pd.Series:
    """Per run: its setting's trap text ("" for a clean-label setting), the first non-empty
    `dataset.trap` among the setting's runs. In: a frame with a "setting" column."""
    if TRAP_COLUMN not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    text = frame[TRAP_COLUMN].map(lambda v: str(v).strip() if _present(v) else "")
    first = text[text != ""].groupby(frame["setting"]).first()
    return frame["setting"].map(first).astype(object).fillna("")


def annotate(frame: pd.DataFrame, config_columns: Sequence[str]) -> pd.DataFrame:
    """A copy of a runs frame with the ANNOTATION_COLUMNS added.

    In:  frame, one row per run, with SETTING_KEYS, method.name, method.beta, seed, config columns.
    Out: the same rows plus
         setting       str   setting label (see `setting_labels`)
         trap          str   the setting's trap text, "" when clean (see `setting_traps`)
         config_id     int   one id per configuration (see `configuration_columns`)
         config_label  str   e.g. "β=0.1", or "β=2, gamma_beta_ratio=0.5" when other method keys vary, then
                             any declared default the configuration breaks that those leave unsaid
         is_imi        bool  IMI-regulated method (see `method_is_imi`)
         is_default    bool  the configuration is at its method's defaults (IMI arms: always, they are
                             run at their defaults by design)
         n_configs     int   configurations of this method on this setting
         arm, arm_kind str   docs/design.md §11 ("grid" or "fixed")
    """
    out = frame.copy()
    if out.empty:
        for column in ANNOTATION_COLUMNS:
            out[column] = pd.Series(dtype=object)
        return out
    keys = configuration_columns(out, config_columns)
    out["setting"] = setting_labels(out)
    out["trap"] = setting_traps(out)
    out["config_id"] = out.groupby(keys, dropna=False, sort=True).ngroup()

    defaults = method_defaults(out)
    # a label names β and the keys the method's sweep varied, then any declared default the configuration
    # breaks that those leave unsaid: one SimPO run at γ/β = 0 reads "β=2, gamma_beta_ratio=0", not "β=2"
    broken = off_defaults(out, defaults)
    labels: dict[int, str] = {}
    for (setting, method), group in out.groupby(["setting", "method.name"], sort=False):
        configs = group.drop_duplicates("config_id")
        varying = [c for c in keys if c not in (*SETTING_KEYS, "method.name", "method.beta")
                   and configs[c].nunique(dropna=False) > 1]
        for index, row in configs.iterrows():
            shown = (["method.beta"] if pd.notna(row["method.beta"]) else []) + varying
            parts = [f"{_short(c)}={_format_value(row[c])}" for c in shown]
            parts += [k for k in broken[index] if k not in parts]
            labels[row["config_id"]] = ", ".join(parts) or "default"
    out["config_label"] = out["config_id"].map(labels)

    imi = method_is_imi(out)
    out["is_imi"] = imi
    out["is_default"] = imi | at_defaults(out, defaults)
    out["n_configs"] = out.groupby(["setting", "method.name"])["config_id"].transform("nunique").astype(int)
    grid = ~imi & (out["n_configs"] >= 2)
    out["arm_kind"] = np.where(grid, "grid", "fixed")
    single_baseline = np.where(out["is_default"], out["method.name"] + " (default)",
                               out["method.name"] + " (" + out["config_label"] + ")")
    imi_name = np.where(out["n_configs"] > 1, out["method.name"] + " (" + out["config_label"] + ")", out["method.name"])
    out["arm"] = np.where(grid, out["method.name"], np.where(imi, imi_name, single_baseline))
    return out
