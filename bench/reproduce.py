"""Re-run committed runs from their own records and check the metrics agree (docs/design.md §9, results/).

    python -m bench.reproduce results/<name> [--runs 2] [--atol 1e-6] [--metrics gold_reward kl ...]

Each chosen record's resolved config is run again (into a scratch runs folder, with the usual shared
caches, which are rebuilt from scratch if absent) and every compared metric must match within `--atol`.
On the same CPU type, thread count and package versions a run is bit-for-bit repeatable, so the default
tolerance is tight; across machines, pass the tolerance stated beside the result.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from bench.fingerprint import run_fingerprint
from bench.models import quiet_transformers
from bench.pipeline import run
from bench.records import RECORD_FILE

DEFAULT_METRICS = ("gold_reward", "win_rate", "kl", "no_eos_rate", "pref_acc", "length")


class OtherCodeError(ValueError):
    """A record was made by other code than this checkout's: its numbers are not this code's to reproduce."""


def check_same_code(*records: dict) -> None:
    """Refuse the first of `records` whose code fingerprint (provenance.code_fingerprint) is not this
    checkout's, naming the commit that made it: reproducing it means checking that commit out (records made
    before fingerprints existed carry none, and are refused the same way). Callers pass every record they
    will re-run at once, before any compute."""
    ours = run_fingerprint()
    for record in records:
        provenance = record.get("provenance") or {}
        made_by = provenance.get("code_fingerprint")
        if made_by != ours:
            commit = provenance.get("git_commit") or "unknown"
            raise OtherCodeError(f"{record.get('run_id', 'record')}: made by other code (fingerprint "
                                 f"{made_by or 'not recorded'}, commit {commit[:12]}; this checkout's is {ours}): "
                                 f"check out commit {commit[:12]} to reproduce it")


def completed_records(root: Path) -> list[dict]:
    found = []
    for path in sorted(Path(root).rglob(RECORD_FILE)):
        record = json.loads(path.read_text())
        if record.get("status") == "completed":
            found.append(record)
    return found


def within(want: float, got: float, atol: float) -> bool:
    """|want − got| ≤ atol; equal infinities (a savings table's "misses τ") and NaN against NaN agree."""
    return want == got or abs(want - got) <= atol or (math.isnan(want) and math.isnan(got))


def add_cache_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-root", default=os.environ.get("IMI_BENCH_CACHE", ".cache/imi-bench"),
                        help="shared cache folder (default: $IMI_BENCH_CACHE or .cache/imi-bench)")


def compare(expected: dict, actual: dict, metrics: list[str], atol: float) -> list[str]:
    """Mismatches as readable lines (empty = reproduced). A metric absent from the original is skipped."""
    problems = []
    for name in metrics:
        if name not in expected:
            continue
        want, got = expected[name], actual.get(name, math.nan)
        if not within(want, got, atol):
            problems.append(f"{name}: recorded {want:.6g}, reproduced {got:.6g} (|diff| {abs(want - got):.3g} > {atol})")
    return problems


def rerun(record: dict, runs_root: Path, cache_root: str, changes: list[str] = ()) -> dict:
    """Run a record's config again into runs_root, with `changes` ("key=value", e.g.
    hardware.torch_threads=2: another setup than the recorded one) applied; returns the new record.
    Refuses a record made by other code (`check_same_code`)."""
    check_same_code(record)
    config = OmegaConf.create(record["config"])
    config.paths = {"runs_root": str(runs_root), "cache_root": str(Path(cache_root).resolve())}
    config.progress = False
    for change in changes:
        key, _, value = change.partition("=")
        if OmegaConf.select(config, key, default=KeyError) is KeyError:  # absent, not merely null
            raise KeyError(f"--set {change}: the recorded config has no key '{key}'")
        OmegaConf.update(config, key, yaml.safe_load(value))
    return run(config).record


def reproduce(record: dict, runs_root: Path, cache_root: str, metrics: list[str], atol: float) -> list[str]:
    again = rerun(record, runs_root, cache_root)
    if again["status"] != "completed":
        return [f"re-run failed: {again['error'].splitlines()[0]}"]
    return compare(record["metrics"], again["metrics"], metrics, atol)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a folder of run records (e.g. results/beta_sensitivity)")
    parser.add_argument("--runs", type=int, default=2, help="how many records to re-run, drawn at random (0 = all)")
    parser.add_argument("--seed", type=int, default=0, help="which records are drawn")
    parser.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance per metric")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    add_cache_root(parser)
    args = parser.parse_args(argv)
    quiet_transformers()

    records = completed_records(args.results)
    if not records:
        print(f"no completed records under {args.results}", file=sys.stderr)
        return 2
    chosen = records if args.runs == 0 else random.Random(args.seed).sample(records, min(args.runs, len(records)))
    try:
        check_same_code(*chosen)  # before any compute
    except OtherCodeError as err:
        print(f"[reproduce] {err}", file=sys.stderr)
        return 2
    failures = 0
    with tempfile.TemporaryDirectory(prefix="imi-bench-reproduce-") as scratch:
        for record in chosen:
            problems = reproduce(record, Path(scratch), args.cache_root, args.metrics, args.atol)
            failures += bool(problems)
            print(f"[reproduce] {'OK  ' if not problems else 'FAIL'} {record['run_id']}")
            for line in problems:
                print(f"           {line}")
    print(f"[reproduce] {len(chosen) - failures}/{len(chosen)} runs reproduced within atol={args.atol}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
