"""Is a report citable (DESIGN §11a)? The checks behind the verdict in its header.

A report is citable only when all of these hold; each failure is one loud label:
    "not citable: <n> seeds"               some configuration has fewer than CITABLE_SEEDS seeds (the
                                           intervals' coverage is checked by simulation at 5 seeds)
    "smoke test, not citable"              some run's config says `budget: fast`
    "selection on test data: not citable"  some tuned arm had to select its configuration on the test
                                           scores, because its runs lack "val/<metric>" (older records, or
                                           a metric evaluated on test only)
Caveats that do not decide citability (e.g. fewer bootstrap replicates than the expanded interval's
tail needs) are listed as details. Pure functions; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.entries import Entry
from analysis.selection import validation_column
from analysis.stats import CITABLE_SEEDS, RECOMMENDED_REPLICATES


@dataclass
class Citability:
    labels: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def citable(self) -> bool:
        return not self.labels

    def headline(self) -> str:
        return "**Citable** (DESIGN §11a)" if self.citable else "**" + "; ".join(self.labels) + "**"


def citability(runs: pd.DataFrame, entries: list[Entry], metric: str, n_boot: int) -> Citability:
    """The verdict over the analysed runs (annotated, with `metric`) and their entries."""
    out = Citability()
    seeds = runs.groupby("config_id")["seed"].size()
    fewest = int(seeds.min()) if len(seeds) else 0
    if fewest < CITABLE_SEEDS:
        out.labels.append(f"not citable: {fewest} seeds")
        short = runs[runs["config_id"].isin(seeds[seeds < CITABLE_SEEDS].index)]
        out.details.append(f"{short['config_id'].nunique()} configurations have fewer than {CITABLE_SEEDS} seeds "
                           f"(the smallest has {fewest}); citable presets use ≥ {CITABLE_SEEDS}.")
    if "budget" in runs.columns and runs["budget"].astype(str).eq("fast").any():
        out.labels.append("smoke test, not citable")
        out.details.append(f"{int(runs['budget'].astype(str).eq('fast').sum())} runs use `budget: fast` "
                           "(a smoke-test budget).")
    on_test = [e for e in entries if e.kind == "tuned" and e.choice.selected_on == "test"]
    if on_test:
        out.labels.append("selection on test data: not citable")
        where = ", ".join(sorted({f"{e.name} on {e.setting}" for e in on_test}))
        missing = int(runs[validation_column(metric)].isna().sum()) if validation_column(metric) in runs else len(runs)
        out.details.append(f"{missing} runs have no `{validation_column(metric)}` (older records, or a metric the "
                           "records evaluate on the test prompts only), so these tuned arms selected their "
                           f"configuration on the test scores they report: {where}.")
    if n_boot < RECOMMENDED_REPLICATES:
        out.details.append(f"{n_boot} bootstrap replicates: fewer than the {RECOMMENDED_REPLICATES} that resolve the "
                           "expanded interval's tail quantiles, so interval ends are coarse.")
    return out
