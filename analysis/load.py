"""Load run records into one tidy DataFrame (docs/design.md §9, §11): one row per completed run.

Finds run folders, reads `record.json` / `history.jsonl`, flattens records into columns (listed on
`LoadedRuns`) and says which runs were skipped and why. It must not import `bench`: the analysis works from
committed records alone, so the little JSON reading it needs lives here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml

# The record's schema: one file shared with the library that writes records (record_schema.yaml).
SCHEMA = yaml.safe_load((Path(__file__).with_name("record_schema.yaml")).read_text())
RECORD_FILE = SCHEMA["files"]["record"]
HISTORY_FILE = SCHEMA["files"]["history"]
SUPPORTED_SCHEMA_VERSIONS = tuple(SCHEMA["supported_schema_versions"])
CURVE_COLUMN = "val_curve"

# One (dataset, model, setup) combination is a "setting": the unit a tuned grid is tuned on, and the
# stratum of the stratified bootstrap across settings. The setup is the hardware config's name.
SETTING_KEYS = ("dataset.name", "model.name", "hardware.name")
# Columns every analysed run must have; the others in SETTING_KEYS default to UNSPECIFIED.
REQUIRED_CONFIG_KEYS = tuple(SCHEMA["required_config_keys"])
UNSPECIFIED = "unspecified"

# Columns shown by `python -m analysis runs` and kept for skipped runs when the record has them.
IDENTITY_COLUMNS = ("method.name", "dataset.name", "hardware.name", "method.beta", "seed")

SKIPPED_COLUMNS = ("run_dir", "run_id", "sweep_id", "status", "skip", "reason", *IDENTITY_COLUMNS)


@dataclass
class LoadedRuns:
    """The completed runs (`runs`), the runs left out (`skipped`) and which columns are which.

    Columns of `runs` (one row per completed run):
        run_id, sweep_id, config_hash, status, run_dir (str, or None for W&B runs), source ("records"|"wandb")
        schema_version (1: test metrics only; 2: also validation metrics and a validation curve)
        flattened config, dotted: "method.name", "method.beta", "dataset.name", "dataset.trap" (null for a
            clean-label task, else why it is a trap and its ceiling), "model.name", "hardware.name" (the
            setup), "seed", "budget" ("full"|"fast"), "train.lr", ... (lists become JSON strings)
        metrics, as named in the record: test-set "gold_reward", "reference_gold_reward" (the SFT model's
            samples on the same prompts), "win_rate", "kl", "length", "no_eos_rate", "collapsed",
            "pref_acc", "lm_eval/<task>/<metric>", ...; validation-set "val/gold_reward",
            "val/reference_gold_reward", "val/win_rate", ... (floats; missing -> NaN)
        cost, prefixed "cost.": "cost.total_s", "cost.device_hours", "cost.flops", "cost.wait_s", ...,
            "cost.shared.<kind>.key|hit|wall_s|device_hours|flops" for kind in sft, dataset, reference
        method knowledge, prefixed "method_info.": "method_info.family", "method_info.imi",
            "method_info.defaults.<key>", "method_info.swept" (absent in older records)
        what the run's data were, prefixed "data.": e.g. "data.prompt_sets.overlaps.<a>|<b>" (ints: prompts
            shared between two of its prompt sets; absent in older records)
        provenance, prefixed "provenance.": "provenance.git_commit", "provenance.packages.torch", ...
        val_curve: the record's validation curve kept whole, a list of dicts per run ([] when absent),
            each {"fraction", "step", "n_prompts", "val/<metric>", "flops", "device_hours", "train_s"}
            with cumulative costs, sorted by fraction; `curve_frame` gives it as a long frame.

    Columns of `skipped` (one row per run that is not analysed):
        run_dir, run_id, sweep_id, status, skip ("incomplete"|"failed"|"unreadable"|"malformed"|
        "unsupported"|"duplicate"), reason (human-readable, names the file and field),
        and, where the record says so, method.name, dataset.name, hardware.name, method.beta, seed.
    """

    runs: pd.DataFrame
    skipped: pd.DataFrame
    config_columns: tuple[str, ...] = ()
    metric_columns: tuple[str, ...] = ()
    source: str = ""

    def skip_counts(self) -> dict[str, int]:
        """Number of skipped runs per skip kind, e.g. {"failed": 2, "incomplete": 1}."""
        if self.skipped.empty:
            return {}
        return {str(k): int(v) for k, v in self.skipped["skip"].value_counts().sort_index().items()}

    def skip_summary(self) -> str:
        """One line: how many runs were loaded and how many skipped, by kind."""
        counts = self.skip_counts()
        detail = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        skipped = sum(counts.values())
        return f"{len(self.runs)} completed runs loaded; {skipped} skipped" + (f" ({detail})" if detail else "")


# ---------------------------------------------------------------------------------------------
# Flattening records into rows


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b.c": value}. Lists/tuples become JSON strings so they can be group keys."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            flat[name] = value
    return flat


def _as_float(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {value!r}") from None


def _object_field(record: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    """The optional object field `name` of a record ({} when absent or empty); ValueError naming it otherwise."""
    value = record.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: field '{name}' is not an object")
    return value


def record_to_row(record: Mapping[str, Any], where: str = "record") -> tuple[dict[str, Any], list[str], list[str]]:
    """Flatten one completed record into a row.

    Returns (row, config_columns, metric_columns). Raises ValueError naming `where` and the field
    when a required field is missing or a metric is not a number.
    """
    config = record.get("config")
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: field 'config' is missing or not an object")
    config_flat = flatten(config)
    for key in REQUIRED_CONFIG_KEYS:
        if config_flat.get(key) in (None, ""):
            raise ValueError(f"{where}: field 'config.{key}' is missing")
    metrics = _object_field(record, "metrics", where)
    metric_values = {name: _as_float(v, f"{where}: field 'metrics.{name}'") for name, v in metrics.items()}
    clash = sorted(set(metric_values) & set(config_flat))
    if clash:
        raise ValueError(f"{where}: metric names {clash} clash with config keys of the same name")
    cost = _object_field(record, "cost", where)
    provenance = record.get("provenance") or {}
    method_info = _object_field(record, "method_info", where)
    data = _object_field(record, "data", where)

    row: dict[str, Any] = {
        "run_id": record.get("run_id"),
        "sweep_id": record.get("sweep_id"),
        "config_hash": record.get("config_hash"),
        "status": record.get("status"),
        "schema_version": record.get("schema_version"),
    }
    row.update(config_flat)
    row.update(metric_values)
    row.update(flatten(cost, prefix="cost."))
    row.update(flatten(method_info, prefix="method_info."))
    row.update(flatten(data, prefix="data."))
    row[CURVE_COLUMN] = read_curve(record.get(CURVE_COLUMN), where)
    if isinstance(provenance, Mapping):
        row.update(flatten(provenance, prefix="provenance."))
    return row, list(config_flat), list(metric_values)


def read_curve(curve: Any, where: str) -> list[dict[str, Any]]:
    """A record's `val_curve` as a list of {name: float} sorted by fraction ([] when absent).

    Raises ValueError naming the field when it is not a list of objects with a numeric fraction in
    (0, 1], or a value is not a number.
    """
    if curve is None:
        return []
    if not isinstance(curve, (list, tuple)):
        raise ValueError(f"{where}: field 'val_curve' is not a list")
    points = []
    for i, point in enumerate(curve):
        if not isinstance(point, Mapping):
            raise ValueError(f"{where}: field 'val_curve[{i}]' is not an object")
        values = {str(k): _as_float(v, f"{where}: field 'val_curve[{i}].{k}'") for k, v in point.items()}
        if not 0 < values.get("fraction", math.nan) <= 1:
            raise ValueError(f"{where}: field 'val_curve[{i}].fraction' must be a number in (0, 1]")
        points.append(values)
    return sorted(points, key=lambda p: p["fraction"])


def curve_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The validation curves as a long frame: one row per (run, point).

    In:  a runs frame with the `val_curve` column. Out: columns "run" (the runs frame's index label),
         fraction, and every key the points carry (step, n_prompts, val/<metric>, flops,
         device_hours, train_s; NaN where a point lacks one). Runs without a curve have no rows.
    """
    if CURVE_COLUMN not in runs.columns:
        return pd.DataFrame(columns=["run", "fraction"])
    rows = [{"run": index, **point} for index, curve in runs[CURVE_COLUMN].items()
            if isinstance(curve, list) for point in curve]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["run", "fraction"])


