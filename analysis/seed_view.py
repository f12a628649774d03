"""The headline's per-seed view: the runs behind the comparison, one row per configuration (docs/design.md §11,
"The headline").

A comparison row is a mean over seeds with an interval; a reader checking it wants the runs under it: each
seed's paired Δ vs the SFT model, and the ranges of what else the records measured (KL, lm-eval accuracy,
how much an IMI regulator acted, wall time). Nothing here is estimated — every cell is a run's value or a
min–max over seeds — so results READMEs can embed it between headline markers instead of hand-made tables.
Pure functions over the report's runs; no I/O.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from analysis.grid import at_defaults, method_defaults
from analysis.report_context import setting_name
from analysis.sft_level import delta_column, reference_column
from analysis.tables import fmt_signed, to_markdown

SFT_ROW = "SFT (reference)"
LM_EVAL_ACC = re.compile(r"^lm_eval/(?P<task>[^/]+)/acc$")
# (heading, column, format of one value): shown where any run has the column
RANGES = (("KL (nats)", "kl", "{:.3g}"),
          ("acting share", "imi/acting_share", "{:.2f}"),
          ("wall (s)", "cost.total_s", "{:.0f}"))


def _range(values: pd.Series, fmt: str) -> str:
    """min–max of the present values, one value when both print alike, "–" when none."""
    values = values.dropna()
    if values.empty:
        return "–"
    low, high = fmt.format(values.min()), fmt.format(values.max())
    return low if low == high else f"{low}–{high}"


def _per_seed(values: pd.Series, seeds: pd.Series) -> tuple[list[int], list[float]]:
    """Each seed's value (the mean of its runs, where a seed has several), seeds ascending."""
    means = values.groupby(seeds.to_numpy()).mean().sort_index()
    return [int(s) for s in means.index], [float(v) for v in means]


def range_columns(runs: pd.DataFrame) -> list[tuple[str, str, str, str | None]]:
    """(heading, column, format, the SFT model's column or None) of every range the runs can fill: each
    lm-eval task's accuracy (its SFT value from "reference_<column>"), then RANGES."""
    out = []
    for column in sorted(c for c in runs.columns if LM_EVAL_ACC.match(c)):
        if runs[column].notna().any():
            sft = f"reference_{column}"
            out.append((f"lm-eval {LM_EVAL_ACC.match(column)['task']} acc", column, "{:.3f}",
                        sft if sft in runs.columns and runs[sft].notna().any() else None))
    out += [(h, c, f, None) for h, c, f in RANGES if c in runs.columns and runs[c].notna().any()]
    return out


def method_order(runs: pd.DataFrame, baseline: str, arms: tuple[str, ...] | None) -> list[str]:
    """Methods shown: `arms` in its order, else the baseline, then IMI methods, then the rest, each by name."""
    present = runs.groupby("method.name")["is_imi"].first()
    if arms is not None:
        unknown = [m for m in arms if m not in present.index]
        if unknown:
            raise ValueError(f"--arms {', '.join(unknown)}: no run of that method in the records; "
                             f"methods with runs: {sorted(present.index)}")
        return list(arms)
    rank = {m: (m != baseline, not bool(imi), m) for m, imi in present.items()}
    return sorted(present.index, key=rank.get)


