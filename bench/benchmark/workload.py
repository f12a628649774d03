"""The one workload every variant trains on: the same pairs, tokenizer, model config and initial weights.

Owns: the `Workload` both sides take, the built-in workload (a tiny Llama on pairs sampled from a
built-in task; the real-model one is bench.benchmark.real_model), encoding pairs for our trainer, the
text form TRL takes (checked to tokenise to the very same sequences), the same pairs as KTO's unpaired
examples in the order both sides train them (`unpaired_workload`, checked before and after training),
the parameters that train (checked to be the same set on both sides), and the reference terms our
trainer caches. Must not: time anything (bench.benchmark.clock) or train (bench.benchmark.runners).
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

import torch
from omegaconf import OmegaConf

from bench import conf_dir
from bench.data.encoding import PairTensors, conditional_sequence, encode_pairs, encode_text
from bench.data.examples import ExampleTensors, encode_examples
from bench.data.tasks import build_task
from bench.data.unpaired import pairs_to_examples
from bench.models import build_tiny_model, build_word_tokenizer, flop_parameters, non_embedding_parameters
from bench.reference import ReferenceTerms, needs_reference_terms, score_reference_terms

CONF_DIR = conf_dir()
WORKLOADS = ("builtin", "smollm2")  # --workload: the tiny model on a built-in task, or the real model


@dataclass
class Workload:
    """Everything both sides train on: the same pairs, tokenizer, model config and initial weights."""

    records: list[dict]  # {prompt, chosen, rejected} texts
    tokenizer: object
    pairs: PairTensors  # the same records encoded for our trainer
    initial_model: torch.nn.Module  # every run starts from a deep copy of these weights (requires_grad included)
    model_cfg: dict
    train_cfg: dict  # conf/config.yaml `train`, with batch_size / max_steps for this benchmark
    task: str
    seed: int
    trl_columns: dict[str, list[str]]  # the records as TRL's text columns (see trl_texts)
    name: str = "builtin"  # which of WORKLOADS
    # what goes between a completion text and the EOS text in TRL KTOTrainer's columns (it appends the EOS as
    # text, then tokenises): the word tokenizer splits on whitespace, so it needs a space there
    eos_separator: str = ""
    # our reference terms per method Needs: the same numbers for every run, so computed once (bench.pipeline
    # caches them on disk; either way they are outside the clock)
    reference_terms: dict = field(default_factory=dict, repr=False)
    unpaired: "UnpairedWorkload | None" = field(default=None, repr=False)  # built on first use (unpaired_workload)

    @property
    def batch_size(self) -> int:
        return self.train_cfg["batch_size"]

    @property
    def total_steps(self) -> int:
        return self.train_cfg["max_steps"]


def sample_records(task_name: str, n_pairs: int, seed: int) -> list[dict]:
    """n_pairs {prompt, chosen, rejected} from a built-in task: two demonstrations per prompt, the one
    with the higher gold reward chosen (ties and identical texts are skipped). No SFT model is needed:
    throughput depends on the token shapes, which follow the task's own length distribution."""
    task = build_task(task_name)
    rng = random.Random(seed)
    records = []
    while len(records) < n_pairs:
        prompt = task.sample_prompt(rng)
        a, b = task.demonstration(prompt, rng), task.demonstration(prompt, rng)
        ra, rb = task.gold_reward(prompt, a), task.gold_reward(prompt, b)
        if a == b or ra == rb:
            continue
        chosen, rejected = (a, b) if ra > rb else (b, a)
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return records


def build_workload(steps: int, warmup: int, batch_size: int | None = None, task: str = "sentiment",
                   seed: int = 0) -> Workload:
    """One workload with exactly one epoch of (warmup + steps) batches, so neither side wraps an epoch."""
    model_cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"))
    train_cfg = benchmark_train_config(steps, warmup, batch_size)
    records = sample_records(task, train_cfg["batch_size"] * train_cfg["max_steps"], seed)
    tokenizer = build_word_tokenizer(build_task(task).vocabulary)
    pairs, _, _ = encode_pairs(records, tokenizer, model_cfg["max_length"], f"benchmark/{task}")
    torch.manual_seed(seed)
    model = build_tiny_model(model_cfg, tokenizer).float()
    # the word tokenizer splits on whitespace and adds no BOS of its own: '<bos> prompt ' and 'response'
    # (TRL appends EOS itself) tokenise to our [BOS] prompt response [EOS]
    bos = tokenizer.bos_token
    trl_columns = {"prompt": [f"{bos} {r['prompt']} " for r in records],
                   "chosen": [r["chosen"] for r in records], "rejected": [r["rejected"] for r in records]}
    return Workload(records, tokenizer, pairs, model, model_cfg, train_cfg, task, seed, trl_columns,
                    eos_separator=" ")


