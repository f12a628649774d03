"""The suite's bridge to lm-evaluation-harness (docs/design.md §7: `lm_eval/<task>/<metric>`).

Writes a built-in task's local multiple-choice lm-eval task (a YAML config and its JSONL data, so evaluation runs
offline) and runs `lm_eval.simple_evaluate` on an in-memory model, encoding each (query, choice) as the trainer
encodes a (prompt, response) (docs/design.md §7); standard task names pass through. Must not train, sample or
label anything, nor download anything itself.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
from pathlib import Path

import yaml

from bench.data.tasks.base import Task

TASK_PREFIX = "imibench_"
METRICS = ("acc", "acc_norm")


def local_task_name(task: Task) -> str:
    """The lm-eval task name of a built-in task, e.g. "imibench_arithmetic"."""
    return f"{TASK_PREFIX}{task.name}"


def write_local_tasks(task: Task, directory: Path, n_items: int, seed: int) -> list[str]:
    """Write `<name>.yaml` and `<name>.jsonl` (n_items items from `task.multiple_choice_items`) into
    `directory`; return the task names to pass to `run_lm_eval` with `include_path=directory`.

    The same (task, n_items, seed) always writes the same files.
    """
    if not isinstance(n_items, int) or n_items < 1:
        raise ValueError(f"n_items must be an int >= 1, got {n_items!r}")
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    name = local_task_name(task)
    items = task.multiple_choice_items(random.Random(seed), n_items)
    data_path = directory / f"{name}.jsonl"
    with open(data_path, "w", encoding="utf-8") as f:
        for i, item in enumerate(items):
            _check_item(task, i, item)
            f.write(json.dumps({"query": item["query"], "choices": item["choices"], "gold": item["gold"]}) + "\n")
    config = {
        "task": name,
        "dataset_path": "json",  # datasets' packaged JSON builder: reads the local file, no hub access
        "dataset_kwargs": {"data_files": {"test": str(data_path)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "query",  # column names: lm-eval reads the field directly
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        # query + delimiter + choice is exactly the trained text: " " between words, "" after a chat prompt
        "target_delimiter": task.choice_delimiter,
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in METRICS],
        "metadata": {"version": 1.0, "n_items": n_items, "seed": seed, "task_params": getattr(task, "params", {})},
    }
    with open(directory / f"{name}.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return [name]


def _check_item(task: Task, index: int, item: dict) -> None:
    choices = item.get("choices")
    ok = (
        isinstance(item.get("query"), str)
        and isinstance(choices, list)
        and len(choices) >= 2
        and all(isinstance(c, str) and c.strip() for c in choices)
        and isinstance(item.get("gold"), int)
        and 0 <= item["gold"] < len(choices)
    )
    if not ok:
        raise ValueError(f"task {task.name!r}: multiple-choice item {index} is malformed: {item!r}")


def _lm_class(boundary_token: bool):
    """lm-eval's HFLM, its scoring progress bars shown only when the instance's `show_progress` is set
    (through the LM interface's own `disable_tqdm`). With `boundary_token`, its (context, continuation)
    encoding is the trainer's (docs/design.md §7): [boundary unless the context starts with it] +
    context tokens, continuation tokens encoded on their own; lm-eval's `prefix_token_id` is the boundary
    (BOS, else EOS), the same rule as the trainer's. Built lazily: importing lm-eval is slow (docs/design.md §7)."""
    from lm_eval.models.huggingface import HFLM

    class SuiteHFLM(HFLM):
        show_progress = False
        # False: every (context, continuation) is one forward of its own, lm-eval's `_loglikelihood_tokens`
        shared_context_scoring = True
        _scoring_shared = False  # set while `loglikelihood` runs: loglikelihood_rolling keeps lm-eval's path

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            # lm-eval tokenizes (its empty-context rule, then `_encode_pair`) and hands the tokens to
            # `_loglikelihood_tokens`, overridden below only for this call
            self._scoring_shared = self.shared_context_scoring and self.backend == "causal"
            try:
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.show_progress)
            finally:
                self._scoring_shared = False

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            parent = super()._loglikelihood_tokens
            if self._scoring_shared and _forward_arguments(self.model)[0] is not None:
                try:
                    return _score_by_context(self, requests, disable_tqdm, parent)
                except _PositionMismatch:  # e.g. prompt tuning's virtual tokens: lm-eval's path handles them
                    pass
            return parent(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or not self.show_progress)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=disable_tqdm or not self.show_progress)

    # lm-eval's hook for how a pair is tokenized (TemplateLM._encode_pair): not a documented API, so lm_eval
    # is bounded in pyproject.toml, and tests/test_lm_eval.py checks the scores against brute force.
    class BoundaryHFLM(SuiteHFLM):
        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            # Only spaces join query and choice; a newline ending a chat prompt is part of the prompt.
            context_enc = self.tok_encode(context.rstrip(" "), add_special_tokens=False)
            continuation_enc = self.tok_encode(continuation.lstrip(" "), add_special_tokens=False)
            if context_enc[:1] != [self.prefix_token_id]:
                context_enc = [self.prefix_token_id, *context_enc]
            return context_enc, continuation_enc

    return BoundaryHFLM if boundary_token else SuiteHFLM


