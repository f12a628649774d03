"""`python -m bench.benchmark.sampling`: sampling tokens/s on SmolLM2-135M-Instruct, transformers' `generate`
(`bench.generation.generate_responses`, the path before the decode loop) against the suite's KV-cache decode
loop (`sample_sets`), side by side on the same prompts and model.

Cases: one temperature-1 sample per prompt, one greedy answer per prompt, and what an evaluation draws from
the policy (a sample and a greedy answer per prompt: two `generate` calls against one shared-prefill call).
Each repeat runs every (case, path) back to back, the order rotated between repeats; each ratio is taken
within a repeat and reported as the median and spread over repeats, as bench.benchmark reports its own.
Writes results/throughput/sampling_smollm2.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from bench.benchmark.cli import DEFAULT_CACHE_ROOT, DEFAULT_OUT, cpu_model, load_average
from bench.benchmark.render import fmt_spread
from bench.benchmark.summary import spread
from bench.benchmark.workload import CONF_DIR
from bench.generation import generate_responses, sample_sets
from bench.provenance import now, provenance

SCHEMA_VERSION = 1
TASK = "constraints"
# (case, what one call of each path draws): the seeds of the sets (None = greedy)
CASES = {"sample": [0], "greedy": [None], "evaluation": [0, None]}
PATHS = ("generate", "decode_loop")
# the claim: an evaluation's policy sampling, the decode loop over generate, tokens/s
CLAIM = ("evaluation", ">=", 2.0)


def draw(path: str, model, tokenizer, prompts: list[str], cap: int, seeds: list, seed: int) -> list[list]:
    """One call of `path` for the sets `seeds` (offset by `seed`): generate draws set by set, the decode
    loop all sets in one call."""
    seeds = [None if s is None else s + seed for s in seeds]
    if path == "generate":
        return [generate_responses(model, tokenizer, prompts, cap, greedy=s is None, seed=s or 0) for s in seeds]
    return sample_sets(model, tokenizer, prompts, cap, seeds)


def timed(path: str, model, tokenizer, prompts: list[str], cap: int, seeds: list, seed: int) -> dict:
    started, cpu = time.perf_counter(), time.process_time()
    sets = draw(path, model, tokenizer, prompts, cap, seeds, seed)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    tokens = sum(len(s.response_ids) for samples in sets for s in samples)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "tokens_per_cpu_s": tokens / cpu_seconds, "truncated": sum(s.truncated for x in sets for s in x),
            "greedy_ids": [[s.response_ids for s in x] for x, k in zip(sets, seeds) if k is None]}


def run_sampling_benchmark(n_prompts: int, repeats: int, threads: int, seed: int, cache_root: str | Path,
                           cases: list[str], show_progress: bool = True) -> dict:
    from bench.benchmark.real_model import load_smollm2
    from bench.data.tasks import build_task

    if min(n_prompts, repeats, threads) < 1:
        raise ValueError(f"benchmark: --prompts, --repeats and --threads must be >= 1, got {n_prompts}, {repeats}, "
                         f"{threads}")
    for case in cases:
        if case not in CASES:
            raise ValueError(f"benchmark: unknown case {case!r}; cases: {', '.join(CASES)}")
    torch.set_num_threads(threads)
    model, tokenizer, _ = load_smollm2(cache_root)
    model.eval()
    dataset_cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / f"{TASK}.yaml"))
    task = build_task(TASK, **dataset_cfg["task_kwargs"])
    task.bind_tokenizer(tokenizer)  # prompts rendered with the chat template, as a run renders them
    rng = random.Random(seed)
    prompts = [task.sample_prompt(rng) for _ in range(n_prompts)]
    cap = task.max_response_tokens
    started_at, load = now(), {"before": load_average()}
    for path in PATHS:  # untimed: first-call allocations and thread-pool start-up
        draw(path, model, tokenizer, prompts[:2], cap, [0, None], seed)
    runs = []
    order = [(case, path) for case in cases for path in PATHS]
    for repeat in range(repeats):
        shift = repeat % len(order)
        for position, (case, path) in enumerate(order[shift:] + order[:shift]):
            if show_progress:
                print(f"repeat {repeat} {case} {path}", file=sys.stderr, flush=True)
            # each repeat draws with its own seeds: the sampled answers (and their lengths) vary as in runs
            result = timed(path, model, tokenizer, prompts, cap, CASES[case], seed + 100 * repeat)
            runs.append({"repeat": repeat, "position": position, "case": case, "path": path, **result})
    greedy_identical = _greedy_identical(runs)
    for r in runs:
        del r["greedy_ids"]
    summary = {}
    for case in cases:
        per_path = {path: {key: spread([r[key] for r in runs if r["case"] == case and r["path"] == path])
                           for key in ("tokens_per_s", "tokens_per_cpu_s", "seconds", "tokens")} for path in PATHS}
        by_repeat = {}
        for r in runs:
            if r["case"] == case:
                by_repeat.setdefault(r["repeat"], {})[r["path"]] = r
        ratio = {view: spread([b["decode_loop"][key] / b["generate"][key] for b in by_repeat.values()])
                 for view, key in (("wall", "tokens_per_s"), ("cpu", "tokens_per_cpu_s"))}
        entry = {"paths": per_path, "ratio_tokens_per_s": ratio}
        if case == CLAIM[0]:
            entry["claim"] = f"decode_loop / generate tokens/s {CLAIM[1]} {CLAIM[2]}"
            entry["holds_on_median"] = ratio["wall"]["median"] >= CLAIM[2]
        summary[case] = entry
    return {
        "schema_version": SCHEMA_VERSION,
        "workload": {"name": "sampling_smollm2", "model": "SmolLM2-135M-Instruct (model=smollm2, fp32)",
                     "task": TASK, "n_prompts": n_prompts, "max_new_tokens": cap, "prompt_seed": seed,
                     "sampling": "temperature 1, top-k and top-p off; greedy = argmax"},
        "settings": {"repeats": repeats, "threads": threads, "cases": cases, "paths": list(PATHS),
                     "order": "every (case, path) back to back per repeat, rotated by one per repeat"},
        "cases": {case: CASES[case] for case in cases},
        "token_count": "response tokens returned (EOS excluded) over every set the call draws; prompt tokens are "
                       "not counted. Sampled answers differ between the paths (each draws its own randomness), "
                       "so their token counts differ; greedy answers are the same tokens",
        "greedy_identical": greedy_identical,
        "summary": summary,
        "runs": runs,
        "load": {**load, "after": load_average()},
        "started_at": started_at,
        "finished_at": now(),
        "provenance": {**provenance(seed, None), "cpu_model": cpu_model()},
    }


def _greedy_identical(runs: list[dict]) -> bool:
    """Whether every greedy answer of the decode loop equals generate's (the same tokens both ways)."""
    by_case = {}
    for r in runs:
        if r["greedy_ids"]:
            by_case.setdefault(r["case"], {}).setdefault(r["path"], []).append(r["greedy_ids"])
    return all(len(set(map(json.dumps, p["generate"] + p["decode_loop"]))) == 1 for p in by_case.values())


