"""What the benchmark compares: the variants, the ratios between them and their claims, and what the
clock leaves out. Declarations only; bench.benchmark.runners runs the variants.
"""
from __future__ import annotations

_OURS_STEP = ("PreferenceTrainer with conf/config.yaml `train` (layout auto = packed on CPU: the [2B] sequences "
              "laid end to end in rows of 32 tokens, or of the batch's longest sequence when that is longer, with "
              "restarting position ids, logits only where a scored token is predicted; fused AdamW; one host read "
              "per step for loss and grad norm; per-step history row, log_every=1)")

# What each variant does per optimizer step (written into the results, so a reader knows what was
# compared). The "ours" variants run with conf/method/<method>.yaml; `train` overrides the run's config.
VARIANTS: dict[str, dict] = {
    "trl_dpo_precomputed": {
        "side": "trl",
        "per_step": "TRL DPOTrainer (loss_type sigmoid, precompute_ref_log_probs=True): HF Trainer loop; the "
                    "collator pads the pairs from the tokenized dataset; one forward+backward of the policy on "
                    "the concatenated [2B, L] chosen+rejected batch through TRL's fused LM head (log-probs, "
                    "entropy, mean logits, top-1 per token); reference log-probs read from the dataset columns; "
                    "TRL's per-step metrics (~15 .item() calls); grad clipping; AdamW (TRL's default, fused); "
                    "LR scheduler.",
    },
    "trl_dpo_ref_model": {
        "side": "trl",
        "per_step": "As trl_dpo_precomputed, but with ref_model=copy.deepcopy(model): an extra no-grad forward "
                    "of the reference model on the same [2B, L] batch every step.",
    },
    "dpo": {
        "side": "ours",
        "method": "dpo",
        "per_step": f"{_OURS_STEP}, method dpo: index batch from pre-padded tensors, packed on the host; one "
                    "forward+backward of the policy on all 2B sequences; cached reference log-probs looked up by "
                    "pair index; loss + TRL-named metrics; grad clipping; LR scheduler.",
    },
    "dpo_padded": {
        "side": "ours",
        "method": "dpo",
        "train": {"layout": "padded"},
        "per_step": "As dpo with train.layout=padded: the [2B, L] padded batch with an attention mask, logits "
                    "at every position. Against dpo, it measures what the packed layout gains.",
    },
    "imi_dpo": {
        "side": "ours",
        "method": "imi_dpo",
        "per_step": "As dpo, plus cached reference-side marginal log-probs looked up by pair index (pmi_source="
                    "reference) and the IMI regulator (delta_pmi -> g -> margin) with its metrics. No extra forward.",
    },
    "simpo": {
        "side": "ours",
        "method": "simpo",
        "per_step": "As dpo without the reference lookup (reference-free SimPO loss).",
    },
    "imi_simpo": {
        "side": "ours",
        "method": "imi_simpo",
        "per_step": "As simpo, plus cached reference log-probs and reference-side marginals (pmi_source="
                    "reference) and the IMI regulator. No extra forward.",
    },
    "rmipo": {
        "side": "ours",
        "method": "rmipo",
        "extra_forward": True,  # its cost is a forward pass, which loss_costs does not see
        "per_step": "As simpo, plus an extra no-grad forward of the live policy on the 2B response-only "
                    "sequences ([BOS] response [EOS], packed too) for log p(y | empty prompt) (RMiPO's code), "
                    "then the IMI margin.",
    },
    "kto": {
        "side": "ours",
        "method": "kto",
        "unpaired": True,
        "per_step": f"{_OURS_STEP}, method kto, on the workload's pairs as 2P unpaired examples (each pair's chosen "
                    "completion desirable, its rejected one undesirable) in fixed blocks of 2B: one forward+backward "
                    "of the policy on the block's 2B completions, one no-grad forward on its 2B KL sequences (each "
                    "prompt with the previous example's completion), both packed; cached reference log-probs of "
                    "both looked up by row; z0, loss + TRL-named metrics; grad clipping; LR scheduler.",
    },
    "trl_kto_precomputed": {
        "side": "trl",
        "unpaired": True,
        "per_step": "TRL KTOTrainer (loss_type kto, precompute_ref_log_probs=True, train_sampling_strategy "
                    "sequential): HF Trainer loop; the collator pads the block's 2B completions and 2B KL sequences "
                    "(TRL's rotation by one within the batch) from the tokenized dataset; one no-grad forward of "
                    "the policy on the [2B, L] KL batch and one forward+backward on the [2B, L] completion batch, "
                    "both through TRL's fused LM head; reference log-probs read from the dataset columns; TRL's "
                    "per-step metrics; grad clipping; AdamW (TRL's default, fused); LR scheduler. Its dataset is "
                    "ours in our trainer's block order, so both sides train the same batches step by step.",
    },
    "dpo_aa": {
        "side": "ours",
        "method": "dpo",
        "per_step": "Exactly dpo, run again in the same repeat (an A/A control): dpo_aa/dpo would be 1 on a quiet "
                    "machine, so its spread is the run-to-run noise of every other ratio.",
    },
}

