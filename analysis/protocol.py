"""Is a report citable (docs/design.md §11a)? The checks behind the verdict in its header.

Each failed check is one loud label (`citability` lists them), so that a number is never cited by accident;
caveats that do not decide citability are listed as details. Also decides whether a report may call its
prompt sets disjoint and a score held-out (`prompt_sets_text`). Pure functions; no I/O.
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
        return "**Citable** (docs/design.md §11a)" if self.citable else "**" + "; ".join(self.labels) + "**"


def citability(runs: pd.DataFrame, entries: list[Entry], metric: str, n_boot: int) -> Citability:
    """The verdict over the analysed runs (annotated, with `metric`) and their entries.

    A report is citable only when no label applies:
        "not citable: <n> seeds"               some configuration has fewer than CITABLE_SEEDS seeds (the
                                               intervals' coverage is checked by simulation at 5 seeds)
        "smoke test, not citable"              some run's config says `budget: fast`
        "selection on test data: not citable"  some tuned arm had to select on the test scores, its runs
                                               lacking "val/<metric>" (older records, or a test-only metric)
        "prompt sets overlap: not citable"     some run counts prompts shared between two of its prompt sets
                                               (`data.prompt_sets.overlaps.<a>|<b>` > 0)
        "prompt-set overlap not measured: not citable"   some run carries no `data.prompt_sets` (older records)
        "records of <n> code versions: not citable"      the runs of one setting were made by different code
                                               (`provenance.code_fingerprint`, or none recorded beside one)
    Caveats that do not decide citability (e.g. fewer replicates than the expanded interval's tail needs)
    go into `details` only.
    """
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
    overlaps = prompt_overlaps(runs)
    shared = overlaps[overlaps["max_count"] > 0]
    if len(shared):
        out.labels.append("prompt sets overlap: not citable")
        out.details.append("The records count prompts shared between two prompt sets of a run: "
                           + "; ".join(overlap_phrases(shared)) + ".")
    unmeasured = unmeasured_runs(runs)
    if unmeasured.any():
        out.labels.append("prompt-set overlap not measured: not citable")
        out.details.append(f"{int(unmeasured.sum())} of {len(runs)} runs carry no `data.prompt_sets` (records older "
                           "than the prompt-set overlap count; on "
                           f"{', '.join(sorted(runs.loc[unmeasured, 'setting'].unique()))}), so whether their prompt "
                           "sets share prompts is not measured.")
    versions = code_versions(runs)
    mixed = versions[versions["n_versions"] > 1]
    if len(mixed):
        out.labels.append(f"records of {int(mixed['n_versions'].max())} code versions: not citable")
        out.details.append("Runs of one setting were made by different code (provenance.code_fingerprint): "
                           + "; ".join(f"{row.setting}: {row.versions}" for row in mixed.itertuples())
                           + ". Re-run them with one checkout (a sweep re-runs records made by other code).")
    if n_boot < RECOMMENDED_REPLICATES:
        out.details.append(f"{n_boot} bootstrap replicates: fewer than the {RECOMMENDED_REPLICATES} that resolve the "
                           "expanded interval's tail quantiles, so interval ends are coarse.")
    return out


# ---------------------------------------------------------------------------------------------
# Prompt sets: what the records measure about their overlap (docs/design.md §11a)

OVERLAP_PREFIX = "data.prompt_sets.overlaps."


def overlap_columns(runs: pd.DataFrame) -> list[str]:
    """The records' overlap counts, "data.prompt_sets.overlaps.<a>|<b>", in column order."""
    return [c for c in runs.columns if c.startswith(OVERLAP_PREFIX)]


def unmeasured_runs(runs: pd.DataFrame) -> pd.Series:
    """Per run (bool, runs' index): True where it carries no overlap count at all (records older than
    `data.prompt_sets`)."""
    columns = overlap_columns(runs)
    if not columns:
        return pd.Series(True, index=runs.index)
    return runs[columns].isna().all(axis=1)


def prompt_overlaps(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setting and pair of prompt sets the records measure: the largest count of shared prompts over
    the setting's runs and how many runs share any. Out: setting, pair ("<a>|<b>"), max_count,
    runs_with_overlap, runs_measured (one row per measured pair; empty when nothing is measured)."""
    rows = []
    for setting, group in runs.groupby("setting", sort=True):
        for column in overlap_columns(group):
            counts = pd.to_numeric(group[column], errors="coerce").dropna()
            if counts.empty:
                continue
            rows.append({"setting": setting, "pair": column.removeprefix(OVERLAP_PREFIX),
                         "max_count": int(counts.max()), "runs_with_overlap": int((counts > 0).sum()),
                         "runs_measured": len(counts)})
    return pd.DataFrame(rows, columns=["setting", "pair", "max_count", "runs_with_overlap", "runs_measured"])


def overlap_phrases(shared: pd.DataFrame) -> list[str]:
    """"<setting>: <a> and <b> share up to <n> prompts (<k> of <m> runs)" per row of `prompt_overlaps`."""
    out = []
    for row in shared.itertuples(index=False):
        first, _, second = row.pair.partition("|")
        count = "1 prompt" if row.max_count == 1 else f"{row.max_count} prompts"
        out.append(f"{row.setting}: {first} and {second or '?'} share up to {count} "
                   f"({row.runs_with_overlap} of {row.runs_measured} runs)")
    return out


def prompt_sets_text(runs: pd.DataFrame) -> str:
    """How a report may describe its validation and test prompt sets: "disjoint" (and scores on them
    held-out) only where every run measures its overlaps and every count is 0; otherwise what the records
    show, in words that claim neither (the report's wording guard, docs/design.md §11a)."""
    overlaps = prompt_overlaps(runs)
    if not unmeasured_runs(runs).any() and not overlaps.empty and (overlaps["max_count"] == 0).all():
        pairs = sorted(set(overlaps["pair"]))
        return ("a prompt set disjoint from the test prompts (the records count 0 shared prompts for every pair of "
                f"prompt sets they measure: {', '.join(f'`{p}`' for p in pairs)}), so test scores are held-out")
    if (overlaps["max_count"] > 0).any():
        return ("a separate prompt set, but the records count prompts shared between prompt sets (see the verdict), "
                "so selection and test may score the same prompts")
    return "a separate prompt set; whether it shares prompts with the test set is not measured (see the verdict)"


# ----------------------------------------------------------------------------------------------------------
# Code versions: which code made each setting's records (docs/design.md §9)

FINGERPRINT_COLUMN = "provenance.code_fingerprint"


def code_versions(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setting: n_versions (distinct code fingerprints, "not recorded" counting as one) and versions
    ("<fingerprint> (<n> runs), ..."). Shape: one row per setting."""
    fingerprints = (runs[FINGERPRINT_COLUMN] if FINGERPRINT_COLUMN in runs.columns
                    else pd.Series(None, index=runs.index, dtype=object)).fillna("not recorded").astype(str)
    rows = []
    for setting, group in fingerprints.groupby(runs["setting"]):
        counts = group.value_counts().sort_index()
        rows.append({"setting": setting, "n_versions": len(counts),
                     "versions": ", ".join(f"{fp} ({n} runs)" for fp, n in counts.items())})
    return pd.DataFrame(rows, columns=["setting", "n_versions", "versions"])
