"""One preference-optimization run, end to end: validate → build → train → evaluate → record.

The Hydra entry point (`bench.train`) calls `run(cfg)`. This module wires the parts together and
owns the run's lifecycle (skip if already completed, a failed record on error); the parts themselves
(methods, data, models, trainer, evaluation, cost, records) know nothing of each other.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf

from bench import records
from bench.cache import DiskCache, cache_key
from bench.checkpoint import Checkpointer, RunCheckpoint
from bench.cost import CostMeter
from bench.data.encoding import PairTensors, chat_turns, encode_pairs
from bench.data.examples import ExampleTensors, encode_examples
from bench.data.unpaired import keep_desirable_fraction, label_counts, pairs_to_examples
from bench.data.splits import prompt_set_stats, restricted_to
from bench.distributed import accelerator_kwargs, prepare_distributed_env
from bench.evaluate import ValidationCurve, gold_metrics, preference_metrics, sampling_seeds, shared_reference_samples
from bench.fingerprint import run_fingerprint
from bench.loggers import build_logger
from bench.methods import build_method, method_info
from bench.methods.kto import check_imbalance
from bench.models import build_word_tokenizer, flop_parameters, load_hf_model, non_embedding_parameters, pretrained_path
from bench.preflight import check_run_config
from bench.provenance import now, provenance
from bench.redaction import redact_secrets
from bench.reference import ReferenceTerms, cached_reference_terms
from bench.trainer import PreferenceTrainer
from bench.trunk import run_trunk


@dataclass
class RunResult:
    record: dict
    directory: Path
    skipped: bool = False


@dataclass
class Setup:
    """Everything built before training: models, data as tensors, cached reference terms."""

    model: object
    reference_model: object
    tokenizer: object
    task: object | None
    train: PairTensors | ExampleTensors  # examples for an unpaired method (Needs.unpaired)
    held_out: PairTensors | ExampleTensors
    val_prompts: list[str]   # what a tuner selects on (metrics "val/…", the validation curve)
    test_prompts: list[str]  # what a selected configuration is scored on (the bare metric names)
    composition_prompts: list[str]  # held-out combinations of prompt parts (metrics "composition/…"); may be []
    train_terms: ReferenceTerms  # the reference's terms of the train pairs (bench.reference)
    eval_terms: ReferenceTerms   # ... and of the held-out pairs
    data_stats: dict = field(default_factory=dict)
    reference_key: str = ""  # cache key of the reference model (what its evaluation samples depend on)


def _hf_models(model_cfg: dict, cache: DiskCache, meter: CostMeter):
    """(policy, frozen reference, tokenizer, model key) for model.kind=hf, both with dropout off. A model
    shipped as GGUF (model.gguf) is converted once into the cache: a shared build like the SFT model."""
    name, conversion = pretrained_path(model_cfg, cache)
    if conversion is not None:
        meter.add_shared("model", conversion.key, conversion.hit, conversion.build_cost, conversion.wait_s)
    resolved = {**model_cfg, "pretrained": name, "gguf": None}
    policy, tokenizer = load_hf_model(resolved)
    # the reference is the pretrained model itself: no adapters, nothing to train
    reference, _ = load_hf_model({**resolved, "lora": {"enabled": False}, "trainable_layers": None})
    reference.requires_grad_(False)
    model_key = conversion.key if conversion is not None else cache_key(
        {"pretrained": model_cfg["pretrained"], "revision": model_cfg.get("revision")})
    return policy, reference, tokenizer, model_key


@dataclass
class LoadedData:
    """The models and data of a run before encoding (what `_load_data` returns)."""

    policy: object  # the policy's initial weights
    reference: object  # the frozen reference (the SFT model, or the pretrained model as it is)
    tokenizer: object
    task: object | None  # the built-in task (gold reward), None for a real dataset
    splits: dict  # {"train", "eval": preference records; "val_prompts", "test_prompts", "composition_prompts"}
    stats: dict  # the data source's statistics (rows kept, dropped and why)
    model_key: str  # cache key of the reference model: what the reference terms depend on
    data_key: str  # cache key of the data


def _rows_source(cfg: DictConfig, data: LoadedData, split: str) -> str:
    """How an encoding error names a split's rows: the files they came from (real data; rows are then
    numbered within their file), else <dataset>/<split>."""
    sources = (data.stats.get(split) or {}).get("sources") if data.task is None else None
    return ", ".join(sources) if sources else f"{cfg.dataset.name}/{split}"


def _load_data(cfg: DictConfig, cache: DiskCache, meter: CostMeter, device, show_progress: bool) -> LoadedData:
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    sft_cfg = OmegaConf.to_container(cfg.sft, resolve=True)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if dataset_cfg["source"] == "builtin":
        from bench.data.builtin import build_builtin_dataset
        from bench.data.tasks import build_task
        from bench.sft import corpus_prompts, sft_model_for_task

        task = build_task(dataset_cfg["task"], **dataset_cfg.get("task_kwargs", {}))
        if model_cfg["kind"] == "hf":
            # A pretrained model on a built-in task: the model as it is is the reference (docs/design.md §13);
            # pairs are sampled from it on-policy, exactly as from the tiny model's SFT checkpoint.
            # (bench.config refuses sft.steps != 0 here, and a pretrained-only task with model=tiny.)
            policy, reference, tokenizer, model_key = _hf_models(model_cfg, cache, meter)
            task.bind_tokenizer(tokenizer)
            reference.to(device)  # the pair sampling runs where the reference lives
            splits, stats, data_entry = build_builtin_dataset(task, dataset_cfg, reference, tokenizer, model_key, cache,
                                                              cfg.seed)
            meter.add_shared("dataset", data_entry.key, data_entry.hit, data_entry.build_cost, data_entry.wait_s)
            return LoadedData(policy, reference, tokenizer, task, splits, stats, model_key, data_entry.key)
        tokenizer = build_word_tokenizer(task.vocabulary)
        sft_params = {k: v for k, v in task.params.items() if k not in task.label_only_params}
        task_payload = {"name": dataset_cfg["task"], "params": sft_params}
        reference, sft_entry = sft_model_for_task(task, task_payload, tokenizer, model_cfg, sft_cfg,
                                                  sft_cfg["seed"], cache, show_progress)
        meter.add_shared("sft", sft_entry.key, sft_entry.hit, sft_entry.build_cost, sft_entry.wait_s)
        # the run seed draws the prompt sets and pairs (docs/design.md §5); the SFT model is shared by every seed
        splits, stats, data_entry = build_builtin_dataset(
            task, dataset_cfg, reference, tokenizer, sft_entry.key, cache, cfg.seed,
            sft_corpus_prompts=corpus_prompts(task, sft_cfg["corpus_size"], sft_cfg["seed"]))
        meter.add_shared("dataset", data_entry.key, data_entry.hit, data_entry.build_cost, data_entry.wait_s)
        policy = type(reference).from_pretrained(sft_entry.path, dtype=torch.float32)
        return LoadedData(policy, reference, tokenizer, task, splits, stats, sft_entry.key, data_entry.key)
    from bench.data.adapters import load_preference_records, load_unpaired_records

    policy, reference, tokenizer, model_key = _hf_models(model_cfg, cache, meter)
    load = load_unpaired_records if dataset_cfg.get("feedback", "paired") == "unpaired" else load_preference_records
    splits, stats = {}, {}
    for split, name in (("train", "train_split"), ("eval", "eval_split")):
        splits[split], stats[split] = load(dataset_cfg, dataset_cfg[name], tokenizer)
    splits["val_prompts"] = splits["test_prompts"] = splits["composition_prompts"] = []
    stats["prompt_sets"] = prompt_set_stats({"train_pairs": [r["prompt"] for r in splits["train"]],
                                             "eval_pairs": [r["prompt"] for r in splits["eval"]]})
    return LoadedData(policy, reference, tokenizer, None, splits, stats, model_key, cache_key(dataset_cfg))


def build_setup(cfg: DictConfig, method, cache: DiskCache, meter: CostMeter, device, show_progress: bool) -> Setup:
    data = _load_data(cfg, cache, meter, device, show_progress)
    reference, tokenizer, splits = data.reference, data.tokenizer, data.splits
    max_length = cfg.model.max_length
    on_bad_row = cfg.dataset.get("on_bad_row", "error")
    # Reference-side PMI terms are cached with the reference log-probs (free at train time).
    context = method.needs.marginal_context if method.needs.marginal == "reference" else None
    payload = {"model": data.model_key, "data": data.data_key, "max_length": max_length, "marginal_context": context}
    if method.needs.unpaired:
        train, held_out, train_stats, eval_stats = _encode_examples(cfg, data, method)
        # the KL sequences depend on the blocks, the examples on the desirable fraction: part of the terms' key
        payload["examples"] = {"block_size": cfg.train.batch_size, "seed": cfg.seed,
                               "desirable_fraction": cfg.unpaired.desirable_fraction}
    else:
        # marginal_context=chat encodes the pairs themselves as RMiPO's code does (docs/design.md §4): so do their terms
        turns = chat_turns(tokenizer, method.needs, max_length)
        if turns is not None:
            payload["encoding"] = {"turns": "chat", "max_prompt_length": turns.max_prompt_length}
        train, _, train_stats = encode_pairs(splits["train"], tokenizer, max_length, _rows_source(cfg, data, "train"), on_bad_row, turns)
        held_out, _, eval_stats = encode_pairs(splits["eval"], tokenizer, max_length, _rows_source(cfg, data, "eval"), on_bad_row, turns)
    source = {k: v for k, v in data.stats.items() if k != "prompt_sets"}
    stats = {"source": source, "encoding": {"train": train_stats, "eval": eval_stats},
             "prompt_sets": data.stats["prompt_sets"]}
    reference.to(device)
    marginal_of = (lambda pairs: pairs.marginal(tokenizer, max_length, context)) if context is not None else None
    terms, entry = cached_reference_terms(cache, payload, reference, {"train": train, "eval": held_out},
                                          marginal_of, non_embedding_parameters(reference), device)
    meter.add_shared("reference", entry.key, entry.hit, entry.build_cost, entry.wait_s)
    return Setup(data.policy, reference, tokenizer, data.task, train, held_out, splits["val_prompts"], splits["test_prompts"],
                 splits["composition_prompts"], terms["train"], terms["eval"], stats, data.model_key)


def _encode_examples(cfg: DictConfig, data: LoadedData, method) -> tuple[ExampleTensors, ExampleTensors, dict, dict]:
    """Train and held-out unpaired examples (docs/design.md §5): the files' own, or each pair's chosen and rejected
    completions; the training desirables thinned to `unpaired.desirable_fraction`, and KTO's imbalance rule checked
    on a file's counts (for pairs, bench.config checks it on the fraction, exact up to rounding). Training blocks are one batch; the held-out examples are one block."""
    unpaired_files = cfg.dataset.get("feedback", "paired") == "unpaired"
    examples = {split: data.splits[split] if unpaired_files else pairs_to_examples(data.splits[split])
                for split in ("train", "eval")}
    examples["train"], thinned = keep_desirable_fraction(examples["train"], cfg.unpaired.desirable_fraction, cfg.seed)
    if unpaired_files:  # pairs give one desirable per undesirable: bench.config checked their fraction already
        base = getattr(method, "base", method)  # imi_kto regulates a KTO base, whose weights these are
        check_imbalance(base.desirable_weight, base.undesirable_weight, *label_counts(examples["train"]),
                        f"dataset {cfg.dataset.name!r} (train examples)")
    encoded, stats = {}, {}
    for split, block_size in (("train", cfg.train.batch_size), ("eval", None)):
        encoded[split], _, stats[split] = encode_examples(
            examples[split], data.tokenizer, cfg.model.max_length, _rows_source(cfg, data, split), block_size, cfg.seed,
            cfg.dataset.get("on_bad_row", "error"))
    stats["train"]["dropped"]["desirable_fraction"] = thinned["dropped_desirable"]
    return encoded["train"], encoded["eval"], stats["train"], stats["eval"]


