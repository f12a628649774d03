"""The report's closing sections: the shared one-off builds with their costs and the time spent
waiting on locks and queues (section 10 of report.md), and the runs left out of the analysis with the
reason, beside tables/runs.csv, every loaded run with all its columns.
"""
from __future__ import annotations

import json

from analysis.costs import shared_build_costs
from analysis.load import CURVE_COLUMN, LoadedRuns
from analysis.report_context import Context
from analysis.tables import display, fmt_cost, fmt_count, fmt_text


def shared_costs_section(w, c: Context) -> None:
    builds = shared_build_costs(c.runs)
    w.text("## 10. Shared one-off builds and waiting time\n\n"
           "Each unique build (kind, key) with its cost and the loaded runs that used it; under the "
           f"**{c.options.convention}** convention in force they are charged as the header says.")
    if not builds.empty:
        shown = display(builds, {"kind": ("kind", fmt_text), "key": ("key", fmt_text), "n_runs": ("runs using it", fmt_count),
                                 "n_builds": ("runs that built it", fmt_count), "flops": ("FLOPs", fmt_cost),
                                 "device_hours": ("device-h", fmt_cost), "wall_s": ("wall s", fmt_cost)})
        w.table("shared_costs", builds, shown, "One-off shared build costs")
    if "cost.wait_s" in c.runs and c.runs["cost.wait_s"].notna().any():
        waits = c.runs.groupby("arm")["cost.wait_s"].agg(["sum", "mean"])
        w.text(f"Waiting on cache locks and queues (never charged as compute): {fmt_cost(c.runs['cost.wait_s'].sum())} s "
               f"in all; per arm, total (mean per run): "
               + "; ".join(f"{a} {fmt_cost(r['sum'])} s ({fmt_cost(r['mean'])} s)" for a, r in waits.iterrows()) + ".")
    else:
        w.text("The records do not report waiting time (`cost.wait_s`; older records).")


def write_runs_csv(w, loaded: LoadedRuns) -> None:
    """tables/runs.csv: every loaded run with all its columns (the validation curve as JSON)."""
    frame = loaded.runs.drop(columns=[c for c in loaded.runs.columns if c.startswith("provenance.packages.")])
    if CURVE_COLUMN in frame.columns:
        frame = frame.assign(**{CURVE_COLUMN: frame[CURVE_COLUMN].map(lambda c: json.dumps(c) if c else "")})
    path = w.tables / "runs.csv"
    w.tables.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    w.files.append(path)


def skipped_section(w, loaded: LoadedRuns) -> None:
    w.text(f"## Runs left out\n\n{loaded.skip_summary()}.")
    if not loaded.skipped.empty:
        shown = display(loaded.skipped, {"run_id": ("run", fmt_text), "skip": ("why", fmt_text), "reason": ("detail", fmt_text)})
        w.table("skipped_runs", loaded.skipped, shown, "Runs left out of the analysis, with the reason")
    write_runs_csv(w, loaded)
    w.text(f"Every loaded run with all its columns: `tables/runs.csv` ({len(loaded.runs)} rows).")