def benchmark_train_config(steps: int, warmup: int, batch_size: int | None) -> dict:
    """conf/config.yaml `train` for exactly one epoch of (warmup + steps) batches, so neither side wraps."""
    train_cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").train)
    if batch_size is not None:
        train_cfg["batch_size"] = batch_size
    if train_cfg["grad_accum_steps"] != 1:
        raise ValueError("benchmark: conf/config.yaml train.grad_accum_steps must be 1 (one batch per step)")
    train_cfg["max_steps"] = warmup + steps
    return train_cfg


def describe_workload(workload: Workload, steps: int, warmup: int, unpaired: bool = False) -> dict:
    """The workload as the results record it; with `unpaired` (a KTO variant ran), also its examples."""
    lengths = workload.pairs.both().attention_mask.sum(-1).float()
    model = workload.initial_model
    counts = flop_parameters(model)
    config = model.config
    extra = {}
    if unpaired:
        data = unpaired_workload(workload)
        n_desirable = int(data.examples.labels.sum())
        extra["unpaired"] = {"n_examples": len(data.examples), "examples_per_step": data.examples.block_size,
                             "n_desirable": n_desirable, "n_undesirable": len(data.examples) - n_desirable,
                             "block_order": data.block_order}
    return {
        "name": workload.name,
        "task": workload.task,
        "n_pairs": len(workload.pairs),
        "batch_size": workload.batch_size,
        "max_length": workload.model_cfg["max_length"],
        "optimizer_steps": warmup + steps,
        "tokens_per_sequence_mean": round(float(lengths.mean()), 3),
        "tokens_per_sequence_max": int(lengths.max()),
        "model": {**workload.model_cfg, "hidden_size": config.hidden_size,
                  "intermediate_size": config.intermediate_size, "num_layers": config.num_hidden_layers,
                  "vocab_size": len(workload.tokenizer),
                  "dtype": str(next(model.parameters()).dtype),
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "non_embedding_parameters": non_embedding_parameters(model),
                  "backprop_parameters": counts["n_backprop"], "trainable_parameters": counts["n_trainable"],
                  "trainable_tensors": len(trainable_names(model))},
        "train": workload.train_cfg,
        "seed": workload.seed,
        **extra,
    }


def trl_texts(workload: Workload) -> dict[str, list[str]]:
    """The records as TRL's text columns (prompt, chosen, rejected), written so that TRL's own
    tokenisation gives exactly our [BOS] prompt response [EOS] sequences (checked before timing)."""
    return workload.trl_columns


def check_same_sequences(workload: Workload, trl_dataset) -> None:
    """Raise if any TRL training sequence differs from ours (the comparison would be unfair).

    TRL's dataset holds untruncated prompt/response ids; its collator cuts prompt + response to
    max_length from the end (truncation_mode keep_start), as our encoding does, so that cut is applied
    here before comparing."""
    ours = {"chosen": workload.pairs.chosen, "rejected": workload.pairs.rejected}
    max_length = workload.model_cfg["max_length"]
    for i, row in enumerate(trl_dataset):
        for side, seqs in ours.items():
            n = int(seqs.attention_mask[i].sum())
            mine = seqs.input_ids[i, :n].tolist()
            theirs = (row["prompt_ids"] + row[f"{side}_ids"])[:max_length]
            if mine != theirs:
                raise RuntimeError(f"benchmark: pair {i} {side}: TRL tokenised {theirs}, ours is {mine}")
            if int(seqs.response_mask[i].sum()) != len(theirs) - len(row["prompt_ids"]):
                raise RuntimeError(f"benchmark: pair {i} {side}: TRL and ours score different response tokens")