class _PositionMismatch(Exception):
    """The model's logits are not one per input token, so a cached forward cannot be lined up with them."""


def _forward_arguments(model) -> tuple[str | None, str | None]:
    """The names under which the model's forward takes a KV cache (`cache` from transformers 5.x,
    `past_key_values` before) and the number of last positions to compute logits for, each None if absent."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model
    params = inspect.signature(base.forward).parameters
    return (next((name for name in ("cache", "past_key_values") if name in params), None),
            next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in params), None))


def _common_prefix(contexts: list[tuple[int, ...]]) -> int:
    """Tokens every context starts with, leaving each at least one of its own (whose logits score the
    continuation's first token)."""
    limit = min(len(c) for c in contexts) - 1
    n = 0
    while n < limit and all(c[n] == contexts[0][n] for c in contexts):
        n += 1
    return n


def _score_by_context(lm, requests, disable_tqdm: bool, fallback) -> list[tuple[float, bool]]:
    """lm-eval's (log-likelihood, is_greedy) of each tokenized request (`(strings, context_tokens,
    continuation_tokens)`), in request order, computing each distinct context once (docs/design.md §7).

    The contexts' common prefix (the chat template's system turn) runs once and its KV cache is copied
    to each context; a context's own tokens run once on that cache (last position's logits only),
    scoring every continuation's first token; the cache is then repeated over the continuations
    (`lm.batch_size` at a time, right-padded: under the causal mask no real token sees a pad) and one
    batched forward scores their other tokens. Positions and attention are those of the full
    sequence, so the log-probs are lm-eval's up to float rounding. `fallback` (lm-eval's own
    `_loglikelihood_tokens`) scores the requests this does not take: an empty context or continuation
    (lm-eval's assertion error stays its own), and a context plus continuation longer than the model's
    `max_length` + 1, which lm-eval truncates from the left."""
    import copy

    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    results: list[tuple[float, bool] | None] = [None] * len(requests)
    groups: dict[tuple[int, ...], list[int]] = {}
    rest = []
    for i, (_, context, continuation) in enumerate(requests):
        if context and continuation and len(context) + len(continuation) <= lm.max_length + 1:
            groups.setdefault(tuple(context), []).append(i)
        else:
            rest.append(i)
    if rest:
        for i, answer in zip(rest, fallback([requests[i] for i in rest], disable_tqdm=True), strict=True):
            results[i] = answer

    model, device = lm.model, lm.device
    cache_arg, keep_arg = _forward_arguments(model)
    chunk = lm.batch_size if isinstance(lm.batch_size, int) and lm.batch_size > 0 else None

    def forward(ids: list[list[int]], cache, last_only: bool):
        kwargs = {"input_ids": torch.tensor(ids, dtype=torch.long, device=device), "use_cache": True}
        if cache is not None:
            kwargs[cache_arg] = cache
        if last_only and keep_arg is not None:
            kwargs[keep_arg] = 1
        out = model(**kwargs)
        if out.logits.shape[1] != (1 if last_only and keep_arg is not None else len(ids[0])):
            raise _PositionMismatch
        logits = out.logits[:, -1:] if last_only else out.logits
        cache = out.cache if "cache" in out else out.past_key_values
        if isinstance(cache, tuple):  # a legacy per-layer tuple (older models): repeated on a Cache
            from transformers import DynamicCache

            cache = DynamicCache.from_legacy_cache(cache)
        return F.log_softmax(logits, dim=-1, dtype=lm.softmax_dtype), cache

    contexts = list(groups)
    prefix = _common_prefix(contexts) if len(contexts) > 1 else 0
    pbar = tqdm(total=len(requests), disable=disable_tqdm or lm.rank != 0, desc="Running loglikelihood requests")
    pbar.update(len(rest))
    with pbar, torch.no_grad(), torch.autocast(device_type=lm.device.type, dtype=lm.mixed_precision_dtype,
                                         enabled=lm.mixed_precision_dtype is not None):
        prefix_cache = forward([list(contexts[0][:prefix])], None, last_only=True)[1] if prefix else None
        for context in contexts:
            cache = copy.deepcopy(prefix_cache) if prefix_cache is not None else None
            first, cache = forward([list(context[prefix:])], cache, last_only=True)  # first: [1, 1, V]
            members = groups[context]
            step = chunk or len(members)
            for start in range(0, len(members), step):
                batch = members[start:start + step]
                continuations = [requests[i][2] for i in batch]
                width = max(len(c) for c in continuations) - 1
                later = None
                if width:
                    ids = [c[:-1] + [c[-1]] * (width - len(c) + 1) for c in continuations]  # any pad id does
                    repeated = copy.deepcopy(cache) if start + step < len(members) else cache
                    repeated.batch_repeat_interleave(len(batch))
                    later = forward(ids, repeated, last_only=False)[0]  # [n, width, V]
                for row, (i, continuation) in enumerate(zip(batch, continuations)):
                    logprobs = first[0] if later is None else torch.cat([first[0], later[row, :len(continuation) - 1]])
                    target = torch.tensor(continuation, dtype=torch.long, device=logprobs.device)
                    answer = (float(logprobs.gather(1, target[:, None]).sum()),
                              bool((logprobs.argmax(dim=-1) == target).all()))
                    results[i] = answer
                    if requests[i][0] is not None:
                        lm.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                    pbar.update(1)
    return results


def _check_tokenizer(tokenizer) -> None:
    """Without the boundary encoding, lm-eval splits `context + continuation` at
    len(encode(context)); an EOS appended to every encoding would shift that split by one token."""
    eos = getattr(tokenizer, "eos_token_id", None)
    probe = tokenizer("x y")["input_ids"]
    if eos is not None and probe and probe[-1] == eos:
        raise ValueError(
            "the tokenizer appends EOS to every encoding; lm-eval would score misaligned tokens. "
            "Use a tokenizer whose post-processor adds at most a BOS."
        )


def _check_device(model, device: str) -> None:
    import torch

    target, actual = torch.device(device), model.device
    if actual.type != target.type or (target.index is not None and actual.index != target.index):
        raise ValueError(f"run_lm_eval(device={device!r}) but the model is on {actual}; move the model first")


def run_lm_eval(
    model,
    tokenizer,
    task_names: list[str],
    include_path: Path | None,
    batch_size: int = 8,
    device: str = "cpu",
    limit: int | float | None = None,
    boundary_token: bool = True,
    show_progress: bool = False,
) -> dict[str, float]:
    """Evaluate an in-memory causal LM on lm-eval tasks; return {"lm_eval/<task>/<metric>": value}.

    Local tasks are looked up in `include_path` (as written by `write_local_tasks`); lm-eval's own
    task index is loaded (slow: docs/design.md §7) only if some name is not found there. Metrics keep lm-eval's names
    (acc, acc_norm, acc_stderr, ...); a metric under a filter other than "none" becomes
    "<metric>_<filter>". `boundary_token`: score log-likelihoods after one BOS (else EOS) as the
    trainer encodes sequences (docs/design.md §7); False = lm-eval's own tokenization. Non-numeric values (e.g. a stderr of "N/A") are left out. The model's
    train/eval mode is restored afterwards, and lm-eval is told not to reseed global RNGs (the
    caller's training must not depend on whether it evaluated). Returns {} on non-main processes.
    lm-eval runs quietly (`_quietly`): its progress bars only with `show_progress`.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if isinstance(task_names, str) or not task_names:
        raise ValueError(f"task_names must be a non-empty list of lm-eval task names, got {task_names!r}")
    if not boundary_token:
        _check_tokenizer(tokenizer)
    _check_device(model, device)
    manager = None
    if include_path is not None:
        include_path = Path(include_path)
        if not include_path.is_dir():
            raise ValueError(f"lm-eval include_path {str(include_path)!r} is not a directory")
        manager = TaskManager(include_path=str(include_path), include_defaults=False)
    if manager is None or any(name not in manager.all_tasks for name in task_names):
        manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=True)
    unknown = [name for name in task_names if name not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown lm-eval task(s) {unknown}; local tasks live in include_path={include_path}")

    was_training = model.training
    try:
        with _quietly(show_progress):
            lm = _lm_class(boundary_token)(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
            lm.show_progress = show_progress
            results = simple_evaluate(
                model=lm,
                tasks=list(task_names),
                task_manager=manager,
                limit=limit,
                log_samples=False,
                random_seed=None,
                numpy_random_seed=None,
                torch_random_seed=None,
            )
    finally:
        model.train(was_training)
    if results is None:  # lm-eval returns results on the main process only
        return {}
    return flatten_results(results["results"])


@contextlib.contextmanager
def _quietly(show_progress: bool):
    """lm-eval as one quiet step of a run, through the libraries' own switches. lm-eval's log records below
    ERROR are dropped (the "lm_eval" logger's level): it warns that an in-memory model was passed (what
    this bridge does on purpose, in one process) and logs every task it builds. datasets' progress bars
    (building a task's split) show only with `show_progress`, as do the scoring bars (`_lm_class`). What
    still prints: lm-eval's bar for building each task's requests (it has no switch) and, outside a git
    checkout, git's "fatal: not a git repository" (lm-eval records `git describe` in its results)."""
    import datasets

    logger = logging.getLogger("lm_eval")
    level, bars = logger.level, datasets.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars and not show_progress:
            datasets.enable_progress_bars()


def flatten_results(task_results: dict[str, dict]) -> dict[str, float]:
    """{"<task>": {"acc,none": 0.5, "alias": ...}} -> {"lm_eval/<task>/acc": 0.5} (numbers only)."""
    flat: dict[str, float] = {}
    for task, metrics in task_results.items():
        for key, value in metrics.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            name = metric if filter_name == "none" else f"{metric}_{filter_name}"
            if math.isfinite(value):
                flat[f"lm_eval/{task}/{name}"] = float(value)
    return flat