def _identity(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """method/dataset/β/seed of a (possibly failed) record, for the skipped-runs table."""
    if not isinstance(record, Mapping) or not isinstance(record.get("config"), Mapping):
        return {}
    flat = flatten(record["config"])
    return {k: flat.get(k) for k in IDENTITY_COLUMNS if k in flat}


def _skip(run_dir: str | None, skip: str, reason: str, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    record = record if isinstance(record, Mapping) else {}
    return {
        "run_dir": run_dir,
        "run_id": record.get("run_id") or (Path(run_dir).name if run_dir else None),
        "sweep_id": record.get("sweep_id") or (Path(run_dir).parent.name if run_dir else None),
        "status": record.get("status") or skip,
        "skip": skip,
        "reason": reason,
        **_identity(record),
    }


def records_to_frame(
    records: Iterable[tuple[str | None, Mapping[str, Any] | None, str | None]], source: str
) -> LoadedRuns:
    """Turn (run_dir, record or None, problem or None) triples into a LoadedRuns.

    A record is analysed only if it has status "completed", a supported schema_version and the
    required fields; every other run becomes a row of `skipped` with its reason. When two completed
    records share a non-empty config_hash (the same run launched twice), the one that finished last
    is kept and the other is skipped as a duplicate, so no seed is counted twice.
    """
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    config_columns: dict[str, None] = {}
    metric_columns: dict[str, None] = {}
    for run_dir, record, problem in records:
        if problem is not None:
            skipped.append(_skip(run_dir, "unreadable", problem))
            continue
        if record is None:
            skipped.append(_skip(run_dir, "incomplete", f"{run_dir}: no {RECORD_FILE} (run killed or still running)"))
            continue
        if not isinstance(record, Mapping):
            skipped.append(_skip(run_dir, "malformed", f"{Path(run_dir or '') / RECORD_FILE}: top level is not an object"))
            continue
        where = str(Path(run_dir) / RECORD_FILE) if run_dir else f"W&B run {record.get('run_id')!r}"
        version = record.get("schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            skipped.append(_skip(run_dir, "unsupported", f"{where}: schema_version {version!r} "
                                 f"(this analysis reads {list(SUPPORTED_SCHEMA_VERSIONS)})", record))
            continue
        status = record.get("status")
        if status != "completed":
            error = str(record.get("error") or "no error message").strip().splitlines()
            reason = f"status {status!r}: {error[0] if error else ''}"
            skipped.append(_skip(run_dir, "failed" if status == "failed" else "incomplete", reason, record))
            continue
        try:
            row, config_cols, metric_cols = record_to_row(record, where)
        except ValueError as err:
            skipped.append(_skip(run_dir, "malformed", str(err), record))
            continue
        row["run_dir"] = run_dir
        row["source"] = source
        rows.append(row)
        config_columns.update(dict.fromkeys(config_cols))
        metric_columns.update(dict.fromkeys(metric_cols))

    rows, duplicates = _drop_duplicates(rows)
    skipped.extend(duplicates)
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(columns=["run_id", "sweep_id", "config_hash", "status", "run_dir", "source",
                                     *SETTING_KEYS, "method.name", "method.beta", "seed", CURVE_COLUMN])
    for key in SETTING_KEYS:
        if key not in runs.columns:
            runs[key] = UNSPECIFIED
        runs[key] = runs[key].where(runs[key].notna(), UNSPECIFIED).astype(str)
    for key in ("method.beta", "seed"):
        if key not in runs.columns:
            runs[key] = math.nan
    runs["method.beta"] = pd.to_numeric(runs["method.beta"], errors="coerce")
    sort_keys = [k for k in ("sweep_id", "method.name", *SETTING_KEYS, "method.beta", "seed") if k in runs]
    runs = runs.sort_values(sort_keys, kind="stable", na_position="last").reset_index(drop=True)
    skipped_frame = pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS))
    config = tuple(dict.fromkeys([*config_columns, *SETTING_KEYS, "method.beta", "seed"]))
    loaded = LoadedRuns(runs, skipped_frame, config, tuple(metric_columns), source)
    runs.attrs["config_columns"] = loaded.config_columns
    runs.attrs["metric_columns"] = loaded.metric_columns
    return loaded


