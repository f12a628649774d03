"""Training throughput: the suite's PreferenceTrainer against TRL 1.16's DPOTrainer (and its KTOTrainer, for KTO),
on one CPU workload.

`python -m bench.benchmark [--workload builtin|smollm2] ...` (its --help lists every option) times each training
variant with the same per-step clock on identical sequences and parameters, and writes JSON and markdown with
provenance to results/throughput/. How it keeps the comparison fair, and its modules: docs/architecture.md.
`python -m bench.benchmark.sampling` (bench/benchmark/sampling.py) times sampling on SmolLM2 instead:
transformers' generate against the suite's KV-cache decode loop (docs/design.md §7).
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
    UnpairedWorkload,
    Workload,
    build_workload,
    check_frozen_unchanged,
    check_same_examples,
    check_same_sequences,
    check_same_trainable,
    check_trained_blocks,
    method_config,
    our_reference_terms,
    sample_records,
    trainable_names,
    trainer_block_order,
    trl_texts,
    unpaired_workload,
)

__all__ = [
    "DEFAULT_OUT", "DEFAULT_VARIANTS", "EXCLUDED_FROM_TIMING", "RATIOS", "SCHEMA_VERSION", "StepClock",
    "TrainerClock", "UnpairedWorkload", "VARIANTS", "WORKLOADS", "WORKLOAD_DEFAULTS", "Workload", "build_workload",
    "check_frozen_unchanged", "check_same_examples", "check_same_sequences", "check_same_trainable",
    "check_trained_blocks", "claims_for", "loss_costs", "main", "make_workload", "matmul_gflops", "method_config",
    "model_gflops", "our_reference_terms", "profile_variants", "render_markdown", "representative_shape",
    "result_paths", "run_benchmark", "run_variant", "sample_records", "summarise", "trainable_names",
    "trainer_block_order", "trl_texts", "unpaired_workload", "write_results",
]
