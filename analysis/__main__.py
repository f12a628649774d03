"""Command line: `python -m analysis report|runs|headline|coverage|tuners ...` (also installed as `imi-bench-report`).

Only parses arguments and prints (`--help` lists each command's options); the work is in `analysis.report`,
`analysis.load`, `analysis.headline(_docs)` and `analysis.coverage`. Bad input (a missing folder, an unknown metric)
exits with status 2 and a one-line message.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis import coverage, headline, headline_docs, tuner_report
from analysis.costs import DEFAULT_CONVENTION
from analysis.load import LoadedRuns, load_runs
from analysis.report import DEFAULT_TOLERANCES, ReportOptions, build_report, resolve_metric
from analysis.selection import STATS
from analysis.stats import RECOMMENDED_REPLICATES
from analysis.tuner_models import IDEALISED, PRACTITIONER
from analysis.wandb_runs import load_wandb_runs


def _add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", type=Path,
                        help="runs root (<root>/<sweep_id>/<run_id>/record.json), one sweep folder, or one run folder")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT",
                        help="read the runs from the W&B API instead of a folder (needs network and `wandb login`)")
    parser.add_argument("--wandb-group", metavar="SWEEP_ID", help="with --wandb: only runs of this group (sweep id)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis",
                                     description="Tuning-cost analysis of imi-bench run records (docs/design.md §11).")
    commands = parser.add_subparsers(dest="command", required=True)

    report = commands.add_parser("report", help="write report.md, CSV/LaTeX tables and PNG/PDF figures",
                                 description="Write report.md, tables (CSV + LaTeX) and figures (PNG + PDF).")
    _add_source(report)
    report.add_argument("--out", type=Path, help="output folder (default: <runs dir>/report)")
    report.add_argument("--metric", help="score column, higher is better (default: the runs' `objective` config, "
                                         "else gold_reward); e.g. win_rate, pref_acc, lm_eval/<task>/<metric>")
    report.add_argument("--baseline", default="dpo", help="the tuned baseline that sets the target τ (default: dpo)")
    report.add_argument("--tolerance", type=float, nargs="+", default=list(DEFAULT_TOLERANCES), metavar="TOL",
                        help="τ = the test score of the baseline's validation-selected configuration − TOL, in metric "
                             "units; several allowed (default: 0 0.05)")
    convention = report.add_mutually_exclusive_group()
    convention.add_argument("--per-procedure", dest="convention", action="store_const", const="per_procedure",
                            help="charge each shared SFT/dataset/reference build once per tuning procedure (an arm on "
                                 "a setting), plus its runs' own costs (default)")
    convention.add_argument("--amortize", dest="convention", action="store_const", const="amortize",
                            help="charge each shared build once, split equally over the loaded runs that used it")
    convention.add_argument("--per-run", dest="convention", action="store_const", const="per_run",
                            help="charge every run the full cost of each shared build it used")
    report.set_defaults(convention=DEFAULT_CONVENTION)
    report.add_argument("--stat", choices=STATS, default="mean",
                        help="seed statistic that scores a configuration (default: mean)")
    report.add_argument("--n-boot", type=int, default=RECOMMENDED_REPLICATES,
                        help=f"bootstrap replicates (default: {RECOMMENDED_REPLICATES}; the expanded interval's tail "
                             "quantiles need thousands)")
    report.add_argument("--confidence", type=float, default=0.95, help="interval level (default: 0.95)")
    report.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default: 0)")
    report.add_argument("--idealised-tuners", dest="tuner_model", action="store_const", const=IDEALISED,
                        default=PRACTITIONER,
                        help="tuners select on each configuration's statistic over all seeds while charged one run "
                             "per configuration (labelled 'idealised'); default: the practitioner's model, one run "
                             "per configuration at one seed")
    report.add_argument("--no-figures", dest="figures", action="store_false",
                        help="write the tables and report.md only (figures are most of the run time)")
    report.add_argument("--optuna-tuners", action="store_true",
                        help="lead with each IMI run's saving against the cheapest tuner to reach τ, Optuna's samplers "
                             "and pruners replayed against the records (minutes on a dense grid; `tuners` has the rest)")

    runs = commands.add_parser("runs", help="print the runs table (method, dataset, β, seed, metric, status)",
                               description="Print one line per run, completed or not, with why a run is left out.")
    _add_source(runs)
    runs.add_argument("--metric", help="metric column to show (default: as for `report`)")
    runs.add_argument("--csv", action="store_true", help="print CSV instead of an aligned table")

    coverage.add_arguments(commands.add_parser(
        "coverage", help="simulate the coverage of the report's intervals under a model fitted to run records",
        description=coverage.__doc__.splitlines()[0]))
    headline_docs.add_arguments(commands.add_parser(
        "headline", help="print the headline table (SFT, tuned baseline, each arm's Δ vs tuned; --savings: the saving "
                         "against the cheapest tuner to τ; --mechanism: ΔPMI vs its controls; --per-seed: the runs "
                         "behind it), or check/refresh the copies embedded in a document", description=headline.__doc__.splitlines()[0]))
    tuner_report.add_arguments(commands.add_parser(
        "tuners", help="replay Optuna's samplers and pruners against the records: cost to τ, IMI's saving against "
                       "the cheapest tuner, time to τ", description=tuner_report.__doc__.splitlines()[0]))
    return parser


def _load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> LoadedRuns:
    if args.wandb:
        if args.runs_dir is not None:
            parser.error("give either a runs folder or --wandb, not both")
        filters = {"group": args.wandb_group} if args.wandb_group else None
        return load_wandb_runs(args.wandb, filters)
    if args.runs_dir is None:
        parser.error("a runs folder (or --wandb ENTITY/PROJECT) is required")
    return load_runs(args.runs_dir)


def runs_table(loaded: LoadedRuns, metric: str) -> pd.DataFrame:
    """One row per run, completed or skipped: sweep, run, method, dataset, setup, β, seed, metric, status, note."""
    columns = ["sweep_id", "run_id", "method.name", "dataset.name", "hardware.name", "method.beta", "seed", metric]
    done = loaded.runs.reindex(columns=columns).assign(status="completed", note="")
    skipped = loaded.skipped.reindex(columns=[*columns, "status", "reason"]).rename(columns={"reason": "note"})
    skipped["status"] = loaded.skipped["skip"].to_numpy()
    table = pd.concat([done, skipped], ignore_index=True)
    seeds = pd.to_numeric(table["seed"], errors="coerce")
    if (seeds.dropna() % 1 == 0).all():  # integer seeds print as 2, not 2.0, beside the missing ones
        table["seed"] = seeds.astype("Int64")
    return table.rename(columns={"method.name": "method", "dataset.name": "dataset", "hardware.name": "setup",
                                 "method.beta": "beta"})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "headline":
        return headline_docs.run(args)
    if args.command == "coverage":
        return coverage.run(args)
    if args.command == "tuners":
        return tuner_report.run(args)
    try:
        loaded = _load(args, parser)
        if args.command == "runs":
            metric = resolve_metric(loaded.runs, args.metric)
            table = runs_table(loaded, metric)
            if args.csv:
                print(table.to_csv(index=False), end="")
            else:
                with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                                       "display.max_colwidth", 80):
                    shown = table.round({metric: 4}).astype(object)
                    text = shown.where(table.notna(), "").to_string(index=False) if len(table) else "(no runs)"
                    print("\n".join(line.rstrip() for line in text.splitlines()))
                print(loaded.skip_summary())
            return 0
        out = args.out or (args.runs_dir / "report" if args.runs_dir else Path("report"))
        options = ReportOptions(metric=args.metric, baseline=args.baseline, tolerances=tuple(args.tolerance),
                                convention=args.convention, stat=args.stat, n_boot=args.n_boot,
                                confidence=args.confidence, seed=args.seed, tuner_model=args.tuner_model,
                                figures=args.figures, optuna_tuners=args.optuna_tuners)
        report = build_report(loaded, out, options, source=args.wandb or str(args.runs_dir))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(loaded.skip_summary())
    print(f"verdict: {report.verdict}")
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {report.report_md}")
    print(f"tables: {report.out_dir / 'tables'}")
    print(f"figures: {report.out_dir / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