def seeds_table(runs: pd.DataFrame, metric: str, baseline: str, arms: tuple[str, ...] | None = None,
                clean: bool = False) -> pd.DataFrame:
    """One row per setting and configuration: the per-seed view's cells, as strings.

    In:  the report's annotated runs (`headline_views.report_runs`: setting, trap, config_id, config_label,
         is_default, is_imi, method.name, seed, `metric` and "delta_sft/<metric>").
    Out: setting, configuration ("dpo β=0.1 (default)": method, config label, "(default)" where every
         declared default holds), seeds ("0,1,2"), per seed (Δ vs SFT per seed; on
         the SFT row, the SFT model's own `metric`), mean Δ vs SFT, then one min–max column per
         `range_columns` entry. Per setting the SFT row comes first when the records know the SFT level,
         then configurations by `method_order`, each method's by β, its default first, then by label. Clean settings first
         (`clean`: alone).
    """
    delta = delta_column(metric)
    ranges = range_columns(runs)
    trap = runs["trap"].fillna("").astype(str)
    if clean:
        runs, trap = runs[trap == ""], trap[trap == ""]
    if runs.empty:
        raise ValueError("no clean setting has runs")
    order = method_order(runs, baseline, arms)
    # "(default)" only where every default the method declares holds: the report counts an IMI arm as its
    # default by design, but an ablation of one (another marginal context, say) is not
    runs = runs.assign(_at_defaults=at_defaults(runs, method_defaults(runs)))
    sft_column = reference_column(runs, metric)
    rows = []
    for setting in sorted(runs["setting"].unique(), key=lambda s: (bool((trap[runs["setting"] == s] != "").any()), s)):
        here = runs[runs["setting"] == setting]
        name = setting_name(setting, here["trap"].iloc[0] if "trap" in here else "")
        if sft_column is not None:
            seeds, levels = _per_seed(here[sft_column], here["seed"])
            row = {"setting": name, "configuration": SFT_ROW, "seeds": ",".join(map(str, seeds)),
                   "per seed": " / ".join(f"{v:.3f}" for v in levels), "mean Δ vs SFT": "–"}
            for heading, _, fmt, sft in ranges:
                row[heading] = _range(here[sft], fmt) if sft else "–"
            rows.append(row)
        shown = here[here["method.name"].isin(order)]
        configs = (shown.groupby("config_id").agg(method=("method.name", "first"), label=("config_label", "first"),
                                                  default=("_at_defaults", "first"), beta=("method.beta", "first"))
                   .assign(_m=lambda f: f["method"].map(order.index), _ablation=lambda f: ~f["default"].astype(bool))
                   .sort_values(["_m", "beta", "_ablation", "label"], kind="stable"))
        for config_id, c in configs.iterrows():
            group = shown[shown["config_id"] == config_id]
            seeds, deltas = _per_seed(group[delta], group["seed"])
            known = [d for d in deltas if np.isfinite(d)]
            row = {"setting": name, "configuration": f"{c['method']} {c['label']}" + (" (default)" if c["default"] else ""),
                   "seeds": ",".join(map(str, seeds)),
                   "per seed": " / ".join(fmt_signed(d) for d in deltas),
                   "mean Δ vs SFT": fmt_signed(np.mean(known)) if known else "–"}
            for heading, column, fmt, _ in ranges:
                row[heading] = _range(group[column], fmt)
            rows.append(row)
    return pd.DataFrame(rows)


def seeds_markdown(table: pd.DataFrame, metric: str) -> str:
    """The per-seed view: its table and the lines that define its cells."""
    headings = set(table.columns)
    parts = []
    if any(h.startswith("lm-eval ") for h in headings):
        parts.append("lm-eval = the run's accuracy on that task (the SFT row: the SFT model's, on the same items)")
    if "KL (nats)" in headings:
        parts.append("KL = the run's `kl`, its sequence-level KL from the SFT model on the test prompts")
    if "acting share" in headings:
        parts.append("acting share = the run's mean share of pairs whose loss gradient the IMI regulator moves by "
                     "≥ 10% from its base at the same β (docs/design.md §4)")
    if "wall (s)" in headings:
        parts.append("wall = the whole run's seconds, any shared build it made included (machine- and "
                     "load-dependent)")
    ranges = ("; ranges are min–max over seeds: " + "; ".join(parts)) if parts else ""
    return (to_markdown(table) + "\n\n"
            f"*The runs behind the comparison. per seed = each seed's `{metric}` on the test prompts less the SFT "
            "model's on the same prompts (Δ vs SFT, paired per run; a seed with several runs: their mean); the SFT "
            f"row gives the SFT model's own `{metric}` per seed. mean Δ vs SFT = the mean over seeds (no interval: "
            f"the comparison view has them){ranges}.*\n")