def _evaluate(cfg: DictConfig, setup: Setup, method, model, device, meter: CostMeter) -> dict:
    needs_policy_marginal = method.needs.marginal == "policy"
    context = method.needs.marginal_context
    marginal = setup.held_out.marginal(setup.tokenizer, cfg.model.max_length, context) if needs_policy_marginal else None
    metrics = preference_metrics(model, setup.eval_terms, method, setup.held_out, marginal, device)
    meter.add_nograd_tokens("eval", int(setup.held_out.both().attention_mask.sum()))  # examples: with their KL rows
    if setup.task is not None and setup.test_prompts:
        # Disjoint prompt sets with independent sampling seeds (docs/design.md §11a): a tuner selects on "val/…", a
        # report scores the selection on the bare names, and on held-out compositions ("composition/…").
        sets = (("", setup.test_prompts, "test"), ("val/", setup.val_prompts, "val"),
                ("composition/", setup.composition_prompts, "composition"))
        sets = [s for s in sets if s[1]]
        # the reference's samples do not depend on the method: drawn once per seed into the shared cache
        references = shared_reference_samples(DiskCache(cfg.paths.cache_root), setup.reference_key,
                                              setup.reference_model, setup.tokenizer, setup.task,
                                              {stream: prompts for _, prompts, stream in sets}, cfg.seed, device, meter)
        for prefix, prompts, stream in sets:
            scores = gold_metrics(model, setup.reference_model, setup.tokenizer, setup.task, prompts, cfg.eval,
                                  cfg.model.max_length, sampling_seeds(cfg.seed, stream), device, meter,
                                  reference_samples=references[stream])
            metrics.update({prefix + k: v for k, v in scores.items()})
    if cfg.eval.lm_eval.enabled:
        metrics.update(_lm_eval(cfg, setup, model, meter))
    return metrics