@dataclass
class UnpairedWorkload:
    """The workload's pairs as KTO's unpaired examples, and the order both sides train them in.

    Each pair gives its chosen completion as a desirable example and its rejected one as an undesirable
    one (bench.data.unpaired.pairs_to_examples, as bench.pipeline feeds a built-in task to KTO), encoded by
    bench.data.examples.encode_examples in blocks of 2B examples: a KTO step then trains as many sequences
    as a DPO step, and one epoch is the workload's 2P sequences once. TRL's KTOTrainer builds each
    example's KL sequence within the batch it falls in, reading its dataset in order (sampling strategy
    "sequential"), so its dataset is our rows block by block in the order our trainer draws the blocks:
    the same batches on both sides, hence the same KL sequences, step by step.
    """

    examples: ExampleTensors
    block_order: list[int]  # the blocks in the order our trainer trains them (trainer_block_order)
    trl_columns: dict[str, list]  # prompt, completion, label: TRL's dataset, the rows in training order

    @property
    def rows(self) -> torch.Tensor:
        """Our example rows in training order (TRL's dataset order)."""
        return self.examples.block_rows(torch.tensor(self.block_order, dtype=torch.long))


def trainer_block_order(n_blocks: int, seed: int) -> list[int]:
    """The order PreferenceTrainer draws unpaired blocks in: its loader shuffles the block indices with a
    generator seeded by the run's seed (bench.trainer). The KTO runners check that each side trained
    exactly these blocks step by step (check_trained_blocks), so a change there stops the benchmark
    rather than giving the two sides different batches."""
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(torch.arange(n_blocks), batch_size=1, shuffle=True, generator=generator,
                                         drop_last=True)
    return [int(block) for block in loader]


def unpaired_workload(workload: Workload) -> UnpairedWorkload:
    """The workload's pairs as unpaired examples (see UnpairedWorkload), built on first use and kept."""
    if workload.unpaired is not None:
        return workload.unpaired
    tokenizer, max_length = workload.tokenizer, workload.model_cfg["max_length"]
    records = pairs_to_examples(workload.records)
    examples, _, stats = encode_examples(records, tokenizer, max_length, f"benchmark/{workload.task}",
                                         2 * workload.batch_size, workload.seed)
    if stats["n_kept"] != len(records):
        raise RuntimeError(f"benchmark: encoding the unpaired examples left {stats['n_kept']} of {len(records)} "
                           f"(stats: {stats}); the workload must be whole blocks of 2 × batch size")
    order = trainer_block_order(examples.n_blocks, workload.seed)
    # Which record each row is, by its tokens and label (the encoding shuffles the examples into blocks);
    # records with the same key are the same training example, so any of them will do.
    by_key: dict[tuple, list[int]] = {}
    for i, record in enumerate(records):
        sequence, _ = conditional_sequence(tokenizer, encode_text(tokenizer, record["prompt"]),
                                           encode_text(tokenizer, record["completion"]), max_length)
        by_key.setdefault((tuple(sequence), bool(record["label"])), []).append(i)
    completions = examples.completions
    columns: dict[str, list] = {"prompt": [], "completion": [], "label": []}
    eos = tokenizer.eos_token
    for row in examples.block_rows(torch.tensor(order, dtype=torch.long)).tolist():
        n = int(completions.attention_mask[row].sum())
        record = records[by_key[(tuple(completions.input_ids[row, :n].tolist()), bool(examples.labels[row]))].pop()]
        # TRL's prompt text is the pair's (trl_texts); it appends the EOS text to a completion lacking it
        columns["prompt"].append(workload.trl_columns["prompt"][record["meta"]["pair"]])
        columns["completion"].append(record["completion"] + workload.eos_separator + eos)
        columns["label"].append(bool(record["label"]))
    workload.unpaired = UnpairedWorkload(examples, order, columns)
    return workload.unpaired


def check_same_examples(workload: Workload, trl_dataset) -> None:
    """Raise if any example TRL's KTOTrainer trains on differs from ours, row for row in training order: its
    completion sequence, its KL sequence (the previous example's completion within the batch), the tokens
    each scores, and its label. As for pairs (check_same_sequences), TRL's dataset holds untruncated ids
    that its collator cuts at max_length, so that cut is applied here before comparing."""
    data = unpaired_workload(workload)
    max_length = workload.model_cfg["max_length"]
    rows = data.rows.tolist()
    if len(trl_dataset) != len(rows):
        raise RuntimeError(f"benchmark: TRL's KTO dataset has {len(trl_dataset)} examples, ours {len(rows)}")
    for k, (theirs_row, row) in enumerate(zip(trl_dataset, rows)):
        for what, seqs, key in (("completion", data.examples.completions, "completion_ids"),
                                ("KL sequence", data.examples.kl, "KL_completion_ids")):
            n = int(seqs.attention_mask[row].sum())
            mine = seqs.input_ids[row, :n].tolist()
            theirs = (theirs_row["prompt_ids"] + theirs_row[key])[:max_length]
            if mine != theirs:
                raise RuntimeError(f"benchmark: example {k} (our row {row}) {what}: TRL tokenised {theirs}, "
                                   f"ours is {mine}")
            if int(seqs.response_mask[row].sum()) != len(theirs) - len(theirs_row["prompt_ids"]):
                raise RuntimeError(f"benchmark: example {k} (our row {row}) {what}: TRL and ours score different "
                                   "completion tokens")
        if bool(theirs_row["label"]) != bool(data.examples.labels[row]):
            raise RuntimeError(f"benchmark: example {k} (our row {row}): TRL's label is {bool(theirs_row['label'])}, "
                               f"ours {bool(data.examples.labels[row])}")


