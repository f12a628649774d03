"""The variants and how each one trains: ours through `PreferenceTrainer`, TRL through its DPOTrainer
or (the KTO variants) its KTOTrainer.

Owns: what each variant does per step (written into the results), running one variant on the workload
under a `StepClock`, and the loss-only costs (a method's own per-step work, timed apart). Must not:
change how either trainer trains; both run as a user would run them, with their default settings
(ours: conf/config.yaml `train`), and only their one-off setup and warm-up steps are left out of the clock.
"""
from __future__ import annotations

import contextlib
import copy
import io
import statistics
import tempfile
import time
import warnings

import torch

from bench.benchmark.clock import StepClock, TrainerClock, trl_step_end
from bench.benchmark.summary import spread
from bench.benchmark.variants import VARIANTS
from bench.benchmark.workload import (
    Workload,
    check_frozen_unchanged,
    check_same_examples,
    check_same_sequences,
    check_same_trainable,
    check_trained_blocks,
    method_config,
    our_reference_terms,
    trl_texts,
    unpaired_workload,
)
from bench.cost import CostMeter
from bench.loggers import NoneLogger
from bench.methods import build_method
from bench.reference import pair_logps
from bench.trainer import PreferenceTrainer


class _FedBatches:
    """A PreferenceTrainer step callback keeping each step's policy batch (a reference: no copy, no count)."""

    def __init__(self):
        self.batches = []

    def on_step_end(self, trainer, step: int, row: dict | None) -> None:
        self.batches.append(trainer.last_batch)


def run_ours(workload: Workload, name: str, clock: StepClock) -> dict:
    from accelerate import Accelerator

    variant = VARIANTS[name]
    method = build_method(method_config(variant["method"]))
    unpaired = method.needs.unpaired
    if unpaired != bool(variant.get("unpaired")):
        raise ValueError(f"benchmark: variant {name} and its method {method.name} disagree on unpaired data")
    data = unpaired_workload(workload).examples if unpaired else workload.pairs
    reference_terms = our_reference_terms(workload, method)
    marginal_seqs = None
    if method.needs.marginal == "policy":
        marginal_seqs = data.marginal(workload.tokenizer, workload.model_cfg["max_length"],
                                      method.needs.marginal_context)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=1)
    model = copy.deepcopy(workload.initial_model)
    train_cfg = {**workload.train_cfg, "log_every": 1, **variant.get("train", {})}
    fed = _FedBatches()
    callbacks = [TrainerClock(clock)] + ([fed] if unpaired else [])
    trainer = PreferenceTrainer(method, model, data, reference_terms, marginal_seqs, train_cfg, accelerator,
                                CostMeter(), NoneLogger(), seed=workload.seed, show_progress=False,
                                callbacks=callbacks)
    trained = accelerator.unwrap_model(trainer.model)
    check_same_trainable(workload, trained, name)
    history = trainer.train()
    check_frozen_unchanged(workload, trained, name)
    if unpaired:  # the blocks TRL's dataset was ordered by (its KL sequences follow them)
        check_trained_blocks(workload, [{"completion": (b.input_ids, b.attention_mask)} for b in fed.batches], name)
    return {"final_loss": history[-1]["loss"], "trainable_parameters": trainable_count(trained),
            "layout": {"kind": trainer.layout.kind, "row_width": trainer.layout.row_width}}


def _trl_args(workload: Workload, output_dir: str) -> dict:
    """What every TRL variant's config sets: the benchmark's schedule and optimizer settings as ours has
    them (conf/config.yaml `train`), fp32 on the CPU, and no logging sinks, evaluation or checkpoints."""
    cfg = workload.train_cfg
    return dict(
        output_dir=output_dir, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        max_steps=cfg["max_steps"], learning_rate=cfg["lr"], weight_decay=cfg["weight_decay"],
        max_grad_norm=cfg["max_grad_norm"],
        # ours: linear warm-up, then constant (bench.trainer's LambdaLR)
        lr_scheduler_type="constant_with_warmup", warmup_steps=max(1, int(cfg["warmup_ratio"] * cfg["max_steps"])),
        max_length=workload.model_cfg["max_length"], dataloader_num_workers=0, logging_strategy="no",
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, seed=workload.seed,
    )


def _train_trl(workload: Workload, name: str, trainer_class, make_args, model, ref_model, columns: dict,
               check_dataset, clock: StepClock, nograd_mask: str | None = None,
               keep_batches: bool = False) -> tuple[dict, list[dict]]:
    """Build TRL's `trainer_class` (a subclass that shows the clock each batch) on `columns`, check its
    tokenised dataset (`check_dataset`) and trainable parameters, train it under the clock; returns the
    run's result and (given `keep_batches`) the batch each step trained on."""
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback

    fed: list[dict] = []
    saw_batch, step_end = trl_step_end(clock, nograd_mask, fed if keep_batches else None)

    class Clocked(trainer_class):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            saw_batch(inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    with tempfile.TemporaryDirectory(prefix="imi-bench-trl-") as out:
        with warnings.catch_warnings():  # transformers 5 deprecates `gradient_checkpointing`, which TRL sets
            warnings.simplefilter("ignore", FutureWarning)
            args = make_args(out)
        # TRL's reference precompute draws its own progress bar on stderr: keep it off the benchmark's.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            trainer = Clocked(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_dict(columns),
                              processing_class=workload.tokenizer, callbacks=[step_end])
        check_dataset(workload, trainer.train_dataset)
        check_same_trainable(workload, trainer.model, name)  # HF Trainer's optimizer takes the requires_grad ones
        trainable = trainable_count(trainer.model)
        for callback in (PrinterCallback, ProgressCallback):  # no logging sinks, no per-step printing
            trainer.remove_callback(callback)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = trainer.train()
        check_frozen_unchanged(workload, trainer.model, name)
    return {"final_loss": result.training_loss, "trainable_parameters": trainable}, fed


