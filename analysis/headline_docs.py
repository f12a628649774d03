"""The `python -m analysis headline` command line and the headline copies embedded in documents
(docs/design.md §11).

A document embeds a headline between markers that hold its command:
`<!-- headline: python -m analysis headline FOLDER [options] -->` ... `<!-- /headline -->`. `refresh`
(`--check FILE`, `--write FILE`) recomputes those blocks and compares or rewrites them, so a README's tables
stay equal to the records (tests/test_headline.py checks every committed one). The views themselves:
`analysis.headline`.
"""
from __future__ import annotations

import argparse
import difflib
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from analysis.costs import DEFAULT_CONVENTION
from analysis.headline import Computer, HeadlineOptions
from analysis.headline_views import COMPETITORS
from analysis.report import DEFAULT_TOLERANCES, ReportOptions
from analysis.selection import STATS
from analysis.stats import RECOMMENDED_REPLICATES

SAVINGS_TOLERANCE = max(DEFAULT_TOLERANCES)  # the report's second tolerance: a τ a little below tuned
COMMAND = "python -m analysis headline"
BLOCK = re.compile(r"(?P<open><!-- headline: (?P<command>[^\n]*?) -->\n)(?P<body>.*?)(?P<close><!-- /headline -->)",
                   re.DOTALL)


# ---------------------------------------------------------------------------------------------
# Blocks embedded in documents


@dataclass
class Block:
    """One embedded headline: its command (the marker's text), where its body starts and ends, the body."""

    command: str
    start: int
    end: int
    body: str


def find_blocks(text: str, where: str = "the document") -> list[Block]:
    """Every `<!-- headline: COMMAND -->` ... `<!-- /headline -->` block of `text`, in order.

    Raises ValueError naming `where` and the line when a marker is unclosed or its command is not
    `python -m analysis headline ...`.
    """
    blocks = []
    for match in BLOCK.finditer(text):
        command = match["command"].strip()
        if not command.startswith(COMMAND + " "):
            line = text.count("\n", 0, match.start()) + 1
            raise ValueError(f"{where}, line {line}: a headline marker must hold `{COMMAND} ...`, got {command!r}")
        blocks.append(Block(command, match.end("open"), match.start("close"), match["body"]))
    opened = text.count("<!-- headline:")
    if opened != len(blocks) or text.count("<!-- /headline -->") != len(blocks):
        raise ValueError(f"{where}: {opened} headline markers open and {text.count('<!-- /headline -->')} close, "
                         f"{len(blocks)} form blocks; each `<!-- headline: {COMMAND} ... -->` needs a "
                         "`<!-- /headline -->` after it")
    return blocks


def block_arguments(command: str) -> list[str]:
    """The arguments of a marker's command after `python -m analysis headline`."""
    return shlex.split(command)[len(COMMAND.split()):]


