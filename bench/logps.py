"""Per-sequence log-probabilities: s(y) = Σ_t log π(y_t | context, y_<t) over scored tokens.

For the policy (with gradient) and, without gradient, the reference, the marginal log p(y | ∅) and evaluation;
knows nothing of methods. Two batch layouts, `padded` (the reference implementation) and `packed` (no compute on
padding, logits only where a scored token is predicted), give the same numbers (tests/test_logps_layouts.py); how
packing works and when `auto` picks it: docs/design.md §14.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bench.data.encoding import SequenceTensors

LAYOUT_NAMES = ("auto", "packed", "padded")
# Tokens per packed row on sdpa/eager attention. Each row's mask is a dense [W, W] block, so
# attention work grows with W, while a narrow row leaves more of its tail unfilled. On the throughput
# workload 32 fills rows as well as wider widths do and ran fastest (the measurements:
# docs/design.md §14). A sequence longer than W gets a row of its own length.
PACKED_ROW_WIDTH = 32
# Most logits one no-grad scoring batch may hold (score_all): 2^26 floats = 256 MiB, times ~2 with the
# loss's float copy. The built-in tasks never reach it (256 × 64 positions × ~40 tokens).
LOGIT_BUDGET = 2**26


@dataclass(frozen=True)
class Layout:
    """How `sequence_logps` lays a batch out for the model (docs/design.md §14)."""

    kind: Literal["packed", "padded"]
    # packed only: tokens per row; None = every sequence in one row (what flash-attention's varlen
    # path needs: transformers treats position ids as packed only for a batch of one row)
    row_width: int | None = PACKED_ROW_WIDTH


PADDED = Layout("padded", None)


def choose_layout(name: str, device_type: str, attention: str) -> Layout:
    """`train.layout` (auto|packed|padded) for a model on `device_type` with `attention` (its
    config._attn_implementation).

    auto = packed wherever packing computes strictly less than padding:
    - CPU (sdpa or eager attention): rows of PACKED_ROW_WIDTH with a block-diagonal mask;
    - GPU with a flash-attention implementation: one packed row through its varlen kernel;
    - GPU with sdpa/eager: padded. A materialised block-diagonal mask moves sdpa off its fused
      causal kernel, so packing may not pay there; not measured yet, hence the safe choice.
    An explicit `packed` is honoured everywhere, one row on flash-attention (what its varlen path needs).
    """
    if name not in LAYOUT_NAMES:
        raise ValueError(f"train.layout must be one of {', '.join(LAYOUT_NAMES)}; got {name!r}")
    varlen = attention.startswith("flash_attention")
    packed = Layout("packed", None if varlen else PACKED_ROW_WIDTH)
    if name == "packed" or (name == "auto" and (device_type == "cpu" or varlen)):
        return packed
    return PADDED


def resolve_layout(name: str | Layout, model) -> Layout:
    """`choose_layout` for this model (a `Layout` passes through)."""
    if isinstance(name, Layout):
        return name
    attention = getattr(model.config, "_attn_implementation", None) or "eager"
    return choose_layout(name, next(model.parameters()).device.type, attention)


@dataclass
class PackedSequences:
    """N sequences packed into R rows of width W, and where their scored tokens' logits come out.

    The model returns logits for the `keep` positions in row-major order; targets[k] is the token
    predicted at the k-th kept position, and it belongs to sequence target_rows[k] at column
    target_cols[k] of the padded [N, L] layout (so sums reduce the same way in both layouts).
    """

    input_ids: torch.Tensor  # [R, W]
    position_ids: torch.Tensor  # [R, W], restarting at 0 at every sequence (and at a row's padding tail)
    keep: torch.Tensor  # [R, W] bool: positions whose next token is scored
    targets: torch.Tensor  # [K]
    target_rows: torch.Tensor  # [K]
    target_cols: torch.Tensor  # [K]
    counts: torch.Tensor  # [N] scored tokens per sequence (float)
    n_sequences: int
    padded_width: int  # L

    def to(self, device) -> "PackedSequences":
        moved = {name: getattr(self, name).to(device, non_blocking=True)
                 for name in ("input_ids", "position_ids", "keep", "targets", "target_rows", "target_cols", "counts")}
        return PackedSequences(**moved, n_sequences=self.n_sequences, padded_width=self.padded_width)


def first_fit_decreasing(lengths: list[int], width: int) -> tuple[list[int], list[int], list[int]]:
    """Assign sequences to rows of `width` tokens: longest first, each into the first row it fits.

    Returns (row of each sequence, its offset in the row, tokens used per row). Deterministic: ties
    keep the input order. First-fit decreasing needs at most 11/9·OPT + 6/9 rows (Dósa 2007).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows, offsets, used = [0] * len(lengths), [0] * len(lengths), []
    for i in order:
        n = lengths[i]
        for r, filled in enumerate(used):
            if filled + n <= width:
                break
        else:
            r = len(used)
            used.append(0)
        rows[i], offsets[i] = r, used[r]
        used[r] += n
    return rows, offsets, used


