"""Helpers shared by several test modules (fixtures live in conftest.py). Import as `from helpers import ...`."""
from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import uuid
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tokenizers import processors
from transformers import LlamaConfig, LlamaForCausalLM

from bench import records
from bench.models import build_word_tokenizer
from bench.sweeps.planning import hydra_context, job_config, sweep_jobs

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
MULTIRUN = ROOT / "multirun.sh"
PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# Secrets in the environment of the commands whose every written byte is scanned (tests/test_secrets_scan.py,
# and the quick suite in tests/test_sweeps.py): per-session values no file could hold by chance.
TOKEN = uuid.uuid4().hex
SECRETS = {"WANDB_API_KEY": f"imibench-wandb-{TOKEN}", "HF_TOKEN": f"hf_imibench{TOKEN}"}
# Presets that run a pretrained model (the real-model lane, with its own budget): tests/test_real_model.py
# runs that path; the fast-mode preset runs of tests/test_sweeps.py leave them out.
# the real-model lane's presets: its budget, and every preset built on it
REAL_MODEL = {"smollm2_budget"} | {p for p in PRESETS
                                   if "- smollm2_budget" in (CONF_DIR / "experiment" / f"{p}.yaml").read_text()}


def dataset_config(name: str) -> dict:
    """conf/dataset/<name>.yaml as plain containers."""
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / f"{name}.yaml"))


def default_task(name: str):
    """The built-in task of conf/dataset/<name>.yaml, built with that config's task_kwargs."""
    from bench.data.tasks import build_task

    cfg = dataset_config(name)
    return build_task(cfg["task"], **cfg.get("task_kwargs", {}))


def run_command(args: list[str], *, cwd: Path, env: dict | None = None, timeout: float) -> subprocess.CompletedProcess:
    """Run `args` in its own process group (joblib workers too), killed whole after `timeout` s, so a hung
    command fails its test instead of hanging it. stdout and stderr together in `.stdout`."""
    proc = subprocess.Popen([str(a) for a in args], cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(map(str, args))} did not finish within {timeout} s; output tail:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@lru_cache(maxsize=None)
def preset_jobs(preset: str) -> list[list[str]]:
    """The override list of every job `python -m bench.train -m experiment=<preset>` launches."""
    with hydra_context() as parser:
        jobs, _ = sweep_jobs(parser, [f"experiment={preset}"])
    return jobs


def task_config(*overrides: str):
    """A job's config as the job sees it (no hydra node), runs and caches kept out of the repo. Composed once
    per override list in a session (several tests read the same presets' jobs); each call gets its own copy."""
    return task_configs([overrides])[0]


_COMPOSED: dict[tuple[str, ...], object] = {}


def task_configs(jobs) -> list:
    """`task_config` of each override list, those not composed yet composed in one Hydra context (starting
    one costs about a third of a composition)."""
    missing = list(dict.fromkeys(tuple(job) for job in jobs if tuple(job) not in _COMPOSED))
    if missing:
        with hydra_context():
            for job in missing:
                cfg = job_config(["paths.runs_root=/nonexistent/runs", "paths.cache_root=/nonexistent/cache", *job])
                OmegaConf.set_struct(cfg, False)
                _COMPOSED[job] = cfg
    return [copy.deepcopy(_COMPOSED[tuple(job)]) for job in jobs]


def scan(roots: list[Path], needles: list[str]) -> tuple[int, dict[str, list[str]]]:
    """(files scanned, {file: the needles found in its bytes}) over every file under `roots`."""
    encoded = [(n, n.encode()) for n in needles]
    n_files, hits = 0, {}
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            n_files += 1
            data = path.read_bytes()
            found = [n for n, raw in encoded if raw in data]
            if found:
                hits[str(path)] = found
    return n_files, hits