def _import_trl(name: str):
    try:
        import trl
    except ImportError as exc:  # trl is in the test extra: pip install -e .[test]
        raise ImportError(f"benchmark: TRL is needed for the {name} variant ({exc}); pip install 'trl>=1.16,<1.17'")
    return trl


def run_trl(workload: Workload, name: str, clock: StepClock) -> dict:
    trl = _import_trl(name)
    precompute = name == "trl_dpo_precomputed"

    def make_args(out: str):
        return trl.DPOConfig(**_trl_args(workload, out), loss_type=["sigmoid"], beta=method_config("dpo")["beta"],
                             per_device_train_batch_size=workload.batch_size, precompute_ref_log_probs=precompute)

    result, _ = _train_trl(workload, name, trl.DPOTrainer, make_args, copy.deepcopy(workload.initial_model),
                           None if precompute else copy.deepcopy(workload.initial_model), trl_texts(workload),
                           check_same_sequences, clock)
    return result


def run_trl_kto(workload: Workload, name: str, clock: StepClock) -> dict:
    """TRL's KTOTrainer with precomputed reference log-probs on our examples, in our blocks and block order:
    its batch size is our block's and it reads the dataset in order, so each step is our trainer's batch
    with the same KL sequences (checked before training, and after it step by step)."""
    trl = _import_trl(name)
    data = unpaired_workload(workload)
    kto = method_config("kto")

    def make_args(out: str):
        return trl.KTOConfig(**_trl_args(workload, out), loss_type="kto", beta=kto["beta"],
                             desirable_weight=kto["desirable_weight"], undesirable_weight=kto["undesirable_weight"],
                             per_device_train_batch_size=data.examples.block_size,
                             train_sampling_strategy="sequential", precompute_ref_log_probs=True)

    result, fed = _train_trl(workload, name, trl.KTOTrainer, make_args, copy.deepcopy(workload.initial_model), None,
                             data.trl_columns, check_same_examples, clock, nograd_mask="KL_attention_mask",
                             keep_batches=True)
    check_trained_blocks(workload, [{"completion": (b["input_ids"], b["attention_mask"]),
                                     "kl": (b["KL_input_ids"], b["KL_attention_mask"]), "labels": b["label"]}
                                    for b in fed], name)
    return result


def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_variant(workload: Workload, name: str, warmup: int, on_warmup_end=None) -> dict:
    """Train variant `name` on the workload; its clock's summary over the steps after `warmup`."""
    if name not in VARIANTS:
        raise ValueError(f"benchmark: unknown variant {name!r}; variants: {', '.join(VARIANTS)}")
    variant = VARIANTS[name]
    runner = run_ours if variant["side"] == "ours" else run_trl_kto if variant.get("unpaired") else run_trl
    clock = StepClock(warmup, on_warmup_end)
    extra = runner(workload, name, clock)
    return {**clock.summary(), **extra}


def loss_costs(workload: Workload, names: list[str], rounds: int = 5, iterations: int = 100) -> dict:
    """Each method's own per-step work, in ms (median [min–max] over `rounds`, interleaved): building
    its PairLogps from cached terms, the loss with its metrics, and the loss's backward to the log-probs.

    Everything else in a step (the model's forward/backward, the optimizer) is the same for a method
    and its IMI variant, so the difference of these times is what IMI adds per step, measured far more
    precisely than an end-to-end ratio can be on a shared machine. rmipo's extra policy forward is not
    part of it (its end-to-end ratio measures that); a stand-in tensor takes the forward's place.
    """
    methods = {name: build_method(method_config(name)) for name in names}
    for name, method in methods.items():
        if method.needs.unpaired:
            raise ValueError(f"benchmark: loss_costs times pair methods (it builds PairLogps), not {name}")
    terms = {name: our_reference_terms(workload, method) for name, method in methods.items()}
    index = torch.arange(workload.batch_size)
    token_counts = workload.pairs.batch(index).token_counts()  # [2B]: chosen rows then rejected rows
    policy = -2.0 * token_counts  # stands in for the policy's summed log-probs (values do not change the cost)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, method in methods.items():
            times = []
            for _ in range(iterations):
                started = time.perf_counter()
                logps = policy.clone().requires_grad_(True)
                batch = pair_logps(logps, token_counts, method.needs, terms[name], index, step=0,
                                   policy_marginal=lambda: (1.5 * policy, token_counts))  # the pass's output
                method(batch).losses.mean().backward()
                times.append(time.perf_counter() - started)
            samples[name].append(1e3 * statistics.median(times))
    return {name: spread(values) for name, values in samples.items()}
