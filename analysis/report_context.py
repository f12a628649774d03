"""What every section of the report shares: the `Context` (the analysed runs and what was computed on
them) and the cell formats of its tables — a setting's name, a score with its interval, the SFT level
beside it, what a tuned entry was selected on, a saving with its interval. The headline tables use the
same formats (`analysis.headline`), so that their cells read as the report's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.entries import Entry
from analysis.selection import SeedBootstrap
from analysis.tables import fmt_score, fmt_share, with_interval


@dataclass
class Context:
    """Everything the sections share: the analysed runs and what was computed on them."""

    runs: pd.DataFrame
    boot: SeedBootstrap
    summary: pd.DataFrame
    sft: pd.DataFrame
    entries: list[Entry]
    comparison: pd.DataFrame
    metric: str
    options: object
    traps: pd.Series

    @property
    def conf(self) -> str:
        return f"{100 * self.options.confidence:g}%"


def setting_name(setting: str, trap: str) -> str:
    """A setting as per-setting tables show it: trap settings are marked."""
    return f"{setting} (trap)" if isinstance(trap, str) and trap else str(setting)


def settings_column(frame: pd.DataFrame) -> list[str]:
    return [setting_name(s, t) for s, t in zip(frame["setting"], frame["trap"].fillna(""))]


def selected_on_text(kind: str, selected_on: str) -> str:
    if kind == "oracle":
        return "test (oracle)"
    if kind == "tuned":
        return "validation" if selected_on == "validation" else "TEST — not citable"
    return ""


def sft_column(c: Context, settings) -> list[str]:
    """The SFT level with its interval for each of `settings` (the starting point beside every score)."""
    levels = c.sft.set_index("setting")
    return [with_interval(levels.at[s, "level"], levels.at[s, "ci_low"], levels.at[s, "ci_high"], fmt_score)
            if s in levels.index else "–" for s in settings]


def ci(frame: pd.DataFrame, prefix: str, fmt=fmt_score) -> list[str]:
    return [with_interval(e, lo, hi, fmt) for e, lo, hi in
            zip(frame[prefix], frame[f"{prefix}_ci_low"], frame[f"{prefix}_ci_high"])]


def savings_text(frame: pd.DataFrame, field: str) -> list[str]:
    """Savings with their interval; "tuner misses τ" where the tuner never reaches τ (savings would
    read 100%, which says nothing about the arm)."""
    shown = ci(frame, f"savings_{field}", fmt_share)
    return ["tuner misses τ" if math.isinf(t) and v != -math.inf else s
            for s, t, v in zip(shown, frame[f"tuner_{field}"], frame[f"savings_{field}"])]