# ---------------------------------------------------------------------------------------------
# Command line: `python -m analysis headline` (wired in analysis/__main__.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", type=Path,
                        help="results or runs folder (any folder holding <sweep_id>/<run_id>/record.json below it); "
                             "optional with --check/--write, which then redo every block of FILE")
    parser.add_argument("--baseline", default="dpo",
                        help="the tuned baseline the arms are compared with (default: dpo)")
    parser.add_argument("--metric", help="score column (default: as for `report`: the runs' `objective`, else "
                                         "gold_reward)")
    parser.add_argument("--arms", nargs="+", metavar="METHOD",
                        help="methods shown beside the tuned baseline, in this order (default: every IMI method, "
                             f"then {', '.join(COMPETITORS)})")
    parser.add_argument("--clean", action="store_true", help="clean-label settings only (leave out trap settings)")
    parser.add_argument("--all-configs", action="store_true",
                        help="every configuration of each IMI method (its ablations: other signals, marginal contexts), "
                             "one column or row each; default: an IMI method that ran its declared defaults shows "
                             "those runs alone, one column named after it (the comparison and --savings)")
    parser.add_argument("--stat", choices=STATS, default="mean",
                        help="seed statistic that scores a configuration (default: mean, as for `report`)")
    parser.add_argument("--n-boot", type=int, default=RECOMMENDED_REPLICATES,
                        help=f"bootstrap replicates (default: {RECOMMENDED_REPLICATES}, as for `report`)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default: 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default: 0)")
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--savings", dest="view", action="store_const", const="savings",
                      help="per setting and arm: τ, the cheapest of the report's tuners (grid search, random search, "
                           "successive halving) that reaches τ, its FLOPs, the arm's P(reach τ) and its saving in "
                           "FLOPs against it (the report's `savings` table)")
    view.add_argument("--mechanism", dest="view", action="store_const", const="mechanism",
                      help="per setting and IMI method: which signal controls ΔPMI beats, whether its length-free "
                           "part keeps it, and the reading (the report's §2a `signal_verdicts`; needs signal-control "
                           "runs, experiment=ablation_signal)")
    view.add_argument("--per-seed", dest="view", action="store_const", const="seeds",
                      help="per setting and configuration (the SFT model first): each seed's Δ vs SFT and their "
                           "mean, and min–max over seeds of KL, each lm-eval accuracy, the IMI acting share and wall "
                           "seconds — the runs behind the comparison, no interval; --arms: these methods' "
                           "configurations (default: all)")
    parser.set_defaults(view="comparison")
    parser.add_argument("--tolerance", type=float, metavar="TOL",
                        help=f"with --savings: τ = tuned baseline's test score − TOL, in metric units (default: "
                             f"{SAVINGS_TOLERANCE:g}, the report's second tolerance)")
    parser.add_argument("--optuna-tuners", action="store_true",
                        help="with --savings: Optuna's samplers and pruners replayed among the tuners, the cheapest "
                             "chosen again in every replicate (the report's `--optuna-tuners` lead table; minutes)")
    convention = parser.add_mutually_exclusive_group()
    for flag, name in (("--per-procedure", "per_procedure"), ("--amortize", "amortize"), ("--per-run", "per_run")):
        convention.add_argument(flag, dest="convention", action="store_const", const=name,
                                help=f"with --savings: shared builds charged as `report {flag}`"
                                     + (" (default)" if name == DEFAULT_CONVENTION else ""))
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--check", type=Path, metavar="FILE",
                        help="compare the block of FILE whose marker holds this command (every block, without a "
                             "folder) with what the command prints; exit 1 and show the difference if they differ")
    target.add_argument("--write", type=Path, metavar="FILE", help="rewrite those blocks of FILE with what the "
                                                                   "command prints")


def options_from(args: argparse.Namespace) -> HeadlineOptions:
    """The options of a parsed command; ValueError where a savings option comes without --savings."""
    view = args.view
    savings_only = [flag for flag, given in (("--tolerance", args.tolerance is not None),
                                             ("--optuna-tuners", args.optuna_tuners),
                                             ("--per-procedure/--amortize/--per-run", args.convention is not None))
                    if given]
    if savings_only and view != "savings":
        raise ValueError(f"{', '.join(savings_only)}: {'applies' if len(savings_only) == 1 else 'apply'} to --savings "
                         "only")
    extra = {}
    if view == "savings":
        tolerance = SAVINGS_TOLERANCE if args.tolerance is None else args.tolerance
        extra = {"tolerances": (tolerance,), "convention": args.convention or DEFAULT_CONVENTION,
                 "optuna_tuners": bool(args.optuna_tuners)}
    try:
        report = ReportOptions(metric=args.metric, baseline=args.baseline, stat=args.stat, n_boot=args.n_boot,
                               confidence=args.confidence, seed=args.seed, figures=False, **extra)
    except ValueError as err:
        raise ValueError(f"{err} (--tolerance, --n-boot, --confidence)") from None
    return HeadlineOptions(args.baseline, args.metric, tuple(args.arms) if args.arms else None, args.clean, report,
                           view, args.all_configs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=COMMAND, exit_on_error=False)
    add_arguments(parser)
    return parser


