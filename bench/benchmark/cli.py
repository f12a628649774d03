"""`python -m bench.benchmark`: the command line, the interleaved repeats, and the run's provenance.

Owns: the order runs happen in (every variant back to back within a repeat, rotated between repeats),
the matmul peak measured before each thread count's runs, the machine's load around them, and
checkpointing partial results. See bench/benchmark/__init__.py for what the benchmark measures.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.benchmark.peak import matmul_gflops, model_gflops, representative_shape
from bench.benchmark.render import fmt_spread, profile_variants, write_results
from bench.benchmark.runners import loss_costs, run_variant
from bench.benchmark.summary import summarise
from bench.benchmark.variants import EXCLUDED_FROM_TIMING, TOKEN_COUNT, VARIANTS
from bench.benchmark.workload import build_workload, describe_workload
from bench.models import non_embedding_parameters
from bench.provenance import now, provenance

SCHEMA_VERSION = 2  # 2: positions instead of padded_tokens, matmul peak and model FLOP/s, layouts
DEFAULT_OUT = Path("results/throughput")
FLOPS_CONVENTION = ("6·N per trained token + 2·N per no-grad token, N = non-embedding parameters "
                    "(bench.cost, DESIGN §8; attention, embedding and LM head left out)")


def run_benchmark(steps: int, repeats: int, threads: list[int], warmup: int = 5, batch_size: int | None = None,
                  variants: list[str] | None = None, task: str = "sentiment", seed: int = 0,
                  show_progress: bool = True, command: str | None = None, checkpoint=None) -> dict:
    """Time every variant `repeats` times per thread count, interleaved: each repeat runs all variants
    back to back, in an order rotated by one per repeat so no variant always runs first or last.

    `checkpoint(results)`, if given, receives the results so far (complete=False) after every repeat,
    so that an interrupted benchmark still leaves what it measured, marked as incomplete.
    """
    variants = list(variants or VARIANTS)
    for name in variants:
        if name not in VARIANTS:
            raise ValueError(f"benchmark: unknown variant {name!r}; variants: {', '.join(VARIANTS)}")
    if min(steps, repeats, warmup) < 1 or not threads or min(threads) < 1:
        raise ValueError(f"benchmark: --steps, --repeats, --warmup and --threads must be >= 1, got {steps}, "
                         f"{repeats}, {warmup}, {threads}")
    workload = build_workload(steps, warmup, batch_size, task, seed)
    n_params = non_embedding_parameters(workload.initial_model)
    started_at, runs, load = now(), [], {"before": load_average(), "per_threads": {}}
    loss_only: dict[str, dict] = {}  # threads -> method -> ms (bench.benchmark.runners.loss_costs)
    peaks: dict[str, dict] = {}  # threads -> bench.benchmark.peak.matmul_gflops
    ours = list(dict.fromkeys(VARIANTS[name]["method"] for name in variants if VARIANTS[name]["side"] == "ours"))

    def assemble(complete: bool) -> dict:
        done = sorted({run["threads"] for run in runs}, key=threads.index)
        return {
            "schema_version": SCHEMA_VERSION,
            "complete": complete,
            "workload": describe_workload(workload, steps, warmup),
            "settings": {"steps": steps, "warmup_steps": warmup, "repeats": repeats, "threads": threads,
                         "variants": variants, "order": "rotated by one variant per repeat"},
            "variants": {name: VARIANTS[name] for name in variants},
            "excluded_from_timing": EXCLUDED_FROM_TIMING,
            "token_count": TOKEN_COUNT,
            "flops_convention": FLOPS_CONVENTION,
            "summary": summarise(runs, done, variants, loss_only, peaks),
            "runs": runs,
            "load": {**load, "after": load_average()},
            "started_at": started_at,
            "finished_at": now(),
            "provenance": {**provenance(seed, None), "cpu_model": cpu_model(),
                           **({"command": command} if command else {})},
        }

    bar = tqdm(total=len(threads) * repeats * len(variants), desc="benchmark", disable=not show_progress)
    for n_threads in threads:
        load["per_threads"][str(n_threads)] = {"before": load_average()}
        torch.set_num_threads(n_threads)
        bar.set_postfix(threads=n_threads, stage="matmul peak")
        peaks[str(n_threads)] = matmul_gflops(representative_shape(workload))
        for repeat in range(repeats):
            shift = repeat % len(variants)
            for position, name in enumerate(variants[shift:] + variants[:shift]):
                bar.set_postfix(threads=n_threads, repeat=repeat, variant=name)
                torch.set_num_threads(n_threads)
                result = run_variant(workload, name, warmup)
                if result["torch_threads_seen"] != [n_threads]:
                    raise RuntimeError(f"benchmark: {name} ran with torch threads {result['torch_threads_seen']}, "
                                       f"asked for {n_threads}")
                runs.append({"threads": n_threads, "repeat": repeat, "position": position, "variant": name,
                             **result, "model_gflops": model_gflops(result, n_params)})
                bar.update(1)
            if checkpoint is not None:
                checkpoint(assemble(complete=False))
        if ours:
            bar.set_postfix(threads=n_threads, stage="loss-only costs")
            torch.set_num_threads(n_threads)
            loss_only[str(n_threads)] = loss_costs(workload, ours)
        load["per_threads"][str(n_threads)]["after"] = load_average()
    bar.close()
    return assemble(complete=True)


def load_average() -> dict:
    """The machine's load when the benchmark started/ended (other jobs share these CPUs)."""
    one, five, fifteen = os.getloadavg()
    try:
        uptime = subprocess.run(["uptime"], check=False, capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        uptime = None
    return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "uptime": uptime, "at": now()}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True, timeout=5).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmark", description="Training throughput: "
                                     "the suite's PreferenceTrainer against TRL's DPOTrainer on one CPU workload.")
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per run (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps first (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per thread count (default 5)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts, e.g. 1 2")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: conf train.batch_size)")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS), help="default: all")
    parser.add_argument("--task", default="sentiment", help="built-in task the pairs come from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--profile", nargs="*", metavar="VARIANT", default=None,
                        help="also profile one run of each named variant (default dpo dpo_padded trl_dpo_precomputed) "
                             "and write profile.md")
    args = parser.parse_args(argv)
    _quiet_libraries()
    command = shlex.join(["python", "-m", "bench.benchmark", *(sys.argv[1:] if argv is None else argv)])
    results = run_benchmark(args.steps, args.repeats, args.threads, args.warmup, args.batch_size, args.variants,
                            args.task, args.seed, show_progress=not args.no_progress, command=command,
                            checkpoint=lambda partial: write_results(partial, args.out))
    json_path, md_path = write_results(results, args.out)
    for key, block in results["summary"].items():
        for name, r in block["ratios"].items():
            print(f"{key} {name}: {fmt_spread(r['wall'])} (claim: {r.get('claim', 'report')})")
    print(f"wrote {json_path} and {md_path}")
    if args.profile is not None:
        torch.set_num_threads(args.threads[0])
        workload = build_workload(args.steps, args.warmup, args.batch_size, args.task, args.seed)
        names = args.profile or ["dpo", "dpo_padded", "trl_dpo_precomputed"]
        profile_path = args.out / "profile.md"
        profile_path.write_text(profile_variants(workload, names, args.warmup)
                                + f"\nThreads: {args.threads[0]}. Command: `{results['provenance']['command']}`\n")
        print(f"wrote {profile_path}")
    return results


def _quiet_libraries() -> None:
    """transformers/datasets notices and per-map progress bars would drown the benchmark's own bar."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
