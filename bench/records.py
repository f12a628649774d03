"""Run records (docs/design.md §9): one directory per run, written atomically.

Layout: `<runs_root>/<sweep_id>/<run_id>/record.json` + `history.jsonl`.

record.json (schema_version 2; the analysis reads only these files, so this is its contract):
    schema_version: int
    run_id, sweep_id: str
    config_hash: str          hash of the result-determining config (see `config_hash`)
    status: "completed" | "failed"
    config: dict              the resolved Hydra config; `config.budget` is "full" or "fast" (smoke runs),
                              `config.dataset.trap` is null for a clean-label task, else why it is a trap
    method_info: dict         what the method is (bench.methods.method_info): {"family": "dpo"|"ipo"|"simpo",
                              "imi": bool, "defaults": {key: published default}, "swept": [keys a grid tunes]};
                              absent from records written before it existed
    metrics: dict[str, float] final metrics, all on held-out data:
        pref_acc                      share of held-out pairs with policy-vs-reference gap Δ > 0
        eval/loss, eval/rewards/...   the method's own loss and TRL-named reward stats on held-out pairs
        gold_reward                   mean gold reward r* of temperature-1 samples on the TEST prompts
                                      (the task's reward units; gold_reward_median, gold_reward_greedy too)
        reference_gold_reward         the same for the SFT/reference model's samples (the starting point)
        win_rate                      share of test prompts where the policy sample beats the reference's (ties ½)
        kl                            Monte-Carlo KL(π‖π_ref) in nats per sequence (sum over response tokens)
        length                        mean sampled response length in tokens (EOS excluded)
        no_eos_rate, collapsed        share of samples that hit the cap; 1.0 if it is ≥ eval.collapse_no_eos_rate
        val/<name>                    every gold-reward metric above, on the disjoint VALIDATION prompts
        composition/<name>            the same on the held-out COMPOSITION prompts (combinations of prompt parts
                                      training never saw together; tasks with a composition key only)
        lm_eval/<task>/<metric>       lm-eval results on the trained model
    val_curve: list[dict]     validation gold reward during training, one dict per eval.curve.fractions:
                              {fraction, step, n_prompts, val/gold_reward, flops, device_hours, train_s}
                              with cumulative costs (see bench.evaluate.ValidationCurve)
    cost: dict                see bench.cost.CostMeter.summary (seconds, device-hours, tokens, FLOPs, bytes;
                              wait_s = time blocked on locks, never in total_s or device_hours)
    data: dict                {"source": dataset statistics (pairs kept, dropped and why), "encoding": ...,
                               "prompt_sets": {"sets": {name: {"size", "distinct"}}, "overlaps": {"<a>|<b>": int}}}
                              prompt_sets measures the sets the run used (bench.data.splits.prompt_set_stats):
                              train_pairs, eval_pairs, validation, test, composition_test, sft_corpus (built-in
                              tasks); train_pairs, eval_pairs (real datasets); every pair of sets but the two
                              training ones, counted in distinct prompts shared
    provenance: dict          git_commit, git_dirty, code_fingerprint (bench.fingerprint), packages, hardware, seed,
                              command, started_at, finished_at,
                              resumes (times the run went on from a checkpoint: bench.checkpoint) and
                              resumed_at_steps (the optimizer steps it went on from); started_at is the first start
    error: str | None         "Type: message" + traceback tail when failed

history.jsonl: one JSON object per logged optimizer step ({"step": int, "loss": float, ...}).

Only this module writes records; it depends on nothing else in the suite.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 2
RECORD_FILE = "record.json"
HISTORY_FILE = "history.jsonl"

# Config keys that do not change a run's result: where it is logged, how it is launched, where it is
# written. Two runs that differ only in these are the same run (and a re-launched sweep skips it).
NON_RESULT_KEYS = ("logger", "paths", "sweep_id", "launcher", "progress", "checkpoint")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same directory + rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy / torch scalars and paths end up in metrics and configs
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def config_hash(config: dict) -> str:
    """Stable 16-hex-digit hash of the result-determining part of a resolved config."""
    relevant = {k: v for k, v in config.items() if k not in NON_RESULT_KEYS}
    blob = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_identity(config: dict) -> tuple[str, str]:
    """(run_id, config_hash) of a resolved config: readable, and unique per result-determining config."""
    digest = config_hash(config)
    return f"{config['method']['name']}-{config['dataset']['name']}-s{config['seed']}-{digest[:8]}", digest


def run_dir(runs_root: Path, sweep_id: str, run_id: str) -> Path:
    return Path(runs_root) / sweep_id / run_id


def read_record(directory: Path) -> dict | None:
    """The record in `directory`, or None if there is none (a run killed before it wrote one)."""
    path = Path(directory) / RECORD_FILE
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def completed_record(directory: Path, expected_hash: str, code_fingerprint: str | None = None) -> dict | None:
    """The record if the run there completed with this config hash and, when `code_fingerprint` is given,
    by the same code (provenance.code_fingerprint): a re-launch skips it. A record made by other code is
    run again and replaced."""
    record = read_record(directory)
    return record if record and is_completed(record, expected_hash, code_fingerprint) else None


def is_completed(record: dict, expected_hash: str, code_fingerprint: str | None = None) -> bool:
    """Whether `record` completed with this config hash (and by this code, when a fingerprint is given)."""
    same_code = code_fingerprint is None or (record.get("provenance") or {}).get("code_fingerprint") == code_fingerprint
    return record.get("status") == "completed" and record.get("config_hash") == expected_hash and same_code


def write_record(directory: Path, record: dict) -> Path:
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(directory) / RECORD_FILE
    atomic_write_json(path, record)
    return path


def write_history(directory: Path, rows: Iterable[dict]) -> Path:
    lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
    path = Path(directory) / HISTORY_FILE
    atomic_write_text(path, lines)
    return path


def read_history(directory: Path) -> list[dict]:
    path = Path(directory) / HISTORY_FILE
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