def block_namespace(block: Block, where: str) -> argparse.Namespace:
    """A marker's command parsed as the command line would be; ValueError naming `where` if it is not
    a plain headline command (a folder, no --check/--write)."""
    try:
        args, unknown = _parser().parse_known_args(block_arguments(block.command))
    except (argparse.ArgumentError, ValueError) as err:
        raise ValueError(f"{where}: cannot parse the headline marker `{block.command}` ({err})") from None
    if unknown:
        raise ValueError(f"{where}: cannot parse the headline marker `{block.command}` (unknown {' '.join(unknown)})")
    if args.runs_dir is None or args.check or args.write:
        raise ValueError(f"{where}: the headline marker `{block.command}` must name a results folder and "
                         "have no --check/--write")
    try:
        options_from(args)
    except ValueError as err:
        raise ValueError(f"{where}: the headline marker `{block.command}`: {err}") from None
    return args


def _same_command(a: argparse.Namespace, b: argparse.Namespace, root: Path) -> bool:
    """Whether two commands print the same headline: the same folder and options, in any order or spelling."""
    return (options_from(a), (root / a.runs_dir).resolve()) == (options_from(b), (root / b.runs_dir).resolve())


def refresh(path: Path, args: argparse.Namespace | None = None, root: Path | None = None,
            write: bool = False, computer: Computer | None = None) -> tuple[str, list[str]]:
    """Recompute the headline blocks of the document `path`: every block, or (given `args`) the ones
    whose marker holds the same command. Folders in markers are relative to `root` (default: the
    current directory, i.e. run from the repository root). Returns (the updated text, one unified diff
    per block that differs); with write=True the file is rewritten when a block differs. A `computer`
    (built on the same root) shares loaded records between calls.
    """
    root = Path.cwd() if root is None else Path(root)
    computer = computer or Computer(root)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file to check for headline blocks")
    text = path.read_text()
    blocks = find_blocks(text, str(path))
    parsed = [block_namespace(b, f"{path}, line {text.count(chr(10), 0, b.start)}") for b in blocks]
    chosen = [(b, ns) for b, ns in zip(blocks, parsed) if args is None or _same_command(ns, args, root)]
    if not chosen:
        listed = "; ".join(f"`{b.command}`" for b in blocks) or "none"
        raise ValueError(f"{path}: no headline block holds this command; its blocks: {listed}")
    diffs, pieces, last = [], [], 0
    for block, ns in chosen:
        try:
            body = computer.markdown(ns.runs_dir, options_from(ns))
        except ValueError as err:
            raise ValueError(f"{path}: the headline marker `{block.command}`: {err}") from None
        if body != block.body:
            diffs.append("".join(difflib.unified_diff(block.body.splitlines(True), body.splitlines(True),
                                                      f"{path}: {block.command}", "the command's output")))
        pieces += [text[last:block.start], body]
        last = block.end
    updated = "".join(pieces) + text[last:]
    if write and updated != text:
        path.write_text(updated)
    return updated, diffs


def run(args: argparse.Namespace) -> int:
    """The `headline` subcommand: print the table, or check/rewrite the blocks of a file (exit 1 when a
    checked block differs, 2 on bad input)."""
    target = args.check or args.write
    try:
        if target is None:
            if args.runs_dir is None:
                raise ValueError("a results folder is required (or --check/--write FILE)")
            print(Computer(Path.cwd()).markdown(args.runs_dir, options_from(args)), end="")
            return 0
        _, diffs = refresh(target, args if args.runs_dir is not None else None, write=bool(args.write))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.write:
        print(f"{target}: {len(diffs)} headline block(s) rewritten" if diffs else f"{target}: up to date")
        return 0
    for diff in diffs:
        print(diff, end="" if diff.endswith("\n") else "\n")
    if diffs:
        print(f"{target}: {len(diffs)} headline block(s) differ from the records; refresh with "
              f"`{COMMAND} --write {target}`", file=sys.stderr)
        return 1
    print(f"{target}: headline blocks match the records")
    return 0