def _fed_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """Each row's non-pad tokens, whatever the padding side or width."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]


def check_trained_blocks(workload: Workload, fed: list[dict], side: str) -> None:
    """Raise unless `side` trained the unpaired blocks in training order, one per step: `fed[k]` is what
    step k fed the model, {"completion": (input_ids, attention_mask)} and, where the side shows them,
    "kl": (input_ids, attention_mask) and "labels"; each must be block_order[k]'s rows."""
    data = unpaired_workload(workload)
    if len(fed) != len(data.block_order):
        raise RuntimeError(f"benchmark: {side} trained {len(fed)} steps, the workload is {len(data.block_order)} "
                           "blocks")
    ours = {"completion": data.examples.completions, "kl": data.examples.kl}
    for step, (batch, block) in enumerate(zip(fed, data.block_order)):
        rows = data.examples.block_rows(torch.tensor([block]))
        for what, value in batch.items():
            if what == "labels":
                same = torch.equal(value.bool().cpu(), data.examples.labels[rows])
            else:
                expected = ours[what].select(rows)
                same = _fed_rows(*value) == _fed_rows(expected.input_ids, expected.attention_mask)
            if not same:
                shown = {"completion": "completion sequences", "kl": "KL sequences", "labels": "labels"}[what]
                raise RuntimeError(f"benchmark: {side} step {step}: its {shown} are not those of block {block}, "
                                   "which the other side trains at that step")


def trainable_names(model: torch.nn.Module) -> list[str]:
    """Names of the parameters that train (requires_grad): what either trainer's optimizer updates."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def check_same_trainable(workload: Workload, model: torch.nn.Module, side: str) -> None:
    """Raise unless `model` (the copy a trainer is about to train) trains exactly the workload's parameters."""
    expected, seen = trainable_names(workload.initial_model), trainable_names(model)
    if seen != expected:
        missing, extra = sorted(set(expected) - set(seen)), sorted(set(seen) - set(expected))
        raise RuntimeError(f"benchmark: {side} would train a different parameter set than the workload's "
                           f"(missing {missing[:5]}, extra {extra[:5]}, {len(seen)} vs {len(expected)} tensors)")


@torch.no_grad()
def check_frozen_unchanged(workload: Workload, model: torch.nn.Module, side: str) -> None:
    """Raise if a trainer changed a parameter the workload freezes (after training: the frozen set was
    not only declared the same on both sides, it stayed frozen)."""
    initial = dict(workload.initial_model.named_parameters())
    for name, parameter in model.named_parameters():
        if not initial[name].requires_grad and not torch.equal(parameter, initial[name]):
            raise RuntimeError(f"benchmark: {side} changed the frozen parameter {name}")


def method_config(name: str) -> dict:
    """conf/method/<name>.yaml as a dict (the suite's published defaults, no overrides)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml"))
    if cfg.get("pmi_source", "reference") != "reference":
        raise ValueError(f"benchmark: conf/method/{name}.yaml pmi_source must be 'reference' for this benchmark")
    return cfg


def our_reference_terms(workload: Workload, method) -> ReferenceTerms:
    """The reference terms of the train pairs (for an unpaired method, of the examples: completion and KL
    sequence each) our trainer reads for `method`, computed as bench.pipeline computes them (there cached
    on disk); the reference is the initial weights."""
    needs = method.needs
    if not needs_reference_terms(needs):
        return ReferenceTerms()
    if needs not in workload.reference_terms:
        data = unpaired_workload(workload).examples if needs.unpaired else workload.pairs
        marginal = None
        if needs.marginal == "reference":
            marginal = data.marginal(workload.tokenizer, workload.model_cfg["max_length"], needs.marginal_context)
        workload.reference_terms[needs] = score_reference_terms(copy.deepcopy(workload.initial_model), data,
                                                                marginal=marginal)
    return workload.reference_terms[needs]
