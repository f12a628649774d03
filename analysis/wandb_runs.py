"""W&B API runs as run records (a thin adapter: the local records are the source of truth, docs/design.md §10).

Turns the fields of a W&B API run into the record shape `analysis.load` reads, so both sources give
the same columns. W&B runs carry no `val_curve` and no history here: the analysis says which tables
need them. Needs the network and a key only in `load_wandb_runs`; the conversion is offline.
"""
from __future__ import annotations

from typing import Any, Mapping

from analysis.load import SUPPORTED_SCHEMA_VERSIONS, LoadedRuns, flatten, records_to_frame

# Per-step history scalars without a "/" (the trainer's rows); a W&B summary holds their last value,
# which is not a final metric (see `split_summary`).
PER_STEP_KEYS = ("step", "loss", "lr", "grad_norm", "epoch", "config_hash")


WANDB_STATES = {"finished": "completed", "failed": "failed", "crashed": "failed", "killed": "failed"}


def _unflatten(flat: Mapping[str, Any], sep: str) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(sep)
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"W&B key {key!r} clashes with a scalar at {part!r}")
        node[parts[-1]] = value
    return nested


def split_summary(summary: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """A W&B run summary -> (metrics, cost) in record shape.

    bench's W&B logger writes the final metrics at the top level of the summary under their record
    names and the cost as "cost/<key>" (with "cost/shared" a nested object). The summary also keeps
    the last value of every per-step key, which is not a final metric, so a top-level key counts as
    a metric only if it has no "/" and is not a per-step scalar (PER_STEP_KEYS), or it starts with
    "eval/", "lm_eval/", "val/" (validation-set metrics) or "metrics/" (the latter stripped).
    W&B's own "_"-keys are ignored.
    """
    metrics: dict[str, float] = {}
    cost: dict[str, Any] = {}
    for key, value in summary.items():
        if key.startswith("_"):
            continue
        if key == "cost" and isinstance(value, Mapping):
            cost.update(value)
        elif key.startswith("cost/"):
            cost[key[len("cost/"):]] = dict(value) if isinstance(value, Mapping) else value
        elif key == "metrics" and isinstance(value, Mapping):
            metrics.update(value)
        elif key.startswith("metrics/"):
            metrics[key[len("metrics/"):]] = value
        elif isinstance(value, Mapping) or not isinstance(value, (int, float)):
            continue  # W&B media, strings and nested objects are not metrics
        elif key.startswith(("eval/", "lm_eval/", "val/")) or ("/" not in key and key not in PER_STEP_KEYS):
            metrics.setdefault(key, value)
    return metrics, cost


def wandb_run_to_record(run_id: str, group: str | None, state: str, config: Mapping[str, Any],
                        summary: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one W&B API run (`run.name, run.group, run.state, run.config, run.summary_metrics`)
    as a record dict with the same keys as record.json, so both sources give the same columns.

    Config keys logged flat with "/" or "." separators are nested back. The sweep id is the run's
    group (docs/design.md §10: group = sweep id). W&B states finished/failed/crashed/killed map to
    completed/failed; anything else (running) is incomplete.
    """
    config_flat = {k.replace("/", "."): v for k, v in flatten(config).items() if not k.startswith("_")}
    nested_config = _unflatten(config_flat, ".")
    metrics, cost = split_summary(summary)
    state = str(state).lower()
    status = WANDB_STATES.get(state, state)
    return {
        "schema_version": SUPPORTED_SCHEMA_VERSIONS[-1],
        "run_id": run_id,
        "sweep_id": group or nested_config.get("sweep_id") or "",
        "config_hash": summary.get("config_hash") or nested_config.get("config_hash") or "",
        "status": status,
        "config": nested_config,
        # bench's W&B logger keeps the record's method_info in the summary (absent from older runs)
        "method_info": dict(summary["method_info"]) if isinstance(summary.get("method_info"), Mapping) else None,
        "metrics": metrics,
        "cost": cost,
        "provenance": {"wandb_state": state},
        "error": None if status == "completed" else f"W&B state {state!r}",
    }


def load_wandb_runs(path: str, filters: Mapping[str, Any] | None = None, api: Any = None) -> LoadedRuns:
    """Runs of the W&B project `path` ("entity/project") as a LoadedRuns with the same columns.

    Needs the network and a W&B key (`wandb login`), so it is not exercised by the offline tests;
    the conversion it relies on (`wandb_run_to_record`) is. `filters` is passed to
    `wandb.Api().runs` (a MongoDB-style query, e.g. {"group": "<sweep id>"}). Histories are not
    fetched: plots that need per-step traces use local run directories only.
    """
    if api is None:
        import wandb  # only this adapter needs wandb; importing it lazily keeps `analysis` light

        api = wandb.Api()
    triples = []
    for run in api.runs(path, filters=dict(filters or {})):
        # bench names each W&B run after its run id (WandbLogger: name = run id), so the display name
        # matches the local record; the W&B id is the fallback for runs logged some other way
        record = wandb_run_to_record(run.name or run.id, getattr(run, "group", None), run.state,
                                     dict(run.config), dict(run.summary_metrics))
        record["provenance"]["wandb_id"] = run.id
        triples.append((None, record, None))
    return records_to_frame(triples, source=f"wandb:{path}")
