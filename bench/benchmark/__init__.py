"""Training throughput: the suite's PreferenceTrainer against TRL 1.16's DPOTrainer, on one CPU workload.

`python -m bench.benchmark [--steps N] [--repeats R] [--threads T ...] [--out DIR] [--profile ...]`

Builds one workload (a tiny Llama from conf/model/tiny.yaml, the word tokenizer of a built-in task,
preference pairs drawn from that task's prompts and demonstrations), times each training variant on it
with the same per-step clock, measures an fp32 matmul peak on the same machine to put the achieved
model FLOP/s in proportion, and writes the result (JSON + markdown, with provenance) to
results/throughput/. Outside the training core: it sees our trainer's steps only through the trainer's
step-callback interface, and TRL's through a transformers TrainerCallback.

Must not: change how either trainer trains (both run as a user would run them, only their one-off
setup and warm-up steps are left out of the clock), or judge a claim from a single run: every ratio
is measured within one repeat, where the variants ran back to back, and reported as the median and
spread over repeats, because these machines are shared and noisy.

Token count (the same for both sides): non-pad tokens of the step's [2B, L] batch, i.e. of
[BOS] prompt chosen [EOS] plus [BOS] prompt rejected [EOS] for each of the B pairs. Both sides feed
the model exactly the same token sequences (checked before timing: `check_same_sequences`).

Modules: workload (the pairs and model), variants (what is compared), clock (the per-step clock and
the hooks feeding it), runners (training each variant), peak (matmul peak, model FLOP/s), summary
(ratios and verdicts), render (files), cli (repeats and the command line).
"""
from bench.benchmark.cli import DEFAULT_OUT, SCHEMA_VERSION, main, run_benchmark
from bench.benchmark.clock import StepClock, TrainerClock
from bench.benchmark.peak import matmul_gflops, model_gflops, representative_shape
from bench.benchmark.render import profile_variants, render_markdown, write_results
from bench.benchmark.runners import loss_costs, run_variant
from bench.benchmark.summary import summarise
from bench.benchmark.variants import EXCLUDED_FROM_TIMING, RATIOS, VARIANTS
from bench.benchmark.workload import (
    Workload,
    build_workload,
    check_same_sequences,
    method_config,
    our_reference_terms,
    sample_records,
    trl_texts,
)

__all__ = [
    "DEFAULT_OUT", "EXCLUDED_FROM_TIMING", "RATIOS", "SCHEMA_VERSION", "VARIANTS", "StepClock", "TrainerClock",
    "Workload", "build_workload", "check_same_sequences", "loss_costs", "main", "matmul_gflops", "method_config",
    "model_gflops", "our_reference_terms", "profile_variants", "render_markdown", "representative_shape", "run_benchmark",
    "run_variant", "sample_records", "summarise", "trl_texts", "write_results",
]