def _lm_eval(cfg: DictConfig, setup: Setup, model, meter: CostMeter) -> dict:
    """lm-eval on the trained model object: the task's own local task plus any named standard tasks; the
    reference model's scores on the same items beside them as "reference_<metric>" (a shared build per seed)."""
    from bench.lm_eval_harness import run_lm_eval, write_local_tasks

    names, lm_cfg = list(cfg.eval.lm_eval.tasks), cfg.eval.lm_eval
    with tempfile.TemporaryDirectory(prefix="imi-bench-lm-eval-") as include:
        # per-run task files: tiny to write, and no two jobs ever share (or race on) them
        if setup.task is not None:  # items on test-region prompts only, drawn by the run seed
            names += write_local_tasks(restricted_to(setup.task, "test"), Path(include), lm_cfg.n_items, cfg.seed)
        if not names:
            return {}
        include_path = Path(include) if setup.task is not None else None

        def evaluate(scored_model) -> dict:
            return run_lm_eval(scored_model, setup.tokenizer, names, include_path, batch_size=lm_cfg.batch_size,
                               device=str(model.device), show_progress=bool(cfg.progress))

        metrics = evaluate(model)
        if metrics:  # {} on non-main processes
            metrics.update(_reference_lm_eval(cfg, setup, names, include_path,
                                              lambda: evaluate(setup.reference_model), meter))
        return metrics