def pack(seqs: SequenceTensors, row_width: int | None) -> PackedSequences:
    """Lay right-padded [N, L] sequences end to end in rows (see `PackedSequences`). CPU work on
    small index tensors; call it before moving a batch to its device so the lengths are host values."""
    lengths_t = seqs.attention_mask.sum(-1)
    lengths = lengths_t.tolist()
    n, padded_width = len(lengths), seqs.input_ids.shape[1]
    width = sum(lengths) if row_width is None else max(row_width, max(lengths))
    rows, offsets, used = first_fit_decreasing(lengths, width)
    valid = seqs.attention_mask.bool()
    seq_index = torch.arange(n).repeat_interleave(lengths_t)  # [T]: which sequence each real token is from
    within = torch.arange(padded_width).expand(n, -1)[valid]  # [T]: its position inside that sequence
    start = torch.tensor(rows) * width + torch.tensor(offsets)
    dest = start[seq_index] + within  # [T]: its slot in the flattened [R, W] grid
    n_rows = len(used)
    # the filler at a row's end is token 0: its outputs are never kept and it attends only to itself,
    # so no gradient flows through it whatever token it is
    input_ids = torch.zeros(n_rows * width, dtype=seqs.input_ids.dtype)
    input_ids[dest] = seqs.input_ids[valid]
    # A row's padding tail is one more "sequence" restarting at 0: never a continuation of the last
    # real one (whose last position is >= 0, so the step is <= 0, never +1).
    position_ids = (torch.arange(width) - torch.tensor(used)[:, None]).reshape(-1)
    position_ids[dest] = within
    # token t is scored if response_mask says so and it has a predecessor in its own sequence; its
    # logit comes from the slot before it (t >= 1 keeps that slot inside the same sequence)
    scored = seqs.response_mask[valid].bool() & (within > 0)
    slot = dest[scored] - 1
    grid = torch.full((n_rows * width,), -1, dtype=torch.long)
    grid[slot] = torch.arange(len(slot))  # row-major rank of each kept slot orders the targets
    keep = grid >= 0
    order = grid[keep]
    targets = seqs.input_ids[valid][scored][order]
    target_rows = seq_index[scored][order]
    target_cols = (within[scored] - 1)[order]
    counts = torch.bincount(target_rows, minlength=n).float()
    return PackedSequences(input_ids.view(n_rows, width), position_ids.view(n_rows, width), keep.view(n_rows, width),
                           targets, target_rows, target_cols, counts, n, padded_width)


def layout_positions(seqs: SequenceTensors, layout: Layout) -> int:
    """Input positions the model computes for `seqs` under `layout` (tokens plus padding slots)."""
    if layout.kind == "padded":
        return seqs.input_ids.numel()
    return pack(seqs, layout.row_width).input_ids.numel()


def _padded_logps(model, seqs: SequenceTensors) -> tuple[torch.Tensor, torch.Tensor]:
    # use_cache=False: a scoring pass never decodes further, so building a KV cache is wasted work
    logits = model(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask, use_cache=False).logits[:, :-1]
    labels = seqs.input_ids[:, 1:]
    mask = seqs.response_mask[:, 1:].to(logits.dtype)
    token_logps = -F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
    return (token_logps * mask).sum(-1), mask.sum(-1)


def _packed_logps(model, packed: PackedSequences) -> tuple[torch.Tensor, torch.Tensor]:
    # attention_mask=None and use_cache=False are what make transformers read the restarting
    # position_ids as sequence boundaries (masking_utils._preprocess_mask_arguments)
    logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False,
                   logits_to_keep=packed.keep).logits  # [K, V]: only the kept positions
    token_logps = -F.cross_entropy(logits.float(), packed.targets, reduction="none")
    # Scatter into the padded [N, L-1] grid and sum rows, as the padded path does: each slot is
    # written once (deterministic on every device, unlike an index_add over sequences).
    grid = token_logps.new_zeros(packed.n_sequences, packed.padded_width - 1)
    grid[packed.target_rows, packed.target_cols] = token_logps
    return grid.sum(-1), packed.counts


