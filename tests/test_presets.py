"""The experiment presets (conf/experiment/) and multirun.sh's planning (bench.sweeps), without training.

Every preset composes, and so does every job of its sweep: `hydra.sweeper.params` expanded exactly as
`python -m bench.train -m` does (bench.sweeps.planning), each job composed and checked with
bench.preflight.check_run_config, the swept values found in the job's config, and no two jobs the same
run. Headers say what they claim (job counts), the grid presets keep the full budget, presets that mean
"every method" find every method, and multirun.sh lists, plans and refuses what it should. Running the
presets is tests/test_sweeps.py.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from bench import records
from bench.config import ConfigError
from bench.preflight import check_run_config
from bench.methods import available_methods, method_info
from bench.sweeps.planning import expand_sweep, hydra_context
from bench.sweeps.presets import builtin_datasets, suites, sweep_steps
from helpers import CONF_DIR, MULTIRUN, PRESETS, REAL_MODEL, preset_jobs, run_command, task_config, task_configs

# Presets that set their own budget on purpose (quick_budget.yaml and smollm2_budget.yaml say why); all
# others are citable runs at the full budget of config.yaml.
REDUCED_BUDGET = {"quick_budget", "quick_dpo", "quick_imi"} | REAL_MODEL
BUDGET_KEYS = ("sft", "train", "eval", "model")


def run_script(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120):
    return run_command([MULTIRUN, *args], cwd=cwd, env=env, timeout=timeout)


def sweeps_glob(preset: str) -> bool:
    """Whether the preset picks a group's options by glob: its job count is whatever the glob finds."""
    return "glob(" in (CONF_DIR / "experiment" / f"{preset}.yaml").read_text()


def _swept_value_in(cfg, override: str) -> None:
    key, value = override.split("=", 1)
    if key == "experiment":
        return
    if key in ("method", "dataset"):  # a config group: the option's name lands in <group>.name
        assert cfg[key].name == value, override
        return
    parsed = OverridesParser.create().parse_override(override).value()
    assert OmegaConf.select(cfg, key) == parsed, f"{override}: the job's config has {OmegaConf.select(cfg, key)!r}"


def study_preset(preset: str) -> bool:
    """Whether the preset runs Optuna studies (hydra/sweeper=optuna): their trials are picked as they go."""
    return "override /hydra/sweeper: optuna" in (CONF_DIR / "experiment" / f"{preset}.yaml").read_text()


@pytest.mark.parametrize("preset", PRESETS)
def test_header_names_the_preset_and_its_job_count(preset):
    lines = (CONF_DIR / "experiment" / f"{preset}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_", "presets set keys anywhere in the config"
    match = re.fullmatch(rf"# {preset} — (.+)", lines[1])
    assert match, f"line 2 must read '# {preset} — <one line>': multirun.sh --help shows it"
    claimed = re.search(r"\((\d+) jobs\)$", match.group(1))
    n_jobs = len(preset_jobs(preset))
    stated = re.search(r"^# Jobs: .*= (\d+)", "\n".join(lines), re.M)
    if study_preset(preset):  # its planned jobs are each study's corners: the header counts studies and trials
        counts = re.search(r"\((\d+) studies × (\d+) trials\)$", match.group(1))
        assert counts and not claimed and not stated, "line 2 of a study preset ends '(S studies × N trials)'"
        with hydra_context() as parser:
            n_studies = len(expand_sweep(parser, [f"experiment={preset}"]).studies)
        n_trials = OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml").hydra.sweeper.n_trials
        assert (int(counts.group(1)), int(counts.group(2))) == (n_studies, n_trials)
        return
    if sweeps_glob(preset):  # a count would go stale with the next method: the header says how to count
        assert not claimed and not stated and re.search(r"^# Jobs: ", "\n".join(lines), re.M), preset
        return
    if claimed:
        assert int(claimed.group(1)) == n_jobs
    assert stated or n_jobs == 1, "the header's 'Jobs: ... = N' line states the count"
    if stated:
        assert int(stated.group(1)) == n_jobs


def distinct_combinations(preset: str) -> list[list[str]]:
    """The jobs of the first swept seed: every combination of the other swept values, once. Seeds never
    make a config valid or invalid, and composing all ~380 jobs would take a minute."""
    jobs = preset_jobs(preset)
    first_seed = next((o for o in jobs[0] if o.startswith("seed=")), None)
    return [job for job in jobs if first_seed is None or first_seed in job]


# validating a real-model job finds the model's files: those presets need the smollm2 extra (skipped without)
@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.extra("smollm2")) if p in REAL_MODEL else p
                                    for p in PRESETS])
def test_every_swept_combination_of_every_preset_composes_and_validates(preset):
    jobs, combinations = preset_jobs(preset), distinct_combinations(preset)
    seeds = {o for job in jobs for o in job if o.startswith("seed=")}
    assert len(jobs) == len(combinations) * max(1, len(seeds)), "seeds are crossed with everything else"
    hashes = {}
    for job, cfg in zip(combinations, task_configs(combinations)):
        check_run_config(cfg)
        for override in job:
            _swept_value_in(cfg, override)
        digest = records.config_hash(OmegaConf.to_container(cfg, resolve=True))
        assert digest not in hashes, f"{job} is the same run as {hashes.get(digest)}"
        hashes[digest] = job


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - REDUCED_BUDGET))
def test_citable_presets_keep_the_full_budget(preset):
    base, cfg = task_config(), task_config(f"experiment={preset}")
    # A denser validation curve (dpo_dense_grid: 8 points for the tuner replays) measures more of the same
    # training; every other budget key must stay.
    base.eval.curve.fractions = cfg.eval.curve.fractions
    for key in BUDGET_KEYS:
        assert cfg[key] == base[key], f"experiment={preset} changes {key}: presets are run at the full budget"
    for key in ("n_train_prompts", "n_eval_pair_prompts", "n_val_prompts", "n_test_prompts", "n_composition_prompts"):
        assert cfg.dataset[key] == base.dataset[key], f"experiment={preset} changes dataset.{key}"
    # seeds: 3 at least, since collapse is bimodal across seeds (median and collapse rate need them)
    assert len({o for job in preset_jobs(preset) for o in job if o.startswith("seed=")}) >= 3


