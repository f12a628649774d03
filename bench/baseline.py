"""Committed baselines (results/baselines/<version>/, docs/design.md §9, §11a): run records, the reports over them
(one per tuned baseline), and manifest.json, which says how they were made (commands, commit, versions,
hardware, seeds, wall time) and what a reproduction must meet. `reproduce` re-runs a named subset of the
runs and checks every number within the manifest's tolerances — each re-run's metrics, then every cell of
the reports' tables recomputed with the re-run records in place of the committed ones — prints a
pass/fail table, and exits 1 on any failure.

    ./multirun.sh reproduce v1 [--subset NAME]      runs the command below on results/baselines/v1
    python -m bench.baseline reproduce results/baselines/v1 [--subset NAME] [--out DIR] [--cache-root DIR]
    python -m bench.baseline list results/baselines/v1      the parts and subsets, with their run counts
    python -m bench.baseline describe results/baselines/v1  what each part's records say about how they were
                                                           made (the manifest's `recorded`, checked by a test)
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from bench.models import quiet_transformers
from bench.records import RECORD_FILE
from bench.reproduce import OtherCodeError, add_cache_root, check_same_code, completed_records, rerun, within

MANIFEST_FILE = "manifest.json"
BASELINES_DIR = Path("results") / "baselines"


class BaselineError(ValueError):
    """A baseline folder, its manifest or a subset is unusable; the message names the file and key."""


def load_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        known = sorted(p.parent.name for p in Path(folder).parent.glob(f"*/{MANIFEST_FILE}"))
        raise BaselineError(f"{path}: no manifest; baselines beside it: {', '.join(known) or 'none'}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BaselineError(f"{path}: not valid JSON ({err})") from err
    for key in ("subsets", "tolerances", "reports"):
        if key not in manifest:
            raise BaselineError(f"{path}: missing key '{key}'")
    return manifest


def config_value(config: dict, dotted: str):
    """`config['a']['b']` for 'a.b'; None where a key is absent."""
    value = config
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def matches(config: dict, where: dict | list[dict]) -> bool:
    """Whether a run's config has, for every dotted key of `where`, one of the values listed; `where` may be
    a list of such filters, any of which may match (e.g. tuned DPO's β, or any IMI method)."""
    if isinstance(where, list):
        return any(matches(config, clause) for clause in where)
    return all(config_value(config, key) in values for key, values in where.items())


def subset_filter(manifest: dict, name: str) -> dict | list[dict]:
    """The `where` filter of a subset: its own, or the one of the part it names (`{"part": NAME}`)."""
    subsets = manifest["subsets"]
    if name not in subsets:
        raise BaselineError(f"unknown subset '{name}'; this baseline has: {', '.join(sorted(subsets))}")
    subset = subsets[name]
    if "part" in subset:
        parts = manifest.get("parts", {})
        if subset["part"] not in parts:
            raise BaselineError(f"subset '{name}' names part '{subset['part']}', which the manifest's parts lack")
        return parts[subset["part"]]["where"]
    return subset["where"]


def select_records(records: list[dict], where: dict | list[dict]) -> list[dict]:
    return [record for record in records if matches(record["config"], where)]


def describe(records: list[dict]) -> dict:
    """How a set of runs was made, from their own records: commits, package versions, hardware, seeds,
    what ran, and when. A part's `recorded` entry in the manifest is this, so it cannot drift from them."""
    if not records:
        return {"runs": 0}
    provenance = [record["provenance"] for record in records]
    packages: dict[str, set] = {}
    for entry in provenance:
        for name, version in entry["packages"].items():
            packages.setdefault(name, set()).add(version)
    config = [record["config"] for record in records]
    return {
        "runs": len(records),
        "git_commits": sorted({entry["git_commit"] for entry in provenance}),
        "git_dirty": any(entry["git_dirty"] for entry in provenance),
        "packages": {name: sorted(versions) for name, versions in sorted(packages.items())},
        "hardware": [json.loads(h) for h in sorted({json.dumps(_hardware(entry), sort_keys=True) for entry in provenance})],
        "seeds": sorted({c["seed"] for c in config}),
        "models": sorted({c["model"]["name"] for c in config}),
        "datasets": sorted({c["dataset"]["name"] for c in config}),
        "methods": sorted({c["method"]["name"] for c in config}),
        "first_started": min(entry["started_at"] for entry in provenance),
        "last_finished": max(entry["finished_at"] for entry in provenance),
        "run_seconds": round(sum(record["cost"]["total_s"] for record in records), 1),
    }


def _hardware(provenance: dict) -> dict:
    # the platform string names the kernel build, which differs between identical machines
    return {key: value for key, value in provenance["hardware"].items() if key not in ("platform", "slurm_job_id")}


def metric_rows(record: dict, again: dict, metrics: list[str] | str, atol: float) -> list[dict]:
    """One row per compared number of a re-run: committed vs reproduced, |diff|, pass. `metrics` "all" =
    every metric the committed record has; a listed metric it lacks is not compared; a failed re-run is one
    failing row."""
    if again["status"] != "completed":
        return [{"where": record["run_id"], "number": "status", "committed": "completed",
                 "reproduced": again["status"], "diff": math.nan, "atol": atol, "ok": False}]
    names = sorted(record["metrics"]) if metrics == "all" else [m for m in metrics if m in record["metrics"]]
    rows = []
    for name in names:
        want, got = float(record["metrics"][name]), float(again["metrics"].get(name, math.nan))
        rows.append({"where": record["run_id"], "number": name, "committed": want, "reproduced": got,
                     "diff": abs(want - got), "atol": atol, "ok": within(want, got, atol)})
    return rows


def table_rows(name: str, committed: pd.DataFrame, reproduced: pd.DataFrame, atol: float,
               ignore: str | None = None) -> list[dict]:
    """One row per cell of a report table (columns matching the regex `ignore` left out, e.g. wall-clock
    costs, which no re-run repeats): numbers within atol (NaN matches NaN), other cells equal."""
    if list(committed.columns) != list(reproduced.columns) or len(committed) != len(reproduced):
        return [{"where": name, "number": "shape", "committed": f"{committed.shape} {list(committed.columns)}",
                 "reproduced": f"{reproduced.shape} {list(reproduced.columns)}", "diff": math.nan,
                 "atol": atol, "ok": False}]
    rows = []
    for column in committed.columns:
        if ignore and re.search(ignore, column):
            continue
        for index, (want, got) in enumerate(zip(committed[column], reproduced[column])):
            where, number = f"{name} row {index}", column
            if _is_number(want) and _is_number(got):
                diff, ok = abs(float(want) - float(got)), within(float(want), float(got), atol)
            else:
                diff, ok = math.nan, (str(want) == str(got)) or (pd.isna(want) and pd.isna(got))
            rows.append({"where": where, "number": number, "committed": want, "reproduced": got,
                         "diff": diff, "atol": atol, "ok": ok})
    return rows


def _is_number(value) -> bool:
    return pd.api.types.is_number(value) and not pd.api.types.is_bool(value)


def merged_records(folder: Path, rerun_dirs: dict[str, Path], into: Path) -> Path:
    """A copy of the baseline's run folders (record + history) with each re-run's folder in place of the
    committed one of the same run id: what the report is recomputed from."""
    for record_path in sorted(Path(folder).rglob(RECORD_FILE)):
        source = record_path.parent
        run_id = source.name
        target = into / source.relative_to(folder)
        shutil.copytree(rerun_dirs.get(run_id, source), target)
    return into


def reproduce_baseline(folder: Path, subset: str, out: Path, cache_root: str, changes: list[str] = (),
                       atol: float | None = None, echo=print) -> pd.DataFrame:
    """Re-run the subset's runs into `out` (with `changes` to their configs, if any), recompute the reports
    there, and return every compared number, within the manifest's tolerances or `atol` when given."""
    manifest = load_manifest(folder)
    tolerances = manifest["tolerances"]
    run_tol, table_tol = dict(tolerances["run_metrics"]), dict(tolerances["report_tables"])
    if atol is not None:
        run_tol["atol"] = table_tol["atol"] = atol
    chosen = select_records(completed_records(folder), subset_filter(manifest, subset))
    if not chosen:
        raise BaselineError(f"subset '{subset}' selects no completed run under {folder}")
    try:  # before any compute: this checkout must be the code that made them
        check_same_code(*chosen)
    except OtherCodeError as err:
        raise BaselineError(f"{folder}: {err}") from None
    echo(f"[reproduce] {folder}: subset '{subset}', {len(chosen)} runs to re-run "
         f"({manifest['subsets'][subset].get('description', '')})")

    rows, rerun_dirs = [], {}
    for record in tqdm(chosen, desc="re-running", unit="run", file=sys.stderr):
        try:
            again = rerun(record, out / "reruns", cache_root, changes)
        except KeyError as err:
            raise BaselineError(err.args[0]) from None
        rerun_dirs[record["run_id"]] = out / "reruns" / again["sweep_id"] / again["run_id"]
        rows += metric_rows(record, again, run_tol["metrics"], run_tol["atol"])

    merged = merged_records(folder, rerun_dirs, out / "records")
    for report in manifest["reports"]:  # e.g. one per tuned baseline (--baseline dpo, ipo, simpo)
        name = report["out"]
        command = [sys.executable, "-m", "analysis", "report", str(merged / manifest.get("runs", ".")),
                   "--out", str(out / name), *report.get("args", [])]
        echo(f"[reproduce] recomputing {name}/: python {' '.join(command[1:])}")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise BaselineError(f"the analysis report failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        for table in table_tol["tables"]:
            committed_csv = Path(folder) / name / "tables" / table
            if not committed_csv.is_file():
                raise BaselineError(f"{committed_csv}: listed in the manifest's tolerances.report_tables, not committed")
            rows += table_rows(f"{name}/{table}", pd.read_csv(committed_csv), pd.read_csv(out / name / "tables" / table),
                               table_tol["atol"], table_tol.get("ignore_columns"))
    return pd.DataFrame(rows)


def print_table(numbers: pd.DataFrame, echo=print) -> None:
    """Every re-run's numbers, one line each; the report's cells per table (and every failing cell)."""
    runs = numbers[~numbers["where"].str.contains(r"\.csv")]
    cells = numbers[numbers["where"].str.contains(r"\.csv")]
    if len(runs):
        shown = runs.assign(result=runs["ok"].map({True: "PASS", False: "FAIL"})).drop(columns="ok")
        echo(shown.rename(columns={"where": "run", "number": "metric", "diff": "|diff|"}).to_string(index=False))
    if len(cells):
        table = cells["where"].str.replace(r" row \d+$", "", regex=True)
        summary = cells.groupby(table, sort=False).agg(numbers=("ok", "size"), failed=("ok", lambda ok: int((~ok).sum())),
                                                       max_diff=("diff", "max"), atol=("atol", "first"))
        summary["result"] = summary["failed"].map(lambda failed: "PASS" if failed == 0 else "FAIL")
        echo("\n" + summary.rename_axis("report table").to_string())
        failing = cells[~cells["ok"]]
        if len(failing):
            echo("\nfailing cells:\n" + failing.drop(columns="ok").to_string(index=False))


def superseded_note(manifest: dict) -> str | None:
    """The manifest's `superseded` entry as one line ("superseded by v2: ..."), None for a current baseline."""
    entry = manifest.get("superseded")
    if not entry:
        return None
    return f"superseded by {entry.get('by', 'a later baseline')}: {entry.get('why', '')}".rstrip(": ")


def list_subsets(folder: Path, echo=print) -> None:
    manifest = load_manifest(folder)
    records = completed_records(folder)
    if note := superseded_note(manifest):
        echo(f"NOTE: {note}")
    for kind, entries in (("parts", manifest.get("parts", {})), ("subsets", manifest["subsets"])):
        echo(f"{kind}:")
        for name, entry in entries.items():
            where = entry["where"] if kind == "parts" else subset_filter(manifest, name)
            echo(f"  {name:<12} {len(select_records(records, where)):>4} runs committed  {entry.get('description', '')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    again = commands.add_parser("reproduce", help="re-run a subset and check every number against the manifest")
    again.add_argument("folder", type=Path, help="a baseline folder, e.g. results/baselines/v1")
    again.add_argument("--subset", help="a subset named in the manifest (default: its default_subset)")
    again.add_argument("--out", type=Path, help="keep the re-runs, the recomputed report and numbers.csv here "
                                                "(default: a temporary folder, removed)")
    again.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                       help="change a recorded config key in every re-run (another setup, e.g. "
                            "hardware.torch_threads=2); the numbers then show how much the setup moves them")
    again.add_argument("--atol", type=float, help="one absolute tolerance for every number, instead of the manifest's")
    add_cache_root(again)
    for name, help_text in (("list", "the baseline's parts and subsets"),
                            ("describe", "what each part's records say about how they were made (JSON)")):
        commands.add_parser(name, help=help_text).add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    quiet_transformers()

    try:
        if args.command == "list":
            list_subsets(args.folder)
            return 0
        if args.command == "describe":
            parts = load_manifest(args.folder).get("parts", {})
            records = completed_records(args.folder)
            print(json.dumps({name: describe(select_records(records, part["where"])) for name, part in parts.items()},
                             indent=2))
            return 0
        if note := superseded_note(load_manifest(args.folder)):
            print(f"[reproduce] note: {note}")
        subset = args.subset or load_manifest(args.folder).get("default_subset")
        if subset is None:
            raise BaselineError(f"{args.folder / MANIFEST_FILE} names no default_subset: pass --subset")
        with tempfile.TemporaryDirectory(prefix="imi-bench-baseline-") as scratch:
            out = args.out or Path(scratch)
            out.mkdir(parents=True, exist_ok=True)
            numbers = reproduce_baseline(args.folder, subset, out, args.cache_root, args.changes, args.atol)
            print_table(numbers)
            if args.out:
                numbers.to_csv(out / "numbers.csv", index=False)
                print(f"[reproduce] every number: {out / 'numbers.csv'}")
    except BaselineError as err:
        print(f"[reproduce] {err}", file=sys.stderr)
        return 2
    failed = int((~numbers["ok"]).sum())
    print(f"[reproduce] {len(numbers) - failed}/{len(numbers)} numbers within tolerance: "
          f"{'PASS' if failed == 0 else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
