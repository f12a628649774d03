"""Tokenizers and causal LMs (DESIGN §6).

Two kinds of model config (the `model` group):
- `tiny`: a small Llama-architecture model built from a config, with a word-level tokenizer built
  in-process from a built-in task's vocabulary. Needs no downloaded files; warm-started by SFT.
- `hf`: any Hugging Face causal LM and its tokenizer (`AutoModelForCausalLM`), from the hub or a
  local path, optionally wrapped with LoRA (peft).

This module knows nothing of methods or data beyond a vocabulary list.
"""
from __future__ import annotations

from typing import Mapping

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def build_word_tokenizer(vocabulary: list[str]) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word; special tokens first so their ids are fixed (0–3)."""
    words = list(SPECIAL_TOKENS.values()) + [w for w in dict.fromkeys(vocabulary) if w not in SPECIAL_TOKENS.values()]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def boundary_token_id(tokenizer) -> int:
    """The token that starts a sequence: BOS, or EOS for tokenizers without one (GPT-2 style)."""
    token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("model: the tokenizer has neither a BOS nor an EOS token; set one")
    return token_id


def build_tiny_model(model_cfg: Mapping, tokenizer) -> LlamaForCausalLM:
    """A small Llama from a config (weights random; the SFT warm start trains it)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg["hidden_size"],
        num_hidden_layers=model_cfg["num_layers"],
        num_attention_heads=model_cfg["num_heads"],
        num_key_value_heads=model_cfg["num_heads"],
        intermediate_size=model_cfg["intermediate_size"],
        max_position_embeddings=model_cfg["max_length"],
        tie_word_embeddings=model_cfg.get("tie_embeddings", True),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def load_hf_model(model_cfg: Mapping, dtype: torch.dtype = torch.float32):
    """A hub or local causal LM and its tokenizer; LoRA adapters when `model.lora.enabled`."""
    name = model_cfg["pretrained"]
    tokenizer = AutoTokenizer.from_pretrained(name, revision=model_cfg.get("revision"))
    if tokenizer.pad_token is None:  # batching needs one; EOS is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name, revision=model_cfg.get("revision"), dtype=dtype)
    lora = model_cfg.get("lora") or {}
    if lora.get("enabled"):
        from peft import LoraConfig, get_peft_model  # optional extra: pip install .[peft]

        model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], task_type="CAUSAL_LM"))
    return model, tokenizer


def non_embedding_parameters(model) -> int:
    """N for the FLOPs estimate: every parameter except the token embedding and output matrices.

    This is the convention of Kaplan et al. 2020 (§2.1), whose C ≈ 6·N·tokens we use (DESIGN §8).
    """
    embedding_ids = {id(p) for p in model.get_input_embeddings().parameters()}
    output = model.get_output_embeddings()
    if output is not None:
        embedding_ids |= {id(p) for p in output.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)