def test_quick_presets_share_one_budget_and_sweep_what_the_suite_promises():
    budget = task_config("experiment=quick_budget")
    assert budget.dataset.name == "sentiment" and budget.sft.steps < task_config().sft.steps
    for preset in ("quick_dpo", "quick_imi"):
        cfg = task_config(f"experiment={preset}")
        for key in (*BUDGET_KEYS, "dataset"):
            assert cfg[key] == budget[key], f"{preset}.{key} differs from quick_budget"
    methods = sorted({cfg.method.name for cfg in task_configs(preset_jobs("quick_imi"))})
    betas = sorted({cfg.method.beta for cfg in task_configs(preset_jobs("quick_dpo"))})
    assert methods == ["imi_dpo", "rmipo"] and len(betas) == 3 and 0.1 in betas


def test_compare_covers_every_method_and_the_suite_sweeps_the_same_tasks():
    jobs = task_configs(distinct_combinations("compare"))
    assert sorted({cfg.method.name for cfg in jobs}) == available_methods()
    # the tiny model's built-in tasks; a task that needs a pretrained model (constraints) has its own presets
    assert sorted({cfg.dataset.name for cfg in jobs}) == list(builtin_datasets())
    assert len(builtin_datasets()) == 5 and "constraints" not in builtin_datasets()
    # the compare suite runs the grids over the same tasks
    for step in sweep_steps("compare")[1:]:
        assert f"dataset={','.join(builtin_datasets())}" in step.split()
    # and every method runs at its own defaults: the compare runs are the default points of the grids
    for cfg in jobs:
        defaults = OmegaConf.load(CONF_DIR / "method" / f"{cfg.method.name}.yaml")
        assert cfg.method == defaults


def test_imi_defaults_runs_every_imi_method():
    methods = {o.removeprefix("method=") for job in preset_jobs("imi_defaults") for o in job if o.startswith("method=")}
    assert methods == {name for name in available_methods() if method_info(name)["imi"]}


def test_imi_presets_leave_the_imi_defaults_alone():
    # imi_defaults must run each method exactly as conf/method/<name>.yaml has it: the claim under test
    for cfg in task_configs(distinct_combinations("imi_defaults")):
        assert cfg.method == OmegaConf.load(CONF_DIR / "method" / f"{cfg.method.name}.yaml")


def test_a_bad_swept_value_fails_validation_naming_the_key():
    with pytest.raises(ConfigError, match=r"method\.beta"):
        check_run_config(task_config("experiment=dpo_beta_grid", "method.beta=-0.1"))


def test_help_lists_every_preset_and_suite_with_one_line_each(tmp_path):
    result = run_script("--help", cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stdout
    listed = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^  (\S+)\s{2,}(\S.*)$", line)
        if match:
            listed[match.group(1)] = match.group(2)
    assert set(listed) == set(PRESETS) | set(suites())
    assert all(len(text) > 20 for text in listed.values()), listed


def test_dry_run_plans_the_quick_suite_without_running_it(tmp_path):
    env = {"IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(tmp_path / "cache")}
    result = run_script("--dry-run", "budget=fast", cwd=tmp_path, env=env, timeout=180)
    assert result.returncode == 0, result.stdout
    out = result.stdout
    # smoke runs go to their own folder, apart from the real runs of the preset
    assert f"sweep id quick-fast: 10 jobs in 2 sweep(s), 10 distinct runs; records go to " \
           f"{tmp_path / 'runs' / 'quick-fast'}/<run id>/" in out
    planned = re.findall(r"^\[multirun\]   (\S+)   sweep (\d)$", out, re.M)
    assert [sweep for _, sweep in planned] == ["1"] * 6 + ["2"] * 4
    assert sorted(Path(d).name.split("-")[0] for d, _ in planned) == ["dpo"] * 6 + ["imi_dpo"] * 2 + ["rmipo"] * 2
    assert not (tmp_path / "runs").exists() and not (tmp_path / "multirun").exists(), "a dry run runs nothing"


def test_bad_config_or_preset_fails_before_any_compute(tmp_path):
    env = {"IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(tmp_path / "cache")}
    bad = run_script("dpo_beta_grid", "method.beta=0.1,-1.0", cwd=tmp_path, env=env, timeout=180)
    assert bad.returncode != 0
    assert "method.beta" in bad.stdout and "bad config" in bad.stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()

    logger = run_script("quick_imi", "logger=wandb", "logger.mode=loud", "--dry-run", cwd=tmp_path, env=env, timeout=180)
    assert logger.returncode == 2 and "logger.mode must be one of" in logger.stdout, logger.stdout

    unknown = run_script("no_such_preset", cwd=tmp_path, env=env, timeout=30)
    assert unknown.returncode == 2 and "unknown preset 'no_such_preset'" in unknown.stdout
    two = run_script("quick", "compare", cwd=tmp_path, env=env, timeout=30)
    assert two.returncode == 2 and "two presets" in two.stdout

