"""The headline tables of a results folder, generated from its run records (docs/design.md §11, §11a).

Four views: the comparison (each arm's Δ vs the tuned baseline), `--savings` (the saving against the
cheapest tuner that reaches τ), `--mechanism` (ΔPMI against its signal controls) and `--per-seed` (the runs
behind the comparison). The first three's cells are cells of the report's tables, made by the same calls with
the same defaults, so a headline equals its report (those two views: `analysis.headline_views`; the per-seed
view, values of single runs: `analysis.seed_view`). Documents embed a headline between markers that hold its
command, which `refresh` (`--check FILE`, `--write FILE`) compares or rewrites. Owns the comparison's shape,
the markers and the command line; no statistics.
"""
from __future__ import annotations

import argparse
import difflib
import re
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from analysis.costs import DEFAULT_CONVENTION
from analysis.entries import build_entries, comparison_table
from analysis.headline_views import (COMPETITORS, ReportRuns, choose_arms, mechanism_markdown, mechanism_table,
                                     report_runs, savings_markdown, savings_table)
from analysis.load import LoadedRuns, load_runs
from analysis.sft_level import sft_levels
from analysis.report import DEFAULT_TOLERANCES, ReportOptions
from analysis.report_context import setting_name
from analysis.seed_view import seeds_markdown, seeds_table
from analysis.selection import STATS
from analysis.stats import RECOMMENDED_REPLICATES
from analysis.tables import fmt_score, fmt_signed, to_markdown, with_interval

VIEWS = ("comparison", "savings", "mechanism", "seeds")
SAVINGS_TOLERANCE = max(DEFAULT_TOLERANCES)  # the report's second tolerance: a τ a little below tuned
COMMAND = "python -m analysis headline"
BLOCK = re.compile(r"(?P<open><!-- headline: (?P<command>[^\n]*?) -->\n)(?P<body>.*?)(?P<close><!-- /headline -->)",
                   re.DOTALL)


@dataclass(frozen=True)
class HeadlineOptions:
    """What a headline shows. arms None = every IMI arm, then COMPETITORS present in the records;
    otherwise method names (`method.name`), each shown with every untuned entry it has on a setting.
    view: one of VIEWS; the savings view reads its tolerance (one), convention and optuna_tuners from
    `report`."""

    baseline: str = "dpo"
    metric: str | None = None
    arms: tuple[str, ...] | None = None
    clean: bool = False  # only clean-label settings (trap settings left out)
    report: ReportOptions = ReportOptions()  # stat, n_boot, confidence and seed, as the report's
    view: str = "comparison"

    def __post_init__(self):
        if self.view not in VIEWS:
            raise ValueError(f"headline view must be one of {list(VIEWS)}, got {self.view!r}")
        if self.view == "savings" and len(self.report.tolerances) != 1:
            raise ValueError(f"the savings view shows one tolerance, got {list(self.report.tolerances)}")


def comparison(loaded: LoadedRuns, options: HeadlineOptions = HeadlineOptions()) -> tuple[pd.DataFrame, str]:
    """The report's comparison table of these runs against `options.baseline`, and the metric used.

    The steps of `report.build_report` that the comparison depends on, in its order: live-study trials are
    set apart, runs without the metric are dropped after annotation, one bootstrap is drawn over all the
    rest (every arm, so the replicates equal the report's), then SFT levels, entries and the table.
    """
    o = options.report
    return comparison_of(report_runs(loaded, options.metric, o.n_boot, o.seed), options)


def comparison_of(r: ReportRuns, options: HeadlineOptions) -> tuple[pd.DataFrame, str]:
    """`comparison` on runs already prepared by `report_runs`."""
    o = options.report
    runs, boot, metric = r.runs, r.boot, r.metric
    sft = sft_levels(runs, metric, boot, o.confidence)
    entries = build_entries(runs, boot, metric, o.stat)
    table = comparison_table(entries, runs, boot, metric, o.stat, options.baseline, sft, o.confidence)
    is_imi = runs.groupby("method.name")["is_imi"].first()
    table["is_imi"] = table["method"].map(is_imi).eq(True)  # the SFT rows have no method: not IMI
    return table, metric


def shown_arms(table: pd.DataFrame, options: HeadlineOptions) -> list[str]:
    """The entries shown beside the tuned baseline, in column order (see HeadlineOptions.arms)."""
    return choose_arms(table[table["kind"].isin(["fixed", "default"])], options.arms)