def assert_no_secret(root: Path, outputs: list[subprocess.CompletedProcess], needles: list[str], kinds: list[str]) -> int:
    """No needle in any file under root nor in what the commands printed; among the files scanned, one of
    each kind (a path fragment: the scan covered what it should, not an empty folder). Returns the count."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    n_files, hits = scan(files, needles)
    assert hits == {}, f"secrets found in {sorted(hits)}"
    for proc in outputs:
        assert not any(n in proc.stdout + (proc.stderr or "") for n in needles), "a secret was printed"
    written = [str(p.relative_to(root)) for p in files]
    for kind in kinds:
        assert any(kind in path for path in written), f"no {kind} among the {n_files} files scanned"
    return n_files


def sweep_records(sweep_dir: Path) -> dict[str, dict]:
    """run id -> record, for every run folder under one sweep folder."""
    return {d.name: records.read_record(d) for d in sorted(sweep_dir.iterdir()) if (d / records.RECORD_FILE).exists()}


# What a tokenizer's encode() adds around a text: None (the suite's tokenizers: nothing), BOS, BOS and EOS.
POST_PROCESSORS = {None: None, "bos": "<bos> $A", "bos_eos": "<bos> $A <eos>"}


def word_tokenizer(words: list[str], post_processor: str | None = None):
    """The suite's word-level tokenizer (bench.models.build_word_tokenizer), optionally with a
    post-processor that adds special tokens on encode() as many hub tokenizers do."""
    tokenizer = build_word_tokenizer(sorted(set(words)))
    if post_processor is not None:
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=POST_PROCESSORS[post_processor],
            special_tokens=[(t, tokenizer.convert_tokens_to_ids(t)) for t in ("<bos>", "<eos>")],
        )
    return tokenizer


def tiny_llama(tokenizer, seed: int = 0, **config) -> LlamaForCausalLM:
    """A one-layer Llama (hidden 32) for `tokenizer`, seeded; `config` overrides LlamaConfig fields."""
    torch.manual_seed(seed)
    fields = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(LlamaConfig(**{**fields, **config}))


# --- the local SLURM cluster (tests/cluster/local_slurm.sh); the fixture `cluster_env` is in conftest.py

SLURM_STATE_DIR = Path(os.environ.get("IMI_BENCH_SLURM_DIR", "/tmp/imi-bench-slurm"))
# What sbatch copies into every job when the submitting shell had a rendezvous of its own (pitfall:
# all jobs would share this port, and a rank could join another job's group).
SUBMITTING_SHELL_RENDEZVOUS = {"MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "29999", "RANK": "0",
                               "WORLD_SIZE": "2", "LOCAL_RANK": "0"}



def perturbed_pair(tokenizer, scale: float = 0.3):
    """A tiny Llama and a copy with N(0, scale²) added to every weight: a policy and a reference that differ
    (the TRL parity tests' models)."""
    policy = tiny_llama(tokenizer, max_position_embeddings=128)
    reference = copy.deepcopy(policy)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(scale * torch.randn_like(p))
    return policy, reference

def slurm_env() -> dict[str, str]:
    """This environment, pointed at the local cluster's slurm.conf unless SLURM_CONF says otherwise."""
    env = dict(os.environ)
    if "SLURM_CONF" not in env and (SLURM_STATE_DIR / "slurm.conf").exists():
        env["SLURM_CONF"] = str(SLURM_STATE_DIR / "slurm.conf")
    for key in SUBMITTING_SHELL_RENDEZVOUS:  # only the test that wants them passes them on
        env.pop(key, None)
    return env


def cluster_problem(env: dict[str, str]) -> str | None:
    """Why the SLURM tests cannot run here, or None."""
    start = "start it with `tests/cluster/local_slurm.sh start`"
    if shutil.which("sinfo") is None:
        return f"SLURM is not installed (no `sinfo`); {start}"
    try:
        state = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%T"], env=env, capture_output=True,
                               text=True, timeout=30)
        accounting = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], env=env, capture_output=True,
                                    text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        return f"the SLURM cluster does not answer ({exc.cmd[0]} timed out); {start}"
    states = state.stdout.split()
    if state.returncode != 0 or not any(s.rstrip("*~#").startswith(("idle", "mix", "alloc")) for s in states):
        return f"the SLURM cluster is down (sinfo: {(state.stdout + state.stderr).strip()[:200]!r}); {start}"
    if accounting.returncode != 0:
        return (f"SLURM accounting is down (sacct: {accounting.stderr.strip()[:200]!r}); submitit needs it; {start}")
    return None


def submitit_logs(sweep_dir: Path, chars: int = 1500) -> str:
    logs = sorted(sweep_dir.glob(".submitit/**/*_log.*"))
    return "\n".join(f"--- {log.relative_to(sweep_dir)}\n{log.read_text(errors='replace')[-chars:]}" for log in logs)