def _reference_lm_eval(cfg: DictConfig, setup: Setup, names: list[str], include_path: Path | None, evaluate,
                       meter: CostMeter) -> dict:
    """The reference model's lm-eval scores on this run's items, "reference_<metric>": what the analysis sets a
    run's score against (its change after training, docs/design.md §7). The items depend on the seed and the
    task, not on the method, so they are scored once per (reference model, items, lm-eval) in the disk cache."""
    import lm_eval

    # the item files' bytes, with the per-run directory they were written to taken out of the task configs
    files = sorted(f for f in include_path.rglob("*") if f.is_file()) if include_path is not None else []
    items = {str(f.relative_to(include_path)): hashlib.sha256(
        f.read_bytes().replace(str(include_path.resolve()).encode(), b"<include>")).hexdigest() for f in files}
    payload = {"model": setup.reference_key, "tasks": names, "items": items, "lm_eval": lm_eval.__version__,
               "batch_size": int(cfg.eval.lm_eval.batch_size)}

    def build(directory: Path) -> dict:
        started = time.perf_counter()
        scores = evaluate()
        (directory / "scores.json").write_text(json.dumps(scores, sort_keys=True))
        return {"wall_s": round(time.perf_counter() - started, 3)}

    entry = DiskCache(cfg.paths.cache_root).get_or_build("reference_lm_eval", payload, build)
    meter.add_shared("reference_lm_eval", entry.key, entry.hit, entry.build_cost)
    meter.add_wait(entry.wait_s, "eval")
    scores = json.loads((entry.path / "scores.json").read_text())
    return {f"reference_{key}": value for key, value in scores.items()}


