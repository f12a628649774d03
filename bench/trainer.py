"""The shared preference trainer: one loop for every method (docs/design.md §3).

Per step: one policy forward on chosen and rejected as a [2B, L] batch (for unpaired examples, on the B
completions, plus a no-grad pass on their KL sequences), bench.reference.pair_logps (example_logps) for what
`method.needs` asks (a no-grad response-only pass only when `needs.marginal == "policy"`), the method's per-pair
losses, then average, step and log; devices, DDP, mixed precision and accumulation are accelerate's. Step
callbacks (`on_step_end(trainer, step, row)`) show outside code each step boundary; bench.checkpoint saves and
restores `step`, `micro_batches` and `history`.
"""
from __future__ import annotations

import math
import time
from typing import Mapping, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from bench.data.encoding import PairTensors, SequenceTensors
from bench.data.examples import ExampleTensors
from bench.logps import check_packed_layout, resolve_layout, sequence_logps
from bench.methods.base import ExampleLogps, Method, PairLogps
from bench.reference import ReferenceTerms, example_logps, pair_logps
from bench.trunk import TrunkStates, check_frozen_trunk, trunk_logps, trunk_unavailable


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf: the run stops and its record says failed, with the step and stats."""


def build_optimizer(model, train_cfg: Mapping) -> torch.optim.AdamW:
    """AdamW; `train.fused_adamw` selects torch's fused kernel (one op per step for every tensor,
    instead of a dozen per tensor; TRL's default). It rounds differently from the per-tensor loop
    (~1e-7), so a record written before the key existed (no key) keeps the loop it trained with."""
    return torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"],
                             fused=bool(train_cfg["fused_adamw"]) or None)


class StepCallback(Protocol):
    """What `PreferenceTrainer(callbacks=...)` calls. The method is optional: an object without it is
    skipped, so a callback implements only the hooks it needs."""

    def on_step_end(self, trainer: "PreferenceTrainer", step: int, row: dict | None) -> None:
        """After optimizer step `step` (0-based) and its logging. `row` is the history row logged for
        this step (the same dict as in `trainer.history`), or None on a step that `log_every` skips.
        `trainer.last_batch` is the step's (last micro-batch's) policy batch, [2B, L] padded, on the CPU;
        `trainer.layout` how it was fed to the model (bench.logps.layout_positions counts that)."""


class PreferenceTrainer:
    def __init__(self, method: Method, model, data: PairTensors | ExampleTensors, reference_terms: ReferenceTerms,
                 marginal_seqs: SequenceTensors | None, train_cfg: Mapping, accelerator, meter,
                 logger, seed: int, show_progress: bool = True, callbacks: Sequence[StepCallback] = (),
                 trunk: Mapping[str, TrunkStates] | None = None):
        self.method = method
        self.data = data
        self.reference_terms = reference_terms
        self.marginal_seqs = marginal_seqs  # [2P, L] response-only sequences, for marginal=policy
        self.cfg = train_cfg
        self.accelerator = accelerator
        self.meter = meter
        self.logger = logger
        self.show_progress = show_progress and accelerator.is_main_process
        # bound once: a callback without on_step_end costs nothing per step
        self._step_end_hooks = [cb.on_step_end for cb in callbacks if hasattr(cb, "on_step_end")]
        self.last_batch: SequenceTensors | None = None
        self.step = 0           # optimizer steps done
        self.micro_batches = 0  # loader batches drawn (> step with gradient accumulation)
        self.history: list[dict] = []  # kept on the trainer: a failed run's record keeps the steps before it
        generator = torch.Generator().manual_seed(seed)
        self.unpaired = method.needs.unpaired
        if self.unpaired != isinstance(data, ExampleTensors):
            raise ValueError(f"method {method.name!r} takes {'unpaired examples' if self.unpaired else 'pairs'}, "
                             f"but the trainer was given {type(data).__name__}")
        # Unpaired examples come in fixed blocks of one batch (their KL sequences are built within the block):
        # the loader shuffles the blocks, as it shuffles the pairs.
        items, per_batch = ((torch.arange(data.n_blocks), 1) if self.unpaired
                            else (torch.arange(len(data)), train_cfg["batch_size"]))
        loader = torch.utils.data.DataLoader(items, batch_size=per_batch, shuffle=True, generator=generator,
                                             drop_last=True)
        self.steps_per_epoch = len(loader) // accelerator.gradient_accumulation_steps
        self.total_steps = train_cfg.get("max_steps") or train_cfg["epochs"] * self.steps_per_epoch
        regulator_warmup = getattr(method, "warmup_steps", 0)
        if regulator_warmup >= self.total_steps > 0:
            # the regulator blends in over its warm-up: one as long as training never reaches full strength
            raise ValueError(f"method.warmup_steps={regulator_warmup} is not shorter than training "
                             f"({self.total_steps} optimizer steps): the IMI regulator would never act in full; "
                             f"set it below {self.total_steps} (docs/design.md §4)")
        optimizer = build_optimizer(model, train_cfg)
        warmup = max(1, int(train_cfg["warmup_ratio"] * self.total_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.model, self.optimizer, self.loader, self.scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        self.layout = resolve_layout(train_cfg["layout"], accelerator.unwrap_model(self.model))
        probe = data.batch(torch.arange(min(4, len(data))))  # 8 sequences: one small no-grad forward per layout
        check_packed_layout(self.model, probe, self.layout, accelerator.device)
        self.trunk = self._check_trunk(trunk)

    def _check_trunk(self, trunk):
        """The frozen trunk's states (bench.trunk) of the pairs ("pairs": data.both() order) and of the
        response-only sequences ("marginal"), checked against this run; None = every step runs the whole model."""
        if trunk is None:
            return None
        model = self.accelerator.unwrap_model(self.model)
        if self.unpaired:
            raise ValueError("frozen trunk: unpaired methods run the whole model (their KL sequences have no trunk)")
        reason = trunk_unavailable(model, None, self.accelerator)
        if reason is not None:
            raise ValueError(f"frozen trunk: not available here: {reason}")
        expected = {"pairs": 2 * len(self.data), "marginal": None if self.marginal_seqs is None else len(self.marginal_seqs)}
        for name, size in expected.items():
            if size is not None and (name not in trunk or len(trunk[name]) != size):
                raise ValueError(f"frozen trunk: {name!r} states for {size} sequences are needed; "
                                 f"got {len(trunk[name]) if name in trunk else 'none'}")
        first = {t.first_block for t in trunk.values()}
        if len(first) != 1:
            raise ValueError(f"frozen trunk: its sets start at different blocks {sorted(first)}")
        check_frozen_trunk(model, first.pop())
        return trunk

    def _policy_logps(self, seqs: SequenceTensors, trunk_set: str, rows: torch.Tensor):
        """sequence_logps of the policy on `seqs` (rows `rows` of the trunk's set `trunk_set`): from the
        frozen trunk's states when the run has one, else the whole model."""
        if self.trunk is None:
            return sequence_logps(self.model, seqs, self.layout, self.accelerator.device)
        return trunk_logps(self.accelerator.unwrap_model(self.model), self.trunk[trunk_set], rows, seqs, self.layout,
                           self.accelerator.device)

    def _example_logps(self, blocks: torch.Tensor, step: int) -> ExampleLogps:
        """Policy log-probs of the blocks' completions (with gradient) and of their KL sequences (without: z₀
        is detached, so they need no backward pass, as in TRL's KTOTrainer)."""
        device = self.accelerator.device
        rows = self.data.block_rows(blocks)
        seqs = self.data.completions.select(rows)
        self.last_batch = seqs
        logps, token_counts = sequence_logps(self.model, seqs, self.layout, device)
        kl_seqs = self.data.kl.select(rows)
        with torch.no_grad():
            kl_logps, _ = sequence_logps(self.model, kl_seqs, self.layout, device)
        self.meter.add_train_tokens(int(seqs.attention_mask.sum()))
        self.meter.add_nograd_tokens("kl", int(kl_seqs.attention_mask.sum()))

        def policy_marginal():
            marginal = self.marginal_seqs.select(rows)  # the completions' rows come first
            with torch.no_grad():
                out = sequence_logps(self.model, marginal, self.layout, device)
            self.meter.add_nograd_tokens("marginal", int(marginal.attention_mask.sum()))
            return out

        return example_logps(logps, token_counts, kl_logps, self.data.labels[rows], self.method.needs,
                             self.reference_terms, rows, step=step, policy_marginal=policy_marginal)

    def _pair_logps(self, index: torch.Tensor, step: int) -> PairLogps:
        seqs = self.data.batch(index)  # on the CPU: token counts and packing need no device sync
        self.last_batch = seqs  # for step callbacks that account for what the model was fed
        cpu_index = index.cpu()
        rows = torch.cat([cpu_index, cpu_index + len(self.data)])  # chosen then rejected, as data.batch lays them out
        logps, token_counts = self._policy_logps(seqs, "pairs", rows)
        self.meter.add_train_tokens(int(seqs.attention_mask.sum()))

        def policy_marginal():
            marginal = self.marginal_seqs.select(rows)
            with torch.no_grad():
                out = self._policy_logps(marginal, "marginal", rows)
            self.meter.add_nograd_tokens("marginal", int(marginal.attention_mask.sum()))
            return out

        return pair_logps(logps, token_counts, self.method.needs, self.reference_terms, index, step=step,
                          policy_marginal=policy_marginal)

    def train(self) -> list[dict]:
        """Run the optimisation from `self.step` (0, or where a checkpoint left off); returns the history
        (one row per logged optimizer step)."""
        history = self.history
        accelerator = self.accelerator
        log_every = self.cfg["log_every"]
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {self.method.name}",
                   disable=not self.show_progress, mininterval=1.0)
        step, started, tokens_before = self.step, time.perf_counter(), self.meter.train_tokens
        # A resumed run draws, unused, the batches it trained on before: the loader's generator then
        # stands where it stood, and the next batch is the one an uninterrupted run would take.
        skip = self.micro_batches
        self.model.train()
        while step < self.total_steps:
            for index in self.loader:
                if skip:
                    skip -= 1
                    continue
                self.micro_batches += 1
                with accelerator.accumulate(self.model):
                    batch = self._example_logps(index, step) if self.unpaired else self._pair_logps(index, step)
                    out = self.method(batch)
                    loss = out.losses.mean()
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), self.cfg["max_grad_norm"])
                    loss_value, grad_norm_value = _host_scalars(loss, grad_norm)
                    if not math.isfinite(loss_value):  # checked before the step: the weights never take it
                        raise NonFiniteLossError(
                            f"non-finite loss {loss_value} at step {step} (method {self.method.name}); "
                            f"batch stats: {_batch_stats(batch)}; method metrics: {out.metrics}"
                        )
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                row = None
                if step % log_every == 0 or step == self.total_steps - 1:
                    row = {"step": step, "loss": loss_value, "lr": self.scheduler.get_last_lr()[0],
                           "grad_norm": grad_norm_value, **out.metrics}
                    history.append(row)
                    if accelerator.is_main_process:
                        self.logger.log_step(step, {k: v for k, v in row.items() if k != "step"})
                    bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row.get('rewards/accuracies', math.nan):.2f}")
                self.step = step + 1
                for hook in self._step_end_hooks:
                    hook(self, step, row)
                step += 1
                bar.update(1)
                if step >= self.total_steps:
                    break
        bar.close()
        elapsed = time.perf_counter() - started
        if history and self.meter.train_tokens > tokens_before:  # this call trained (a resume may find none left)
            history[-1]["train_tokens_per_s"] = (self.meter.train_tokens - tokens_before) / max(elapsed, 1e-9)
            if accelerator.is_main_process:  # the same last row in W&B as in history.jsonl
                self.logger.log_step(history[-1]["step"], {"train_tokens_per_s": history[-1]["train_tokens_per_s"]})
        return history


def _host_scalars(loss: torch.Tensor, grad_norm) -> tuple[float, float]:
    """(loss, grad norm or NaN) as Python floats in one device-to-host copy: on a GPU every .item()
    waits for the queued work, and the trainer needs both every step (finiteness check, history)."""
    values = [loss.detach().float().reshape(1)]
    if isinstance(grad_norm, torch.Tensor):
        values.append(grad_norm.detach().float().reshape(1).to(values[0].device))
    host = torch.cat(values).tolist()
    if len(host) == 2:
        return host[0], host[1]
    return host[0], math.nan if grad_norm is None else float(grad_norm)


def _batch_stats(batch: PairLogps) -> dict:
    stats = {}
    for name in ("chosen_logps", "rejected_logps", "reference_chosen_logps", "marginal_chosen_logps"):
        value = getattr(batch, name)
        if value is not None:
            v = value.detach().float()
            stats[name] = {"min": v.min().item(), "max": v.max().item(), "nan": int(torch.isnan(v).sum())}
    return stats
