"""Copy completed run records into a results folder that others can read (docs/design.md §9).

    python -m bench.publish SRC DEST [--replace] [--dry-run]

SRC is a sweep folder (`<runs root>/<sweep id>`, its runs land in DEST/<run id>/) or a runs root (DEST keeps
its `<sweep id>/<run id>/` layout). Only completed records are copied, each with its history. A record names
the machine it ran on in absolute paths — the runs root, the cache root, the Python environment (the
command's interpreter, a GGUF file inside site-packages) — so each is rewritten to the form a clone uses:
`runs`, `.cache/imi-bench`, `.venv`. The prefixes come from the record itself (`config.paths`, the command's
first word), so a folder made on several machines is published right. A run already in DEST with another
record is refused unless --replace; files are written atomically, so an interrupted publish leaves every
run either as it was or complete.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.records import HISTORY_FILE, RECORD_FILE, atomic_write_json, atomic_write_text, read_record

# What a clone calls each machine-specific root: the defaults of IMI_BENCH_RUNS / IMI_BENCH_CACHE, and the
# virtual environment the README creates.
PORTABLE_RUNS_ROOT = "runs"
PORTABLE_CACHE_ROOT = ".cache/imi-bench"
PORTABLE_ENV = ".venv"


class PublishError(ValueError):
    """A source or destination that cannot be published; the message names the file."""


def machine_prefixes(record: dict) -> dict[str, str]:
    """Absolute prefix → portable form for this record: its runs and cache roots (`config.paths`) and the
    environment whose interpreter ran it (the command's first word, `<env>/bin/python`)."""
    paths = (record.get("config") or {}).get("paths") or {}
    prefixes = {}
    for key, portable in (("runs_root", PORTABLE_RUNS_ROOT), ("cache_root", PORTABLE_CACHE_ROOT)):
        value = paths.get(key)
        if isinstance(value, str) and value.startswith("/"):
            prefixes[value.rstrip("/")] = portable
    command = (record.get("provenance") or {}).get("command") or ""
    interpreter = Path(command.split(" ", 1)[0]) if command else None
    if interpreter and interpreter.is_absolute() and interpreter.parent.name == "bin":
        prefixes[str(interpreter.parent.parent)] = PORTABLE_ENV
    return prefixes


def portable(value, prefixes: dict[str, str]):
    """`value` with every string's machine prefixes rewritten, at any depth. The longest prefix is tried first
    (a cache root inside the runs root stays a cache root), and a prefix counts only at a path boundary."""
    if isinstance(value, dict):
        return {k: portable(v, prefixes) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, prefixes) for v in value]
    if not isinstance(value, str):
        return value
    for prefix in sorted(prefixes, key=len, reverse=True):
        start = 0
        while (i := value.find(prefix, start)) >= 0:
            end = i + len(prefix)
            if end == len(value) or value[end] in "/ '\"":
                value = value[:i] + prefixes[prefix] + value[end:]
                start = i + len(prefixes[prefix])
            else:
                start = end
    return value


def absolute_paths(value, where: str = "") -> list[str]:
    """Dotted fields whose string still holds an absolute path (a word starting with '/'), for the summary."""
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in absolute_paths(v, f"{where}.{k}" if where else k)]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in absolute_paths(v, f"{where}[{i}]")]
    if isinstance(value, str) and any(word.startswith("/") and len(word) > 1 for word in value.split()):
        return [where]
    return []


@dataclass
class Summary:
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not completed: never published
    absolute: dict[str, list[str]] = field(default_factory=dict)  # run → fields still absolute after rewriting


def run_folders(src: Path) -> list[Path]:
    """Every folder under `src` holding a record: `src`'s children (a sweep folder) or grandchildren (a runs root)."""
    if not src.is_dir():
        raise PublishError(f"{src}: no such folder")
    found = sorted(p.parent for p in src.glob(f"*/{RECORD_FILE}")) + sorted(p.parent for p in src.glob(f"*/*/{RECORD_FILE}"))
    if not found:
        raise PublishError(f"{src}: no {RECORD_FILE} one or two levels down (give a sweep folder or a runs root)")
    return found


def publish(src: Path, dest: Path, replace: bool = False, dry_run: bool = False) -> Summary:
    src, dest = Path(src), Path(dest)
    summary = Summary()
    for folder in run_folders(src):
        name = str(folder.relative_to(src))
        record = read_record(folder)
        if record is None or record.get("status") != "completed":
            summary.skipped.append(name)
            continue
        if not (folder / HISTORY_FILE).is_file():
            raise PublishError(f"{folder / HISTORY_FILE}: missing beside a completed record")
        out = portable(record, machine_prefixes(record))
        left = absolute_paths(out)
        if left:
            summary.absolute[name] = left
        target = dest / name
        existing = read_record(target)
        if existing == out:
            summary.unchanged.append(name)
            continue
        if existing is not None and not replace:
            raise PublishError(f"{target / RECORD_FILE}: holds another record of {name} "
                               f"(config_hash {existing.get('config_hash')} vs {out.get('config_hash')}); "
                               "pass --replace to overwrite it")
        summary.copied.append(name)
        if dry_run:
            continue
        # history first: a record is what marks a run complete, so it lands last
        atomic_write_text(target / HISTORY_FILE, (folder / HISTORY_FILE).read_text())
        atomic_write_json(target / RECORD_FILE, out)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.splitlines()[0],
                                     epilog="e.g. python -m bench.publish runs/smollm2 results/smollm2")
    parser.add_argument("src", type=Path, help="a sweep folder (<runs root>/<sweep id>) or a runs root")
    parser.add_argument("dest", type=Path, help="the results folder to copy into, e.g. results/<study>")
    parser.add_argument("--replace", action="store_true", help="overwrite runs DEST already holds with another record")
    parser.add_argument("--dry-run", action="store_true", help="say what would be copied, write nothing")
    args = parser.parse_args(argv)
    try:
        summary = publish(args.src, args.dest, replace=args.replace, dry_run=args.dry_run)
    except PublishError as err:
        print(f"publish: {err}", file=sys.stderr)
        return 2
    verb = "would copy" if args.dry_run else "copied"
    print(f"[publish] {verb} {len(summary.copied)} runs to {args.dest}; {len(summary.unchanged)} already there; "
          f"{len(summary.skipped)} not completed, left out")
    for name, fields in summary.absolute.items():
        print(f"[publish] {name}: still an absolute path in {', '.join(fields)} (check before committing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