def _drop_duplicates(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    kept: dict[str, dict[str, Any]] = {}
    unkeyed: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    for row in rows:
        key = row.get("config_hash")
        if not key:
            unkeyed.append(row)
            continue
        other = kept.get(key)
        if other is None:
            kept[key] = row
            continue
        # keep the run that finished last (ISO timestamps sort as strings); ties keep the first seen
        newer, older = (row, other) if str(row.get("provenance.finished_at") or "") > str(
            other.get("provenance.finished_at") or "") else (other, row)
        kept[key] = newer
        duplicates.append({
            "run_dir": older.get("run_dir"), "run_id": older.get("run_id"), "sweep_id": older.get("sweep_id"),
            "status": "completed", "skip": "duplicate",
            "reason": f"same config_hash {key} as run {newer.get('run_id')!r} ({newer.get('run_dir')}), which is kept",
            **{k: older.get(k) for k in IDENTITY_COLUMNS},
        })
    return [*kept.values(), *unkeyed], duplicates


# ---------------------------------------------------------------------------------------------
# Run records on disk


def _is_run_dir(directory: Path) -> bool:
    """A directory holds a run if it has a record, a history, a half-written record or Hydra's .hydra/.

    A run directory without record.json is a run that was killed (or is still running): records are
    written atomically, so a half-written one only ever exists as a `.record.json.*.tmp` file.
    """
    if (directory / RECORD_FILE).exists() or (directory / HISTORY_FILE).exists():
        return True
    if (directory / ".hydra").is_dir():
        return True
    return any(directory.glob(f".{RECORD_FILE}.*.tmp"))


def find_run_dirs(runs_dir: Path) -> list[Path]:
    """Run directories under `runs_dir`: the runs root, one sweep folder, or a single run folder.

    The depth of the record.json files found decides which level holds runs (normally
    `<root>/<sweep_id>/<run_id>/`); every directory at that depth with run artifacts is a run.
    Hidden directories (.hydra, .submitit, wandb caches) are never runs.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist or is not a directory")
    if _is_run_dir(runs_dir) and (runs_dir / RECORD_FILE).exists():
        return [runs_dir]
    depths = set()
    for path in runs_dir.rglob(RECORD_FILE):
        rel = path.parent.relative_to(runs_dir)
        if not any(part.startswith(".") for part in rel.parts):
            depths.add(len(rel.parts))
    if not depths:
        depths = {2}  # nothing completed yet: look where the record layout puts runs
    found: list[Path] = []
    for depth in sorted(depths):
        for directory in sorted(runs_dir.glob("/".join(["*"] * depth))):
            rel = directory.relative_to(runs_dir)
            if directory.is_dir() and not any(p.startswith(".") for p in rel.parts) and _is_run_dir(directory):
                found.append(directory)
    return found


def read_record_file(directory: Path) -> tuple[dict | None, str | None]:
    """(record or None if absent, problem or None): a record that is not valid JSON is a problem."""
    path = Path(directory) / RECORD_FILE
    if not path.exists():
        return None, None
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, f"{path}: cannot be read as JSON ({err})"


def load_runs(runs_dir: str | Path) -> LoadedRuns:
    """All runs under `runs_dir` (runs root, sweep folder or run folder) as a LoadedRuns."""
    triples = []
    for directory in find_run_dirs(Path(runs_dir)):
        record, problem = read_record_file(directory)
        triples.append((str(directory), record, problem))
    return records_to_frame(triples, source="records")


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """history.jsonl of one run as a DataFrame (one row per logged step; empty if there is none).

    A malformed line raises ValueError naming the file and line number.
    """
    path = Path(run_dir) / HISTORY_FILE
    if not path.exists():
        return pd.DataFrame()
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not JSON ({err})") from None
    return pd.DataFrame(rows)
