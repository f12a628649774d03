"""The frozen trunk of top-layers-only training (docs/design.md §13).

With `model.trainable_layers = k` only the top k blocks (and the final norm) train; the embeddings and the
blocks below are frozen, the model has no dropout and a run's training sequences are fixed, so the hidden
states entering the first trainable block are the same at every step. They are computed once (`build_trunk`)
and each step runs only the top blocks, the final norm and the LM head, the head only at scored positions
(`trunk_logps`). Same numbers as `bench.logps.sequence_logps` to float rounding (tests/test_trunk.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.data.encoding import SequenceTensors
from bench.logps import Layout, first_fit_decreasing, pack

TRUNK_FILE = "trunk.pt"
# Sequences per no-grad batch of the trunk build: [32, L, hidden] activations, small next to the model.
BUILD_BATCH = 32


@dataclass
class TrunkStates:
    """Hidden states entering block `first_block` of N right-padded sequences, real tokens only:
    sequence i's tokens are rows offsets[i]:offsets[i+1] of `states`; `tokens` keeps their ids, so
    that a lookup can check it is given the sequences the states were built from."""

    states: torch.Tensor  # [T, hidden]
    tokens: torch.Tensor  # [T]
    offsets: torch.Tensor  # [N + 1]
    first_block: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, index: torch.Tensor, seqs: SequenceTensors) -> torch.Tensor:
        """The states of sequences `index` as [T', hidden], in the order of `seqs`' real tokens (row-major),
        where `seqs` holds those sequences; raises if its tokens are not the ones the states were built for."""
        index = index.cpu()
        starts, ends = self.offsets[index], self.offsets[index + 1]
        lengths = ends - starts
        flat = torch.cat([torch.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist())])
        valid = seqs.attention_mask.cpu().bool()
        if not torch.equal(lengths, valid.sum(-1)) or not torch.equal(self.tokens[flat], seqs.input_ids.cpu()[valid]):
            raise ValueError("frozen trunk: the sequences asked for are not the ones its states were built from")
        return self.states[flat]


def decoder_parts(model):
    """(inner model, its decoder blocks) of a Llama-style causal LM (model.model with embed_tokens, layers,
    norm, rotary_emb; model.lm_head), or None when the model is not laid out that way."""
    inner = getattr(model, "model", None)
    if not all(hasattr(inner, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return None
    if not hasattr(model, "lm_head"):
        return None
    return inner, inner.layers


def trunk_unavailable(model, model_cfg=None, accelerator=None) -> str | None:
    """Why the frozen-trunk path cannot run for this model, `model` config and accelerator (None: it can;
    a config or accelerator left out is not checked)."""
    if model_cfg is not None and model_cfg.get("trainable_layers") is None:
        return "model.trainable_layers is null: every block trains"
    if model_cfg is not None and (model_cfg.get("lora") or {}).get("enabled"):
        # peft wraps the model and puts adapters inside the blocks; the trunk path calls the blocks itself
        return "model.lora.enabled: LoRA adapters train through peft's wrapper"
    if decoder_parts(model) is None:
        return f"{type(model).__name__} is not a Llama-style decoder (model.model.layers, rotary_emb, lm_head)"
    if accelerator is not None and accelerator.num_processes > 1:
        # DDP synchronises gradients in hooks of the wrapped model's forward, which the trunk path skips
        return "several processes (DDP)"
    if accelerator is not None and accelerator.mixed_precision != "no":
        # accelerate applies autocast by wrapping model.forward, which the trunk path skips
        return f"mixed precision {accelerator.mixed_precision}"
    return None


def check_frozen_trunk(model, first_block: int) -> None:
    """Raise unless the embeddings and blocks 0..first_block-1 are frozen: their states are computed once,
    so a parameter among them that trains would silently be ignored."""
    inner, blocks = decoder_parts(model)
    for prefix, module in [("embed_tokens", inner.embed_tokens)] + [(f"layers.{i}", blocks[i]) for i in range(first_block)]:
        for name, parameter in module.named_parameters():
            if parameter.requires_grad:
                raise ValueError(
                    f"frozen trunk: parameter {prefix}.{name} requires grad, but it lies below the first trainable "
                    f"block ({first_block}); model.trainable_layers freezes everything there")


def _causal_mask(inner, hidden, attention_mask, position_ids):
    # what LlamaModel.forward builds (transformers.masking_utils), so every attention implementation
    # sees the same mask as in the full forward
    from transformers.masking_utils import create_causal_mask

    return create_causal_mask(config=inner.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None,
                              position_ids=position_ids)


def _run_blocks(inner, blocks, hidden, attention_mask, position_ids):
    mask = _causal_mask(inner, hidden, attention_mask, position_ids)
    position_embeddings = inner.rotary_emb(hidden, position_ids=position_ids)
    for block in blocks:
        hidden = block(hidden, attention_mask=mask, position_embeddings=position_embeddings, position_ids=position_ids,
                       cache=None, use_cache=False)
    return hidden


@torch.no_grad()
def build_trunk(model, seqs: SequenceTensors, first_block: int, device) -> TrunkStates:
    """The states entering block `first_block` of every sequence in `seqs`: embeddings and blocks below it
    only, in the padded layout, without gradient (on the CPU)."""
    inner, blocks = decoder_parts(model)
    was_training = model.training
    model.eval()
    lengths = seqs.attention_mask.sum(-1)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
    states = torch.empty(int(offsets[-1]), inner.config.hidden_size, dtype=next(model.parameters()).dtype)
    # batches of similar lengths (longest first), so that little of the build is spent on padding
    order = sorted(range(len(seqs)), key=lambda i: -int(lengths[i]))
    try:
        for start in range(0, len(seqs), BUILD_BATCH):
            index = torch.tensor(order[start:start + BUILD_BATCH])
            part = seqs.select(index)
            ids, attention = part.input_ids.to(device), part.attention_mask.to(device)
            hidden = inner.embed_tokens(ids)
            # right padding: a real token's position is its column (what the padded forward uses)
            position_ids = torch.arange(ids.shape[1], device=device).unsqueeze(0)
            hidden = _run_blocks(inner, blocks[:first_block], hidden, attention, position_ids).cpu()
            for row, i in enumerate(index.tolist()):
                states[offsets[i]:offsets[i + 1]] = hidden[row, :lengths[i]]
    finally:
        model.train(was_training)
    tokens = seqs.input_ids[seqs.attention_mask.bool()]
    return TrunkStates(states, tokens, offsets, first_block)


def trunk_logps(model, trunk: TrunkStates, index: torch.Tensor, seqs: SequenceTensors, layout: Layout,
                device) -> tuple[torch.Tensor, torch.Tensor]:
    """`bench.logps.sequence_logps(model, seqs, layout)` from the trunk's states of sequences `index`
    (`seqs` = those sequences): the blocks from `trunk.first_block` up, the final norm, and the LM head at
    the positions that predict a scored token only. Gradient flows to the top blocks as in the full forward."""
    inner, blocks = decoder_parts(model)
    cpu = SequenceTensors(*(t.cpu() for t in (seqs.input_ids, seqs.attention_mask, seqs.response_mask)))
    states = trunk.rows(index, cpu)
    valid = cpu.attention_mask.bool()
    n, width = cpu.input_ids.shape
    if layout.kind == "padded":
        grid = states.new_zeros(n * width, states.shape[-1])
        grid[valid.reshape(-1)] = states
        hidden = grid.view(n, width, -1).to(device)
        position_ids = torch.arange(width, device=device).unsqueeze(0)
        attention = cpu.attention_mask.to(device)
        # token t is scored when response_mask says so; its logit comes from position t-1
        scored = cpu.response_mask[:, 1:].bool()
        keep = torch.nn.functional.pad(scored, (0, 1))  # [N, L]: the positions whose next token is scored
        targets = cpu.input_ids[:, 1:][scored]
        target_rows, target_cols = scored.nonzero(as_tuple=True)
        counts = scored.sum(-1).float()
    else:
        packed, dest = pack(cpu, layout.row_width), _packed_slots(cpu, layout.row_width)
        if not torch.equal(packed.input_ids.reshape(-1)[dest], cpu.input_ids[valid]):
            raise RuntimeError("frozen trunk: bench.logps.pack placed tokens where _packed_slots did not expect them")
        rows, row_width = packed.input_ids.shape
        # the filler of a row's tail gets zero states: it attends only to itself, and its outputs are never kept
        grid = states.new_zeros(rows * row_width, states.shape[-1])
        grid[dest] = states
        hidden = grid.view(rows, row_width, -1).to(device)
        position_ids = packed.position_ids.to(device)
        attention = None  # with None, transformers reads the restarting position ids as sequence boundaries
        keep, targets, target_rows, target_cols, counts = (packed.keep, packed.targets, packed.target_rows,
                                                           packed.target_cols, packed.counts)
    hidden = _run_blocks(inner, blocks[trunk.first_block:], hidden, attention, position_ids)
    # the final norm is per token: normalising only the kept positions gives the same values
    logits = model.lm_head(inner.norm(hidden[keep.to(device)]))  # [K, V]
    token_logps = -F.cross_entropy(logits.float(), targets.to(device), reduction="none")
    # scattered into the [N, L-1] grid and summed by rows, as bench.logps does in both layouts (in the
    # padded path's dtype: a float64 model sums its float32 token log-probs in float64)
    out = token_logps.new_zeros(n, width - 1, dtype=torch.promote_types(token_logps.dtype, logits.dtype))
    out[target_rows.to(device), target_cols.to(device)] = token_logps.to(out.dtype)
    return out.sum(-1), counts.to(device)


def _packed_slots(seqs: SequenceTensors, row_width: int | None) -> torch.Tensor:
    """The slot in `bench.logps.pack`'s flattened [R, W] grid of each real token of `seqs` (row-major): the
    same first-fit-decreasing placement (checked against pack's tokens by the caller)."""
    lengths = seqs.attention_mask.sum(-1).tolist()
    width = sum(lengths) if row_width is None else max(row_width, max(lengths))
    rows, offsets, _ = first_fit_decreasing(lengths, width)
    start = torch.tensor(rows) * width + torch.tensor(offsets)
    return torch.cat([torch.arange(s, s + n) for s, n in zip(start.tolist(), lengths)])


def trunk_key(model, first_block: int, sets: dict[str, SequenceTensors]) -> dict:
    """What a trunk depends on, for its disk-cache key: the frozen weights (a digest of their bytes, so any
    model, however it was loaded, keys correctly; ~1 s for SmolLM2's 28 lower blocks), the block it stops
    at, every set's tokens, the attention implementation and the library versions."""
    inner, blocks = decoder_parts(model)
    weights = hashlib.sha256()
    for module in [inner.embed_tokens, *blocks[:first_block]]:
        for name, tensor in module.state_dict().items():
            weights.update(name.encode())
            weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    data = hashlib.sha256()
    for name, seqs in sorted(sets.items()):
        data.update(name.encode())
        for t in (seqs.input_ids, seqs.attention_mask):
            data.update(t.cpu().contiguous().numpy().tobytes())
    import transformers

    # the library versions: the blocks' code (transformers) and kernels (torch) set the states' rounding
    return {"weights": weights.hexdigest(), "first_block": first_block, "dtype": str(next(model.parameters()).dtype),
            "sequences": data.hexdigest(), "model_type": getattr(model.config, "model_type", None),
            "attention": getattr(model.config, "_attn_implementation", None),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}


def cached_trunks(cache, model, first_block: int, sets: dict[str, SequenceTensors], n_params: int, device):
    """`build_trunk` of every set, built once per key (`trunk_key`) in the disk cache; returns
    ({set name: TrunkStates}, CacheEntry). The build cost counts its tokens and 2·N FLOPs per token,
    N = `n_params` (the non-embedding parameters of the frozen blocks)."""

    def build(directory: Path) -> dict:
        trunks = {name: build_trunk(model, seqs, first_block, device) for name, seqs in sets.items()}
        torch.save({name: vars(t) for name, t in trunks.items()}, directory / TRUNK_FILE)
        tokens = sum(len(t.tokens) for t in trunks.values())
        return {"tokens": tokens, "flops": 2.0 * n_params * tokens,
                "bytes": (directory / TRUNK_FILE).stat().st_size}

    entry = cache.get_or_build("trunk", trunk_key(model, first_block, sets), build)
    stored = torch.load(entry.path / TRUNK_FILE)
    return {name: TrunkStates(**fields) for name, fields in stored.items()}, entry


def trunk_parameters(model, first_block: int) -> int:
    """Non-embedding parameters of blocks 0..first_block-1: what a step no longer runs."""
    _, blocks = decoder_parts(model)
    return sum(p.numel() for block in blocks[:first_block] for p in block.parameters())


def run_trunk(model_cfg, model, train, marginal_seqs: SequenceTensors | None, unpaired: bool, cache, meter,
              accelerator) -> dict[str, TrunkStates] | None:
    """A run's frozen trunk (bench.pipeline): the states of its training pairs ("pairs", chosen then rejected)
    and response-only sequences ("marginal"), from the disk cache, its build counted as a shared cost and its
    blocks taken out of the per-step FLOPs; None when the whole model must run (see `trunk_unavailable`)."""
    if unpaired or trunk_unavailable(model, model_cfg, accelerator) is not None:
        return None  # unpaired methods: their blocks' KL sequences would need a trunk of their own (not built)
    first_block = len(decoder_parts(model)[1]) - model_cfg["trainable_layers"]
    check_frozen_trunk(model, first_block)
    sets = {"pairs": train.both(), **({"marginal": marginal_seqs} if marginal_seqs is not None else {})}
    n_trunk = trunk_parameters(model, first_block)
    trunks, entry = cached_trunks(cache, model, first_block, sets, n_trunk, next(model.parameters()).device)
    meter.add_shared("trunk", entry.key, entry.hit, entry.build_cost, entry.wait_s)
    meter.set_frozen_trunk(n_trunk)
    return trunks