def _run_means(history: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """The mean of each of `keys` over the logged steps that have it (a key no step has is left out)."""
    means = {}
    for key in keys:
        values = [row[key] for row in history if key in row]
        if values:
            means[key] = sum(values) / len(values)
    return means


def run(cfg: DictConfig, overrides: list[str] | None = None) -> RunResult:
    """Run one configuration; returns its record (an already-completed identical run is skipped)."""
    check_run_config(cfg)  # before any compute: errors name the key
    config = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
    run_id, digest = records.run_identity(config)
    directory = records.run_dir(Path(cfg.paths.runs_root), cfg.sweep_id, run_id)
    checkpoint = RunCheckpoint(directory)
    done = records.completed_record(directory, digest, run_fingerprint())
    if done is not None:
        checkpoint.remove()  # left behind when a run was killed between its record and this cleanup
        return RunResult(done, directory, skipped=True)

    prepare_distributed_env(cfg.hardware.num_processes, cfg.hardware.accelerator)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.train.grad_accum_steps,
                              **accelerator_kwargs(OmegaConf.to_container(cfg.hardware)))
    torch.set_num_threads(cfg.hardware.torch_threads)
    is_main = accelerator.is_main_process
    show_progress = bool(cfg.progress) and is_main
    method = build_method(config["method"])
    meter = CostMeter(device_count=accelerator.num_processes)
    logger = build_logger(config["logger"], is_main_process=is_main)
    started_at, history, metrics, error, status = now(), [], {}, None, "failed"
    setup = trainer = curve = None
    # Saves the run's state every checkpoint.every_steps steps and on SIGTERM/SIGUSR1/submitit's signal, and
    # resumes from it: a preempted, timed-out or killed run goes on from its last checkpoint (bench.checkpoint).
    checkpointer = Checkpointer(checkpoint, digest, every=OmegaConf.select(cfg, "checkpoint.every_steps"), started_at=started_at,
                                save_allowed=is_main)
    try:
        with meter.phase("setup"), accelerator.main_process_first():
            # rank 0 builds any missing cache entry; the other ranks then find it (transformers'
            # save_pretrained writes nothing on non-zero ranks, so they must never build one)
            cache = DiskCache(cfg.paths.cache_root)
            setup = build_setup(cfg, method, cache, meter, accelerator.device, show_progress)
            meter.set_parameter_counts(flop_parameters(setup.model))
            set_seed(cfg.seed)
            if cfg.hardware.gradient_checkpointing:
                setup.model.gradient_checkpointing_enable()
            marginal_seqs = (setup.train.marginal(setup.tokenizer, cfg.model.max_length, method.needs.marginal_context)
                             if method.needs.marginal == "policy" else None)
            # frozen trunk (docs/design.md §13): with model.trainable_layers, the states below the top blocks once
            trunk = run_trunk(OmegaConf.to_container(cfg.model, resolve=True), setup.model, setup.train, marginal_seqs,
                              method.needs.unpaired, cache, meter, accelerator)
        if is_main:
            logger.start(config=config, run_id=run_id, sweep_id=cfg.sweep_id, method=cfg.method.name, run_dir=directory,
                         method_info=method_info(cfg.method.name))
        with meter.phase("train"):
            curve = ValidationCurve(setup.task, setup.tokenizer, setup.val_prompts[:cfg.eval.curve.n_prompts],
                                    cfg.eval.curve.fractions, sampling_seeds(cfg.seed, "curve")[0], meter,
                                    accelerator.device) if setup.task is not None else None
            # the checkpointer after the curve: a checkpoint holds the curve point of its own step
            trainer = PreferenceTrainer(method, setup.model, setup.train, setup.train_terms, marginal_seqs,
                                        OmegaConf.to_container(cfg.train), accelerator, meter, logger, cfg.seed,
                                        show_progress, callbacks=[c for c in (curve, checkpointer) if c is not None],
                                        trunk=trunk)
            checkpointer.track(method=method, curve=curve, meter=meter)
            checkpointer.resume(trainer)
            with checkpointer:  # a signal now waits for the next step boundary, where a checkpoint is whole
                history = trainer.train()
        with meter.phase("eval"):
            model = accelerator.unwrap_model(trainer.model)
            metrics = _evaluate(cfg, setup, method, model, accelerator.device, meter) if is_main else {}
            metrics.update(_run_means(history, method.summarised))
        status = "completed"
    except Exception as exc:  # the record keeps what failed and where; the caller decides to raise
        error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc().splitlines(keepends=True)[-12:])
        if trainer is not None:  # the steps logged before the failure (e.g. up to a non-finite loss)
            history = trainer.history
    record = {
        "run_id": run_id,
        "sweep_id": cfg.sweep_id,
        "config_hash": digest,
        "status": status,
        "config": config,
        "method_info": method_info(cfg.method.name),  # what the method is, so the analysis needs no tables
        "metrics": metrics,
        "val_curve": curve.points if curve else [],
        "cost": meter.summary(),
        "data": setup.data_stats if setup else {},
        "provenance": {**provenance(cfg.seed, overrides), "started_at": checkpointer.started_at, "finished_at": now(),
                       "resumes": len(checkpointer.resumed_at_steps), "resumed_at_steps": checkpointer.resumed_at_steps},
        "error": error,
    }
    if is_main:  # only rank 0 writes: other ranks run the same job (docs/design.md §10)
        records.write_history(directory, history)
        records.write_record(directory, record)
        checkpointer.checkpoint.remove()  # the record is whole: a re-launch skips (completed) or starts over (failed)
        logger.finish(status=status, metrics=metrics, cost=record["cost"])
    if status == "failed" and accelerator.num_processes > 1:
        # End this rank now: its peers then fail on the closed connection instead of waiting at a
        # barrier for dist_timeout_s; the real error is in this rank's log (and in the record if rank 0).
        raise RuntimeError(f"rank {accelerator.process_index} failed: {error.splitlines()[0]}")
    accelerator.wait_for_everyone()
    return RunResult(record, directory)