def sequence_logps(model, seqs: SequenceTensors, layout: Layout = PADDED,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probs [N], number of scored tokens [N]) of each sequence's response tokens.

    Token t is predicted by the logits at t−1. `seqs` may live on the CPU: each layout moves what
    it needs to `device` (default: where `seqs` is), packing first on the host.
    """
    device = seqs.input_ids.device if device is None else device
    if layout.kind == "padded":
        moved = SequenceTensors(*(t.to(device) for t in (seqs.input_ids, seqs.attention_mask, seqs.response_mask)))
        return _padded_logps(model, moved)
    cpu = SequenceTensors(*(t.cpu() for t in (seqs.input_ids, seqs.attention_mask, seqs.response_mask)))
    return _packed_logps(model, pack(cpu, layout.row_width).to(device))


# Largest mean per-token difference between the layouts that still counts as equal: float32 agrees
# to ~1e-6 per token (tests/test_logps_layouts.py); 16-bit types round each logit to ~1e-2. A layout
# whose sequences see each other (a model that ignores packed position ids) is off by ~0.1 per token
# even at random initialisation.
PACKED_CHECK_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
PACKED_CHECK_TOLERANCE_16BIT = 5e-2


# The models that passed the check, with what it depends on (layout, dtype, attention code): the check is
# about how a model's attention treats position ids, not its weights, so a run checks its policy and its
# reference once each instead of at every scoring pass (nine on a pretrained model's run).
_PASSED_PACKED_CHECK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def check_packed_layout(model, seqs: SequenceTensors, layout: Layout, device=None, n_sequences: int = 8) -> None:
    """Raise unless `layout` (packed) gives the padded log-probs on the first sequences of `seqs`.

    Packing relies on the model turning restarting position ids into sequence boundaries, which
    transformers does for its own attention code; a model with custom attention may not, and would
    then silently let packed sequences attend to each other. One small no-grad forward per layout,
    once per model object (and layout, dtype and attention implementation).
    """
    if layout.kind != "packed":
        return
    dtype = next(model.parameters()).dtype
    checked = (layout, dtype, getattr(getattr(model, "config", None), "_attn_implementation", None))
    if checked in _PASSED_PACKED_CHECK.get(model, ()):
        return
    was_training = model.training
    model.eval()  # dropout would make the two passes differ
    probe = seqs.select(torch.arange(min(n_sequences, len(seqs))))
    try:
        padded, counts = sequence_logps(model, probe, PADDED, device)
        packed, _ = sequence_logps(model, probe, layout, device)
    finally:
        model.train(was_training)
    tolerance = PACKED_CHECK_TOLERANCE.get(dtype, PACKED_CHECK_TOLERANCE_16BIT)
    per_token = ((packed.float() - padded.float()).abs() / counts.float().clamp(min=1)).max().item()
    if not per_token <= tolerance:
        raise RuntimeError(
            f"train.layout: the packed layout changes this model's log-probs by {per_token:.3g} per token "
            f"(> {tolerance:g}): its attention does not separate sequences by position ids. Set train.layout=padded."
        )
    _PASSED_PACKED_CHECK.setdefault(model, set()).add(checked)


@torch.no_grad()
def score_all(model, seqs: SequenceTensors, batch_size: int = 256, device: torch.device | str = "cpu",
              layout: str | Layout = PADDED):
    """sequence_logps over a whole dataset without gradient: ([N], [N]) on the CPU.

    `layout` takes `train.layout` names too (resolved for this model); the default stays `padded`
    so that callers which do not pass one compute exactly what they did before the option existed.
    """
    was_training = model.training
    model.eval()
    # The padded layout materialises [batch, L, vocabulary] logits (and a float copy for the loss): with a
    # 49k vocabulary, 256 sequences of ~100 tokens are ~10 GB. Cap the batch to LOGIT_BUDGET logits.
    vocabulary = getattr(getattr(model, "config", None), "vocab_size", None) or 1
    batch_size = max(1, min(batch_size, LOGIT_BUDGET // max(seqs.input_ids.shape[1] * vocabulary, 1)))
    layout = resolve_layout(layout, model)
    check_packed_layout(model, seqs, layout, device)
    sums, counts = [], []
    for start in range(0, len(seqs), batch_size):
        part = seqs.select(torch.arange(start, min(start + batch_size, len(seqs))))
        s, n = sequence_logps(model, part, layout, device)
        sums.append(s.float().cpu())
        counts.append(n.float().cpu())
    model.train(was_training)
    return torch.cat(sums), torch.cat(counts)
