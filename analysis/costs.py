"""What runs and tuning procedures cost (docs/design.md §8, §11, §11a).

Own cost of a run: its `cost.flops`, `cost.device_hours`, `cost.total_s`. bench times the setup phase
in which a run builds a missing shared cache (SFT checkpoint, dataset, reference terms), so a run that
built one (`cost.shared.<kind>.hit` = false) has the build inside its own wall time and device-hours:
it is taken out first, so no build is counted twice. bench's FLOPs count only the tokens the run
trains on and scores, never a build, so nothing is taken out of them. Time spent waiting on cache
locks or queues (`cost.wait_s`) is already outside all of these and is never charged as compute.

Shared one-off builds, under a convention (each unique `cost.shared.<kind>.key` is one build):
    "per_procedure" (default)  a tuning procedure — an arm on a setting: a baseline's whole grid or
                  tuner, or the single run of an IMI method — pays every distinct build its runs used
                  once, plus the runs' own costs. What a practitioner who tunes (or does not) pays.
    "amortize"    each build is charged once, divided equally over the loaded runs that used it.
    "per_run"     every run pays the full build of every cache it used, as if it ran alone.
Per run, "charged.<q>" (q = flops, device_hours, wall_s) is the own cost plus the run's share of the
builds under "amortize" / "per_run" and the own cost alone under "per_procedure"; `procedure_builds`
gives the once-per-procedure part ("per_procedure") or 0 (the others). A procedure's cost is always
Σ charged costs of what it ran + procedure_builds of its runs.

FLOPs are the primary cost (they do not depend on a shared machine's load); device-hours beside them.
Pure functions over DataFrames; no I/O, no plotting.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

CONVENTIONS = ("per_procedure", "amortize", "per_run")
DEFAULT_CONVENTION = "per_procedure"
# (own cost column, shared entry field, charged column, whether a build is inside the own cost)
QUANTITIES = (
    ("cost.flops", "flops", "charged.flops", False),
    ("cost.device_hours", "device_hours", "charged.device_hours", True),
    ("cost.total_s", "wall_s", "charged.wall_s", True),
)
CHARGED_COLUMNS = tuple(q[2] for q in QUANTITIES)
# The costs a tuning comparison reports, primary first.
COST_FIELDS = ("flops", "device_hours")


def shared_kinds(frame: pd.DataFrame) -> list[str]:
    """The shared-cache kinds present in the records, e.g. ["dataset", "reference", "sft"]."""
    kinds = {m.group(1) for c in frame.columns if (m := re.fullmatch(r"cost\.shared\.([^.]+)\.key", c))}
    return sorted(kinds)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return pd.to_numeric(frame[name], errors="coerce")
    return pd.Series(math.nan, index=frame.index)


def _is_false(values: pd.Series) -> pd.Series:
    return values.map(lambda v: v is False or (isinstance(v, (int, float, np.bool_)) and not pd.isna(v) and not v))


def shared_field(frame: pd.DataFrame, kind: str, field: str) -> pd.Series:
    """Per run, the build cost `field` (wall_s, device_hours, flops) its `kind` cache reports.

    Cache entries store wall_s and, where the builder counts them, flops; device-hours missing from an
    entry are wall_s × the run's cost.device_count / 3600 (the devices the job held while building).
    FLOPs an entry does not report (e.g. the dataset build) stay NaN and are charged as 0.
    """
    values = _column(frame, f"cost.shared.{kind}.{field}")
    if field == "device_hours":
        devices = _column(frame, "cost.device_count").fillna(1.0)
        values = values.fillna(_column(frame, f"cost.shared.{kind}.wall_s") * devices / 3600.0)
    return values


def shared_build_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per unique shared cache: kind, key, n_runs (loaded runs that used it), n_builds (runs
    that built it, hit = false), device_hours, flops, wall_s.

    The build cost is the mean over the runs that built it; when every loaded run hit the cache (it
    was built by an earlier sweep), the median of the build cost the hits report.
    """
    rows = []
    for kind in shared_kinds(frame):
        prefix = f"cost.shared.{kind}."
        keys = frame[prefix + "key"]
        built = _is_false(frame[prefix + "hit"]) if prefix + "hit" in frame else pd.Series(False, index=frame.index)
        for key, users in frame[keys.notna()].groupby(keys[keys.notna()], sort=True):
            builders = users[built.loc[users.index]]
            row = {"kind": kind, "key": key, "n_runs": len(users), "n_builds": len(builders)}
            for _, field, _, _ in QUANTITIES:
                values = shared_field(frame, kind, field).loc[(builders if len(builders) else users).index]
                row[field] = values.mean() if len(builders) else values.median()
            rows.append(row)
    return pd.DataFrame(rows, columns=["kind", "key", "n_runs", "n_builds", *[q[1] for q in QUANTITIES]])


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"cost convention must be one of {CONVENTIONS}, got {convention!r}")


def charged_costs(frame: pd.DataFrame, convention: str = DEFAULT_CONVENTION) -> pd.DataFrame:
    """Per-run cost under a shared-cost convention (see the module docstring).

    In:  runs frame with cost.* columns. Out: a frame with the same index and columns
         charged.flops, charged.device_hours, charged.wall_s (NaN where the run reports no own cost).
         A build taken out of a run's own cost never makes it negative (clipped at 0).
    """
    _check_convention(convention)
    out = pd.DataFrame(index=frame.index)
    builds = shared_build_costs(frame)
    for own_column, field, charged_column, build_inside in QUANTITIES:
        charged = _column(frame, own_column)
        for kind in shared_kinds(frame):
            prefix = f"cost.shared.{kind}."
            keys = frame[prefix + "key"]
            if build_inside and prefix + "hit" in frame:
                built_here = _is_false(frame[prefix + "hit"]) & keys.notna()
                charged = charged - shared_field(frame, kind, field).where(built_here, 0.0).fillna(0.0)
                charged = charged.clip(lower=0.0)
            if convention == "per_procedure":
                continue  # builds are charged once per procedure, by procedure_builds
            table = builds[builds["kind"] == kind].set_index("key")
            cost = keys.map(table[field]).astype(float)
            if convention == "amortize":
                cost = cost / keys.map(table["n_runs"]).astype(float)
            charged = charged + cost.fillna(0.0)
        out[charged_column] = charged
    return out


def procedure_builds(procedure_runs: pd.DataFrame, all_runs: pd.DataFrame,
                     convention: str = DEFAULT_CONVENTION, builds: pd.DataFrame | None = None) -> dict[str, float]:
    """The once-per-procedure charge for the shared builds a procedure's runs used.

    In:  the procedure's runs (an arm on a setting) and all loaded runs (the builds' costs are read
         over them, `shared_build_costs`; a caller charging many procedures passes that table as
         `builds`, computed once). Out: {"flops", "device_hours", "wall_s"}: under
         "per_procedure" the sum over the distinct (kind, key) the procedure's runs used of each
         build's cost (FLOPs a build does not report count 0); 0 under the other conventions, whose
         per-run charged costs already hold the builds.
    """
    _check_convention(convention)
    total = {field: 0.0 for _, field, _, _ in QUANTITIES}
    if convention != "per_procedure":
        return total
    builds = (shared_build_costs(all_runs) if builds is None else builds).set_index(["kind", "key"])
    for kind in shared_kinds(procedure_runs):
        for key in procedure_runs[f"cost.shared.{kind}.key"].dropna().unique():
            for field in total:
                value = builds.loc[(kind, key), field] if (kind, key) in builds.index else math.nan
                total[field] += 0.0 if pd.isna(value) else float(value)
    return total