EXCLUDED_FROM_TIMING = [
    "building the workload (task sampling, tokenisation of our tensors) and the models",
    "TRL: DPOTrainer construction (datasets.map tokenisation, the reference log-prob precompute pass)",
    ("TRL: KTOTrainer construction (datasets.map tokenisation and KL completions, the reference log-prob "
     "precompute pass); ours: encoding the pairs as unpaired examples and their reference terms (completion "
     "and KL sequence), once per benchmark as for the pairs"),
    ("ours: the reference log-prob (and reference-side marginal) cache, computed by score_all before the "
     "trainer is built, once per benchmark (the same numbers for every run), as bench.pipeline computes it once "
     "(cached on disk there)"),
    ("both: trainer construction (ours: its one-off check that packing reproduces padded log-probs on 8 "
     "sequences), optimizer/accelerate preparation, and the first --warmup optimizer steps"),
]

# Ratios measured within each repeat: (name, numerator, denominator, quantity, claim threshold or None).
# tokens_per_s ratios: higher is faster. seconds_per_step ratios: the cost of a variant per step
# relative to its base, on identical batches (same seed, same data order). steps_per_s ratios: higher is
# faster, on identical batches (the KTO sides train the same blocks in the same order, so their steps are
# the same work and the same tokens: this equals their tokens/s ratio).
RATIOS = (
    ("dpo_vs_trl_precomputed", "dpo", "trl_dpo_precomputed", "tokens_per_s", (">=", 1.5)),
    ("kto_vs_trl_kto_precomputed", "kto", "trl_kto_precomputed", "steps_per_s", None),
    ("dpo_vs_trl_ref_model", "dpo", "trl_dpo_ref_model", "tokens_per_s", None),
    ("packed_vs_padded", "dpo", "dpo_padded", "tokens_per_s", None),
    ("imi_dpo_cost_vs_dpo", "imi_dpo", "dpo", "seconds_per_step", ("<=", 1.05)),
    ("imi_simpo_cost_vs_simpo", "imi_simpo", "simpo", "seconds_per_step", ("<=", 1.05)),
    ("rmipo_cost_vs_simpo", "rmipo", "simpo", "seconds_per_step", None),
    # The paper's overhead claim is against DPO with a live reference model; ours precomputes the reference,
    # so the first is rmipo against a DPO step without that forward and the second what a live reference
    # adds to a DPO step (TRL's two variants); rmipo against live-reference DPO is their quotient.
    ("rmipo_cost_vs_dpo", "rmipo", "dpo", "seconds_per_step", None),
    ("trl_ref_model_cost_vs_precomputed", "trl_dpo_ref_model", "trl_dpo_precomputed", "seconds_per_step", None),
    ("noise_dpo_aa_vs_dpo", "dpo_aa", "dpo", "seconds_per_step", None),
)

# Claims that differ by workload (--workload), over RATIOS' own: on SmolLM2 the step is dominated by the
# shared model work (a 135M forward), so the target for ours over TRL is 1.2 there.
WORKLOAD_CLAIMS: dict[str, dict[str, tuple[str, float]]] = {
    "builtin": {},
    "smollm2": {"dpo_vs_trl_precomputed": (">=", 1.2)},
}
# What --variants defaults to per workload. A SmolLM2 run costs far more than a tiny-model one
# (docs/design.md §14), so its default is the headline comparison and its A/A control (wall time:
# results/throughput/README.md).
DEFAULT_VARIANTS: dict[str, list[str]] = {
    "builtin": list(VARIANTS),
    "smollm2": ["trl_dpo_precomputed", "dpo", "dpo_aa"],
}


def claims_for(workload: str) -> dict[str, tuple[str, float] | None]:
    """Each ratio's claim on `workload`: RATIOS' own unless WORKLOAD_CLAIMS overrides it."""
    overrides = WORKLOAD_CLAIMS[workload]
    return {name: overrides.get(name, claim) for name, _, _, _, claim in RATIOS}


TOKEN_COUNT = ("non-pad tokens of each step's [2B, L] batch: [BOS] prompt chosen [EOS] + [BOS] prompt rejected "
               "[EOS] per pair (identical sequences on both sides); for the KTO variants, the block's 2B [BOS] "
               "prompt completion [EOS] sequences, the same 2P sequences over the epoch. rmipo's extra no-grad "
               "response-only tokens and KTO's no-grad KL sequences are not counted (reported as nograd_tokens). "
               "Positions: what the model computed with gradient, tokens plus padding (padded layouts) or plus the "
               "unfilled ends of packed rows")
