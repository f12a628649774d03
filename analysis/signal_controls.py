"""What the IMI signal is: each IMI configuration on ΔPMI against the same configuration on a control signal
(docs/design.md §4 "Signal controls", §11 "Signal controls"). Pure functions over an annotated runs frame and
its paired seed bootstrap; no I/O.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.selection import SeedBootstrap

SIGNAL_COLUMN = "method.signal"
PMI = "pmi"
# The controls in the order the table shows them; `pmi_residual` last: it asks whether what pmi gains survives
# without its length component, the others whether pmi gains anything at all.
CONTROLS = ("length", "shuffled", "constant", "pmi_residual")
DIAGNOSTICS = ("imi/corr_length", "imi/corr_margin")


def has_signal_controls(runs: pd.DataFrame) -> bool:
    """The runs hold at least one IMI configuration on ΔPMI and one on a control."""
    if SIGNAL_COLUMN not in runs.columns:
        return False
    signals = set(runs.loc[runs["is_imi"].astype(bool), SIGNAL_COLUMN].dropna())
    return PMI in signals and bool(signals & set(CONTROLS))


def _partner_key(row: pd.Series, columns: list[str]) -> tuple:
    return tuple("" if pd.isna(row[c]) else str(row[c]) for c in columns)


def signal_control_table(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, confidence: float) -> pd.DataFrame:
    """Per setting, IMI method and control: pmi − control, paired by seed.

    In: annotated runs (setting, config_id, is_imi, method.*, seed, `metric`) and their bootstrap. A control
    configuration is paired with the pmi configuration that equals it in every other method.* key.
    Out, one row per pair: setting, trap, method, control, n_seeds, pmi (mean over seeds of `metric`), score
    (the control's), delta (pmi − control) with delta_ci_low/high (the report's seed interval over the paired
    replicates), verdict ("pmi better", "control better", "no difference shown"), and the pmi configuration's
    mean signal diagnostics corr_length and corr_margin (NaN where the records lack them).
    """
    columns = ["setting", "trap", "method", "control", "n_seeds", "pmi", "score", "delta", "delta_ci_low",
               "delta_ci_high", "verdict", "corr_length", "corr_margin"]
    if not has_signal_controls(runs):
        return pd.DataFrame(columns=columns)
    imi = runs[runs["is_imi"].astype(bool) & runs[SIGNAL_COLUMN].notna()]
    other_keys = sorted(c for c in imi.columns if c.startswith("method.") and c != SIGNAL_COLUMN)
    configs = imi.drop_duplicates("config_id")
    rows = []
    for (setting, method), group in configs.groupby(["setting", "method.name"], sort=True):
        pmi_ids = {_partner_key(r, other_keys): int(r["config_id"]) for _, r in group.iterrows() if r[SIGNAL_COLUMN] == PMI}
        for control in CONTROLS:
            for _, row in group[group[SIGNAL_COLUMN] == control].iterrows():
                pmi_id = pmi_ids.get(_partner_key(row, other_keys))
                if pmi_id is None:
                    continue
                pmi_score, score, delta, low, high, n = boot.paired_difference(runs, pmi_id, int(row["config_id"]),
                                                                               metric, confidence)
                verdict = ("pmi better" if low > 0 else "control better" if high < 0 else "no difference shown")
                diagnostics = {key: float(np.nanmean(boot.values(runs, pmi_id, key)))
                               if np.isfinite(boot.values(runs, pmi_id, key)).any() else math.nan for key in DIAGNOSTICS}
                rows.append({"setting": setting, "trap": row["trap"], "method": method, "control": control,
                             "n_seeds": n, "pmi": pmi_score, "score": score, "delta": delta,
                             "delta_ci_low": low, "delta_ci_high": high, "verdict": verdict,
                             "corr_length": diagnostics["imi/corr_length"],
                             "corr_margin": diagnostics["imi/corr_margin"]})
    return pd.DataFrame(rows, columns=columns)


def signal_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per setting and method, what the pmi − control intervals say (docs/design.md §11, "Signal controls").

    Out columns: setting, trap, method, beats (the controls among length, shuffled, constant whose interval
    puts pmi above them, comma-separated), residual_keeps (pmi − pmi_residual's interval contains 0: the
    length-free signal does as well; NaN without that row) and reading, the first that holds of:
    "per-pair values not shown to matter here" (pmi beats neither shuffled nor constant: the regulator acts as a
    constant margin), "not shown to be more than a length prior here" (pmi does not beat length), "more than a length
    prior here" (pmi beats length and the residual keeps what pmi does), "more than length, but not its
    length-free part alone" (pmi beats length, the residual does worse).
    """
    rows = []
    for (setting, method), group in table.groupby(["setting", "method"], sort=True):
        by_control = group.set_index("control")

        def beats(control: str) -> bool:
            return control in by_control.index and by_control.loc[control, "verdict"] == "pmi better"

        keeps = (math.nan if "pmi_residual" not in by_control.index else
                 bool(by_control.loc["pmi_residual", "delta_ci_low"] <= 0 <= by_control.loc["pmi_residual", "delta_ci_high"]))
        if not (beats("shuffled") or beats("constant")):
            reading = "per-pair values not shown to matter here"
        elif not beats("length"):
            reading = "not shown to be more than a length prior here"
        elif keeps is True:
            reading = "more than a length prior here"
        else:
            reading = "more than length, but not its length-free part alone"
        rows.append({"setting": setting, "trap": group["trap"].iloc[0], "method": method,
                     "beats": ", ".join(c for c in CONTROLS[:3] if beats(c)), "residual_keeps": keeps,
                     "reading": reading})
    return pd.DataFrame(rows, columns=["setting", "trap", "method", "beats", "residual_keeps", "reading"])