def headline_table(table: pd.DataFrame, options: HeadlineOptions) -> tuple[pd.DataFrame, list[str]]:
    """Strings for people, one row per setting with a tuned baseline, clean settings first: setting,
    SFT, tuned <baseline> (config), its Δ vs SFT [CI], then each shown arm's Δ vs tuned [CI] ("–"
    where the arm did not run); and the settings left out for want of a tuned baseline."""
    baseline = options.baseline
    clean = table["trap"].fillna("") == ""
    if options.clean:
        table = table[clean]
    tuned = table[(table["method"] == baseline) & (table["kind"] == "tuned")]
    if tuned.empty:
        tuned_methods = sorted(table.loc[table["kind"] == "tuned", "method"].unique())
        raise ValueError(f"no {'clean ' if options.clean else ''}setting has a tuned {baseline!r} (≥ 2 "
                         f"configurations) to compare against; tuned methods there: {tuned_methods}")
    tuned = tuned.assign(_trap=tuned["trap"].fillna("") != "").sort_values(["_trap", "setting"], kind="stable")
    sft = table[table["kind"] == "sft"].set_index("setting")["score"]
    arms = shown_arms(table, options)
    rows = []
    for t in tuned.itertuples(index=False):
        here = table[table["setting"] == t.setting].set_index("entry")
        # a choice made on test is the oracle, not a tuned score: the cell says so
        config = t.config if t.selected_on == "validation" else f"{t.config}, selected on TEST"
        row = {"setting": setting_name(t.setting, t.trap), "SFT": fmt_score(sft.get(t.setting)),
               f"tuned {baseline} (config)": f"{fmt_score(t.score)} ({config})",
               "Δ vs SFT": with_interval(t.delta_sft, t.delta_sft_ci_low, t.delta_sft_ci_high, fmt_signed)}
        for arm in arms:
            row[arm] = (with_interval(here.at[arm, "delta_tuned"], here.at[arm, "delta_tuned_ci_low"],
                                      here.at[arm, "delta_tuned_ci_high"], fmt_signed) if arm in here.index else "–")
        rows.append(row)
    left_out = sorted(set(table["setting"]) - set(tuned["setting"]))
    return pd.DataFrame(rows), left_out


def headline_markdown(loaded: LoadedRuns, options: HeadlineOptions = HeadlineOptions()) -> str:
    """The headline of `options.view`: a Markdown table and the lines that define its numbers."""
    o = options.report
    r = report_runs(loaded, options.metric, o.n_boot, o.seed)
    return render_view(compute_view(r, options), r.metric, options)


def compute_view(r: ReportRuns, options: HeadlineOptions):
    """What `options.view` needs from the report's calls; `options.arms` and `clean` play no part."""
    if options.view == "savings":
        return savings_table(r, options)
    if options.view == "mechanism":
        return mechanism_table(r, options)
    if options.view == "seeds":
        return r.runs
    return comparison_of(r, options)[0]


def render_view(computed, metric: str, options: HeadlineOptions) -> str:
    """The Markdown of `compute_view`'s output."""
    if options.view == "savings":
        return savings_markdown(computed, metric, options)
    if options.view == "mechanism":
        return mechanism_markdown(computed, metric, options)
    if options.view == "seeds":
        return seeds_markdown(seeds_table(computed, metric, options.baseline, options.arms, options.clean), metric)
    return render(computed, metric, options)


def render(table: pd.DataFrame, metric: str, options: HeadlineOptions) -> str:
    """The headline of a comparison table (`comparison`'s output)."""
    shown, left_out = headline_table(table, options)
    o = options.report
    conf = f"{100 * o.confidence:g}%"
    missing = (f" Not shown (no tuned {options.baseline}): {', '.join(left_out)}." if left_out else "")
    return (to_markdown(shown) + "\n\n"
            f"*`{metric}` on the test prompts, {o.stat} over seeds. tuned = the configuration with the best "
            f"{o.stat} validation score (re-selected in every bootstrap replicate); Δ vs SFT = tuned − the SFT "
            f"model, paired per run; the other columns: Δ = the arm − tuned {options.baseline}. [{conf} interval]: "
            f"seed bootstrap, {o.n_boot} replicates, random seed {o.seed}, as in `python -m analysis report`."
            f"{missing}*\n")


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
                           view)


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


class Computer:
    """Runs headline commands, loading each folder, drawing each bootstrap and computing each view once."""

    def __init__(self, root: Path):
        self.root = root
        self.loaded: dict[Path, LoadedRuns] = {}
        self.runs: dict[tuple, ReportRuns] = {}
        self.views: dict[tuple, object] = {}

    def markdown(self, args: argparse.Namespace) -> str:
        folder = (self.root / args.runs_dir).resolve()
        if folder not in self.loaded:
            self.loaded[folder] = load_runs(folder)
        options = options_from(args)
        o = options.report
        runs_key = (folder, options.metric, o.n_boot, o.seed)
        if runs_key not in self.runs:
            self.runs[runs_key] = report_runs(self.loaded[folder], options.metric, o.n_boot, o.seed)
        r = self.runs[runs_key]
        # arms and --clean only choose cells: one computation serves every block of a folder, view and baseline
        key = (folder, replace(options, arms=None, clean=False))
        if key not in self.views:
            self.views[key] = compute_view(r, options)
        return render_view(self.views[key], r.metric, options)


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
            body = computer.markdown(ns)
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
            print(Computer(Path.cwd()).markdown(args), end="")
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
