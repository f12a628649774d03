"""Training throughput: the suite's PreferenceTrainer against TRL 1.16's DPOTrainer, on one CPU workload.

`python -m bench.benchmark [--workload builtin|smollm2] [--steps N] [--repeats R] [--threads T ...]
[--cache-root DIR] [--out DIR] [--profile ...]`

Builds one workload: `builtin` (default), a tiny Llama from conf/model/tiny.yaml with the word tokenizer
of a built-in task and preference pairs drawn from that task's prompts and demonstrations; or `smollm2`,
SmolLM2-135M-Instruct loaded as `model=smollm2` loads it (top 2 blocks trainable) with fixed pairs from
the constraints task (bench.benchmark.real_model). Times each training variant on it with the same
per-step clock, measures an fp32 matmul peak on the same machine to put the achieved model FLOP/s in
proportion, and writes the result (JSON + markdown, with provenance) to results/throughput/
(throughput.* for builtin, throughput_smollm2.* for the real model). Outside the training core: it sees
our trainer's steps only through the trainer's step-callback interface, and TRL's through a
transformers TrainerCallback.

Must not: change how either trainer trains (both run as a user would run them, only their one-off
setup and warm-up steps are left out of the clock), or judge a claim from a single run: every ratio
is measured within one repeat, where the variants ran back to back, and reported as the median and
spread over repeats, because these machines are shared and noisy.

Token count (the same for both sides): non-pad tokens of the step's [2B, L] batch, i.e. of
[BOS] prompt chosen [EOS] plus [BOS] prompt rejected [EOS] for each of the B pairs. Both sides feed
the model exactly the same token sequences (checked before timing: `check_same_sequences`) and train
exactly the same parameters (`check_same_trainable` before, `check_frozen_unchanged` after training).

Modules: workload (the pairs and model; the built-in workload), real_model (the SmolLM2 workload),
variants (what is compared, and the claims per workload), clock (the per-step clock and the hooks
feeding it), runners (training each variant), peak (matmul peak, model FLOP/s), summary (ratios and
verdicts), render (files), cli (repeats and the command line).
"""
from bench.benchmark.cli import DEFAULT_OUT, SCHEMA_VERSION, WORKLOAD_DEFAULTS, main, make_workload, run_benchmark
from bench.benchmark.clock import StepClock, TrainerClock
from bench.benchmark.peak import matmul_gflops, model_gflops, representative_shape
from bench.benchmark.render import profile_variants, render_markdown, result_paths, write_results
from bench.benchmark.runners import loss_costs, run_variant
from bench.benchmark.summary import summarise
from bench.benchmark.variants import DEFAULT_VARIANTS, EXCLUDED_FROM_TIMING, RATIOS, VARIANTS, claims_for
from bench.benchmark.workload import (
    WORKLOADS,
    Workload,
    build_workload,
    check_frozen_unchanged,
    check_same_sequences,
    check_same_trainable,
    method_config,
    our_reference_terms,
    sample_records,
    trainable_names,
    trl_texts,
)

__all__ = [
    "DEFAULT_OUT", "DEFAULT_VARIANTS", "EXCLUDED_FROM_TIMING", "RATIOS", "SCHEMA_VERSION", "StepClock",
    "TrainerClock", "VARIANTS", "WORKLOADS", "WORKLOAD_DEFAULTS", "Workload", "build_workload",
    "check_frozen_unchanged", "check_same_sequences", "check_same_trainable", "claims_for", "loss_costs", "main",
    "make_workload", "matmul_gflops", "method_config", "model_gflops", "our_reference_terms", "profile_variants",
    "render_markdown", "representative_shape", "result_paths", "run_benchmark", "run_variant", "sample_records",
    "summarise", "trainable_names", "trl_texts", "write_results",
]