def render_markdown(results: dict) -> str:
    w, s, prov = results["workload"], results["settings"], results["provenance"]
    lines = [
        "# Sampling throughput: transformers generate vs the KV-cache decode loop (CPU, SmolLM2-135M-Instruct)",
        "",
        f"{w['n_prompts']} `{w['task']}` prompts (chat template), up to {w['max_new_tokens']} new tokens, "
        f"{w['sampling']}; {s['threads']} thread(s), {s['repeats']} interleaved repeats. "
        f"Greedy answers identical on both paths: {results['greedy_identical']}.",
        "",
        "| case | generate tokens/s | decode loop tokens/s | ratio (wall) | ratio (CPU time) |",
        "|---|---|---|---|---|",
    ]
    for case, entry in results["summary"].items():
        p, r = entry["paths"], entry["ratio_tokens_per_s"]
        claim = f" (claim: {entry['claim']}: {'holds' if entry['holds_on_median'] else 'fails'})" if "claim" in entry else ""
        lines.append(f"| {case} {results['cases'][case]} | {fmt_spread(p['generate']['tokens_per_s'])} | "
                     f"{fmt_spread(p['decode_loop']['tokens_per_s'])} | **{fmt_spread(r['wall'])}**{claim} | "
                     f"{fmt_spread(r['cpu'])} |")
    lines += [
        "",
        "Medians [min–max] over repeats; each ratio is taken within a repeat. Sets: an int is a seed (a "
        "temperature-1 sample per prompt), null a greedy answer per prompt. "
        + results["token_count"] + ".",
        "",
        "Not timed here: the reference model's evaluation samples, which a run reads from the shared cache "
        "(`reference_samples`) once any run of its seed drew them, so an evaluation samples two sets where it "
        "sampled three (docs/design.md §7).",
        "",
        f"Load average before {results['load']['before']['load_1m']:.2f}, after "
        f"{results['load']['after']['load_1m']:.2f}. CPU: {prov['cpu_model']}. Commit {prov.get('git_commit')}"
        f"{' (dirty)' if prov.get('git_dirty') else ''}. Command: `{prov.get('command', '')}`",
        "",
    ]
    return "\n".join(lines)


def write_results(results: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "sampling_smollm2.json", out_dir / "sampling_smollm2.md"
    for path, text in zip(paths, (json.dumps(results, indent=1) + "\n", render_markdown(results))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: an interrupted run never leaves half a result
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmark.sampling",
                                     description="Sampling tokens/s on SmolLM2-135M-Instruct: transformers' generate "
                                                 "against the suite's KV-cache decode loop (needs the smollm2 extra).")
    parser.add_argument("--prompts", type=int, default=32, help="constraints prompts per call (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-root", default=DEFAULT_CACHE_ROOT, help="the suite's disk cache, where SmolLM2's "
                        "conversion is kept (default: $IMI_BENCH_CACHE or .cache/imi-bench)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from bench.benchmark.cli import _quiet_libraries

    _quiet_libraries()
    results = run_sampling_benchmark(args.prompts, args.repeats, args.threads, args.seed, args.cache_root, args.cases,
                                     show_progress=not args.no_progress)
    results["provenance"]["command"] = shlex.join(["python", "-m", "bench.benchmark.sampling",
                                                   *(sys.argv[1:] if argv is None else argv)])
    json_path, md_path = write_results(results, args.out)
    for case, entry in results["summary"].items():
        print(f"{case}: decode_loop/generate tokens/s {fmt_spread(entry['ratio_tokens_per_s']['wall'])} "
              f"(cpu {fmt_spread(entry['ratio_tokens_per_s']['cpu'])})")
    print(f"wrote {json_path} and {md_path}")
    return results


if __name__ == "__main__":
    main()
