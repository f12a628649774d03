"""The suite's Optuna sweeper (`hydra/sweeper=optuna`: hydra_plugins/imi_bench/optuna_sweeper.py,
bench/sweeps/tuning.py; docs/design.md §10).

Without training: the search space and the grid of studies are split as documented, the planner validates each
study's corners and names its SQLite file, a study's identity ignores what never changes a result, each trial's
sampler seed follows from the study's seed and the trial number alone, and multirun.sh's progress reader reads a
study Optuna itself wrote. End to end (slow, run by CI): `python -m bench.train -m experiment=tune_dpo
budget=fast ...` runs 2 trials through the joblib launcher, the same command with n_trials=3 runs exactly one
more, every record is tagged with its study and trial and the SQLite study holds the records' validation
scores; a second study with the same sampler seed asks the same β sequence (TPE's model-based phase included);
an interrupted trial is launched again with its own β. On SLURM (marked slurm): 2 trials in one array job.
"""
from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from bench import records
from bench.methods import method_info
from bench.sweeps import tuning
from bench.sweeps.planning import expand_sweep, hydra_context, plan
from bench.sweeps.progress import Plan, Trial, final_lines, progress_line, run_status
from helpers import CONF_DIR, MULTIRUN, run_command, sweep_records
from hydra_plugins.imi_bench.optuna_sweeper import launcher_parallelism

optuna.logging.set_verbosity(optuna.logging.WARNING)

PARSER = OverridesParser.create()
TUNE_PRESETS = ("tune_dpo", "tune_ipo", "tune_simpo")


def split(*overrides: str):
    return tuning.split_sweep(PARSER.parse_overrides(list(overrides)))


# --- the search space and the grid ---------------------------------------------------------------------------

def test_search_space_and_grid_split_as_documented():
    grid, space = split("method.beta=tag(log, interval(0.003, 10))", "method.gamma_beta_ratio=interval(0, 1)",
                        "train.layout=choice(packed,padded)", "seed=0,1,2", "dataset=range(0,2)", "budget=fast")
    assert space == {"method.beta": {"kind": "float", "low": 0.003, "high": 10.0, "log": True},
                     "method.gamma_beta_ratio": {"kind": "float", "low": 0.0, "high": 1.0, "log": False},
                     "train.layout": {"kind": "categorical", "choices": ["packed", "padded"]}}
    # plain lists and range() are the grid (one study per combination), fixed values ride along
    assert [o.input_line for o in grid] == ["seed=0,1,2", "dataset=range(0,2)", "budget=fast"]
    # a later override of a key replaces an earlier one, as in the basic sweeper
    _, space = split("method.beta=interval(0.1, 1)", "method.beta=tag(log, interval(0.01, 1))")
    assert space["method.beta"]["log"] and space["method.beta"]["low"] == 0.01
    grid, _ = split("seed=0,1,2,3,4", "seed=3", "method.beta=interval(0.1, 1)")
    assert [o.input_line for o in grid] == ["seed=3"]


@pytest.mark.parametrize("overrides, message", [
    (["seed=interval(0, 4)"], "seed cannot be searched"),
    (["dataset=choice(sentiment,arithmetic)"], "dataset cannot be searched"),
    (["method.beta=0.1,1.0"], "no search space"),
    (["method.beta=tag(log, interval(0, 1))"], r"method\.beta: tag\(log, interval\(0\.0, 1\.0\)\) needs low > 0"),
    (["method.beta=interval(1, 0.5)"], r"method\.beta: interval\(1\.0, 0\.5\) must have .* low < high"),
    (["method.beta=tag(grid, interval(0.1, 1))"], r"method\.beta: unknown tag"),
    (["method.beta=choice(0.1,0.1)"], "distinct values"),
])
def test_a_bad_search_space_is_refused_naming_the_key(overrides, message):
    with pytest.raises(tuning.StudyError, match=message):
        split(*overrides)


def test_corners_are_every_combination_of_the_extremes_and_round_trip_floats():
    _, space = split("method.beta=tag(log, interval(1.0, 20.0))", "method.gamma_beta_ratio=interval(0.0, 1.0)")
    assert tuning.corners(space) == [
        ["method.beta=1.0", "method.gamma_beta_ratio=0.0"], ["method.beta=1.0", "method.gamma_beta_ratio=1.0"],
        ["method.beta=20.0", "method.gamma_beta_ratio=0.0"], ["method.beta=20.0", "method.gamma_beta_ratio=1.0"]]
    beta = 0.012345678901234567
    assert PARSER.parse_override(tuning.value_override("method.beta", beta)).value() == beta


@pytest.mark.parametrize("preset", TUNE_PRESETS)
def test_each_tune_preset_searches_its_method_s_swept_keys_on_the_validation_score(preset):
    from hydra import compose

    with hydra_context() as parser:
        expansion = expand_sweep(parser, [f"experiment={preset}"])
        cfg = compose(config_name="config", overrides=[f"experiment={preset}", "seed=3"], return_hydra_config=True)
    settings = tuning.Settings.from_node(OmegaConf.to_container(cfg.hydra.sweeper, resolve=True))
    method = cfg.method.name
    assert sorted(expansion.space) == sorted(f"method.{key}" for key in method_info(method)["swept"])
    assert expansion.space["method.beta"]["log"], "TPE over log β"
    assert settings.objective == "val/gold_reward" and settings.direction == "maximize"
    assert settings.sampler["_target_"] == "optuna.samplers.TPESampler" and settings.sampler["seed"] == 3
    # five replicate studies, one per seed; the planned jobs are each study's corners
    assert expansion.studies == [[f"seed={s}", f"experiment={preset}"] for s in range(5)]
    assert len(expansion.jobs) == 5 * len(tuning.corners(expansion.space))


# --- settings, seeds, identity -------------------------------------------------------------------------------

def sweeper_node(**changes) -> dict:
    node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "hydra" / "sweeper" / "optuna.yaml"))
    node["sampler"]["seed"], node["objective"] = 0, "val/gold_reward"  # what ${seed} and ${objective} resolve to
    for key, value in changes.items():
        node[key] = value
    return node


@pytest.mark.parametrize("changes, message", [
    ({"n_trials": 0}, r"hydra\.sweeper\.n_trials must be an integer >= 1"),
    ({"objective": "gold_reward"}, r"hydra\.sweeper\.objective must name a validation metric"),
    ({"direction": "up"}, r"hydra\.sweeper\.direction"),
    ({"sampler": {"_target_": "random.Random"}}, r"hydra\.sweeper\.sampler\._target_"),
    ({"study_name": "a/b"}, r"hydra\.sweeper\.study_name"),
    ({"n_trails": 5}, r"hydra\.sweeper has no key\(s\) n_trails"),
    ({"batch_size": 0}, r"hydra\.sweeper\.batch_size"),
])
def test_bad_sweeper_settings_are_refused_naming_the_key(changes, message):
    with pytest.raises(tuning.StudyError, match=message):
        tuning.Settings.from_node(sweeper_node(**changes))


def test_max_failed_trials_defaults_to_n_trials():
    assert tuning.Settings.from_node(sweeper_node(n_trials=7)).max_failed_trials == 7


def first_beta(sampler) -> float:
    study = optuna.create_study(sampler=sampler, direction="maximize")
    return study.ask({"b": optuna.distributions.FloatDistribution(0.003, 10.0, log=True)}).params["b"]


@pytest.mark.filterwarnings("ignore:QMCSampler is experimental")  # Optuna's label; the behaviour checked is the seed
def test_each_trial_s_sampler_seed_follows_from_the_study_seed_and_trial_number_alone():
    sampler = tuning.Settings.from_node(sweeper_node()).sampler
    assert tuning.trial_seed(0, 5) == tuning.trial_seed(0, 5)
    assert len({tuning.trial_seed(s, n) for s in range(3) for n in range(20)}) == 60
    # the same study seed and trial number ask the same value; another trial or study seed another one
    assert first_beta(tuning.make_sampler(sampler, 4)) == first_beta(tuning.make_sampler(sampler, 4))
    assert first_beta(tuning.make_sampler(sampler, 4)) != first_beta(tuning.make_sampler(sampler, 5))
    assert first_beta(tuning.make_sampler({**sampler, "seed": 1}, 4)) != first_beta(tuning.make_sampler(sampler, 4))
    made = tuning.make_sampler(sampler, 4)
    assert isinstance(made, optuna.samplers.TPESampler) and made._n_startup_trials == 10
    # QMC keeps one seed: its scrambled sequence is one sequence, whose place the study stores
    qmc = {"_target_": "optuna.samplers.QMCSampler", "seed": 7}
    assert tuning.make_sampler(qmc, 0)._seed == tuning.make_sampler(qmc, 9)._seed == 7


def trial_config(beta: float = 0.1, **changes) -> dict:
    from helpers import task_config

    cfg = OmegaConf.to_container(task_config("experiment=tune_dpo", "seed=0", f"method.beta={beta}"), resolve=True)
    for key, value in changes.items():
        node, *path = cfg, *key.split(".")
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return cfg


def test_a_study_s_identity_covers_what_its_values_depend_on_and_nothing_else():
    _, space = split("method.beta=tag(log, interval(0.003, 10.0))")
    settings = tuning.Settings.from_node(sweeper_node())
    base = tuning.study_plan(trial_config(), space, settings)
    assert base.name == f"dpo-sentiment-s0-{base.identity[:8]}" and len(base.identity) == 16
    assert base.db == Path("/nonexistent/runs/local/studies") / f"{base.name}.db"
    same = [tuning.study_plan(trial_config(beta=3.0), space, settings),  # the searched key's value
            tuning.study_plan(trial_config(progress=True, sweep_id="elsewhere"), space, settings),
            tuning.study_plan(trial_config(), space, tuning.Settings.from_node(sweeper_node(n_trials=50, batch_size=4)))]
    assert {s.identity for s in same} == {base.identity}
    other = [tuning.study_plan(trial_config(seed=1), space, settings),
             tuning.study_plan(trial_config(**{"train.lr": 5e-4}), space, settings),
             tuning.study_plan(trial_config(), split("method.beta=tag(log, interval(0.01, 10.0))")[1], settings),
             tuning.study_plan(trial_config(), space, tuning.Settings.from_node(
                 sweeper_node(sampler={**settings.sampler, "seed": 1}))),
             tuning.study_plan(trial_config(), space, tuning.Settings.from_node(sweeper_node(objective="val/win_rate")))]
    assert len({s.identity for s in other} | {base.identity}) == 6
    named = tuning.study_plan(trial_config(), space, tuning.Settings.from_node(sweeper_node(study_name="mine")))
    assert named.name == "mine" and named.identity == base.identity


# --- the planner and the progress counts ---------------------------------------------------------------------

def test_the_planner_validates_each_study_s_corners_and_plans_its_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IMI_BENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IMI_BENCH_SWEEP_ID", "tune")
    echoed = []
    planned = plan(["experiment=tune_simpo dataset=sentiment,arithmetic seed=0,1 hydra.sweeper.n_trials=4"],
                   echo=echoed.append)
    assert planned.runs == [] and planned.sweep_dir == tmp_path / "runs" / "tune"
    assert len(planned.studies) == 4 and {s.n_trials for s in planned.studies} == {4}
    assert sorted(s.name.rsplit("-", 1)[0] for s in planned.studies) == [
        "simpo-arithmetic-s0", "simpo-arithmetic-s1", "simpo-sentiment-s0", "simpo-sentiment-s1"]
    assert all(s.db == tmp_path / "runs" / "tune" / "studies" / f"{s.name}.db" for s in planned.studies)
    assert "4 Optuna studies, 16 trials (each study's corners validated: 16 configs)" in echoed[0]
    path = tmp_path / "plan.tsv"
    planned.write(path)
    assert Plan.read(path) == planned and planned.size() == 16
    assert planned.describe() == ("4 Optuna studies of 16 trials in 1 sweep(s), each trial's values chosen as "
                                  "its study goes")
    assert not (tmp_path / "runs").exists(), "planning writes nothing"
    # a value at a corner of the search space that the method refuses fails the plan before any compute
    from bench.sweeps.planning import PlanError
    with pytest.raises(PlanError, match=r"gamma_beta_ratio"):
        plan(["experiment=tune_simpo method.gamma_beta_ratio=interval(-1.0, 1.0)"], echo=lambda line: None)
    with pytest.raises(PlanError, match=r"cannot be searched"):
        plan(["experiment=tune_dpo seed=choice(0,1)"], echo=lambda line: None)


def test_progress_reads_a_study_optuna_wrote(tmp_path):
    """read_trials reads Optuna's own SQLite file (its schema, not a copy of it); the counts follow the rules of
    bench.sweeps.progress.run_status."""
    sweep = tmp_path / "runs" / "tune"
    db = sweep / "studies" / "s.db"
    db.parent.mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="s", direction="maximize")
    space = {"b": optuna.distributions.FloatDistribution(0.1, 1.0)}
    for number, outcome in enumerate(["old fail", 0.5, "fail", 0.7, "running"]):
        trial = study.ask(space)
        trial.set_user_attr(tuning.RUN_ID_ATTR, f"dpo-sentiment-s0-{number:08d}")
        if outcome in ("old fail", "fail"):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif outcome != "running":
            study.tell(trial, outcome)
        if outcome == "old fail":  # failed before this launch began
            time.sleep(0.01)
            since = time.time()
            time.sleep(0.01)
    records.write_record(sweep / "dpo-sentiment-s0-00000002", {"status": "failed", "error": "NonFiniteLossError: nan"})
    rows = tuning.read_trials(db, "s")
    assert [(r.number, r.state, r.run_id) for r in rows] == [
        (0, "FAIL", "dpo-sentiment-s0-00000000"), (1, "COMPLETE", "dpo-sentiment-s0-00000001"),
        (2, "FAIL", "dpo-sentiment-s0-00000002"), (3, "COMPLETE", "dpo-sentiment-s0-00000003"),
        (4, "RUNNING", "dpo-sentiment-s0-00000004")]
    assert rows[4].finished_at is None and rows[0].finished_at < since < rows[2].finished_at
    assert tuning.read_trials(db, "no such study") == [] and tuning.read_trials(tmp_path / "none.db", "s") == []

    from bench.sweeps.progress import PlannedStudy
    planned = Plan(sweep, [], [PlannedStudy(db, "s", 5, 1)])
    # 5 wanted: 2 completed, 1 running, 2 not asked yet; the failure of this launch counts, the earlier one not
    status, found = run_status(planned, since=since)
    assert progress_line(status) == "[multirun] 3/6 runs done: 2 completed, 1 failed"
    kinds = {(k.number, k.slot): v for k, v in status.items()}
    assert kinds == {(1, 0): "completed", (2, 0): "failed", (3, 0): "completed", (4, 0): "pending",
                     (None, 0): "pending", (None, 1): "pending"}
    assert found[Trial("s", 2, sweep / "dpo-sentiment-s0-00000002")]["error"] == "NonFiniteLossError: nan"
    lines = "\n".join(final_lines(status, found))
    assert f"failed: {sweep / 'dpo-sentiment-s0-00000002'} (s trial 2, told to Optuna as failed)" in lines
    assert "NonFiniteLossError: nan" in lines
    assert "not completed: s trial 4" in lines and lines.count("s trial not asked yet") == 2
    status, _ = run_status(planned, since=0.0)  # a launch that began before both failures counts both
    assert progress_line(status) == "[multirun] 4/7 runs done: 2 completed, 2 failed"
    with pytest.raises(tuning.StudyError, match="not an Optuna study file"):
        (tmp_path / "bad.db").write_text("not sqlite")
        tuning.read_trials(tmp_path / "bad.db", "s")


@pytest.mark.parametrize("launcher, expected", [("basic", 1), ("joblib", 2), ("slurm", 32)])
def test_batches_follow_the_launcher_s_parallelism(launcher, expected):
    from hydra import compose

    with hydra_context():
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert launcher_parallelism(cfg.hydra.launcher) == expected
    assert launcher_parallelism(OmegaConf.create({"n_jobs": -1})) >= 1


# --- end to end ------------------------------------------------------------------------------------------------

FAST = ("budget=fast", "progress=false", "eval.lm_eval.enabled=false", "seed=0")


def tune(tmp_path: Path, env: dict, *overrides: str, launcher: str = "joblib", timeout: float = 400):
    args = [sys.executable, "-m", "bench.train", "-m", "experiment=tune_dpo", f"hydra/launcher={launcher}", *FAST,
            "hydra.sweeper.sampler.n_startup_trials=2",  # trial 2 is TPE's model-based proposal, not a random one
            *overrides, f"hydra.sweep.dir={tmp_path / 'hydra' / str(time.monotonic_ns())}"]
    result = run_command(args, cwd=tmp_path, env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-5000:]
    return result.stdout


def study_trials(db: Path, name: str) -> list:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials(deepcopy=False)


@pytest.mark.slow
@pytest.mark.ci
def test_a_tpe_study_runs_resumes_and_replays_end_to_end(tmp_path, shared_cache):
    env = {"IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(shared_cache),
           "IMI_BENCH_SWEEP_ID": "tune", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    sweep = tmp_path / "runs" / "tune-fast"

    # 2 trials through the joblib launcher: one batch of its 2 parallel jobs
    out = tune(tmp_path, env, "hydra.sweeper.n_trials=2")
    assert "Joblib.Parallel(n_jobs=2" in out and "2 trials in batches of 2" in out
    (db,) = sorted((sweep / "studies").glob("*.db"))
    name = db.stem
    assert name.startswith("dpo-sentiment-s0-")
    first = sweep_records(sweep)
    assert sorted(r["config"]["tuning"]["trial"] for r in first.values()) == [0, 1]
    mtimes = {run_id: (sweep / run_id / records.RECORD_FILE).stat().st_mtime_ns for run_id in first}

    # the same command with n_trials=3 resumes the study: exactly one more trial, trial 2
    out = tune(tmp_path, env, "hydra.sweeper.n_trials=3")
    assert f"trial 2 of study {name}: method.beta=" in out and "trial 3 " not in out and "trial 0 " not in out
    found = sweep_records(sweep)
    assert len(found) == 3 and all(r["status"] == "completed" for r in found.values())
    assert all((sweep / run_id / records.RECORD_FILE).stat().st_mtime_ns == t for run_id, t in mtimes.items())

    # the study: 3 complete trials whose values are the records' validation scores, tagged both ways
    trials = study_trials(db, name)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for trial in trials:
        record = found[trial.user_attrs[tuning.RUN_ID_ATTR]]
        assert record["config"]["tuning"] == {"study": name, "trial": trial.number}
        assert trial.value == record["metrics"]["val/gold_reward"]  # the validation score, not the test score
        assert trial.params["method.beta"] == record["config"]["method"]["beta"]
        # the tag is no part of the run's identity: the same configuration is the same run whichever study asks
        untagged = {k: v for k, v in record["config"].items() if k != "tuning"}
        assert records.run_identity(untagged) == (record["run_id"], record["config_hash"])
    assert len({t.params["method.beta"] for t in trials}) == 3

    # another study with the same sampler seed asks the same β sequence (its runs are the first study's: skipped)
    out = tune(tmp_path, env, "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=replay", launcher="basic")
    assert "3 trials in batches of 1" in out and out.count("[imi-bench] skipped") == 3, out[-3000:]
    replay = study_trials(sweep / "studies" / "replay.db", "replay")
    assert [t.params for t in replay] == [t.params for t in trials]
    assert [t.value for t in replay] == [t.value for t in trials]
    assert len(sweep_records(sweep)) == 3

    # a trial an interrupted launch left running is launched again with its own β and number, not asked anew
    study = optuna.load_study(study_name="replay", storage=f"sqlite:///{sweep / 'studies' / 'replay.db'}")
    left = study.ask({"method.beta": optuna.distributions.FloatDistribution(0.003, 10.0, log=True)})
    out = tune(tmp_path, env, "hydra.sweeper.n_trials=4", "hydra.sweeper.study_name=replay", launcher="basic")
    assert f"trial 3 of study replay: method.beta={left.params['method.beta']:.4g}" in out and "trial 4 " not in out
    after = study_trials(sweep / "studies" / "replay.db", "replay")
    assert [t.state for t in after] == [optuna.trial.TrialState.COMPLETE] * 4
    record = sweep_records(sweep)[after[3].user_attrs[tuning.RUN_ID_ATTR]]
    assert record["config"]["tuning"] == {"study": "replay", "trial": 3}
    assert record["config"]["method"]["beta"] == left.params["method.beta"]
    assert after[3].value == record["metrics"]["val/gold_reward"]


@pytest.mark.slow
@pytest.mark.ci
def test_a_failed_trial_is_told_as_failed_and_a_repeating_failure_stops_the_study(tmp_path, shared_cache):
    """lr 1e12 makes every run's loss non-finite: each trial's record is failed (the entry point returns NaN), the
    study holds FAIL trials (no score), and a launch stops once more than max_failed_trials have failed."""
    env = {"IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(shared_cache),
           "IMI_BENCH_SWEEP_ID": "failing", "WANDB_MODE": "offline"}
    args = [sys.executable, "-m", "bench.train", "-m", "experiment=tune_dpo", "hydra/launcher=basic", *FAST,
            "train.lr=1e12", "train.max_steps=5", "hydra.sweeper.n_trials=1", "hydra.sweeper.max_failed_trials=1",
            f"hydra.sweep.dir={tmp_path / 'hydra'}"]
    result = run_command(args, cwd=tmp_path, env=env, timeout=300)
    out = result.stdout
    assert result.returncode == 1, out[-4000:]
    assert "2 trials failed in this launch (hydra.sweeper.max_failed_trials=1)" in out
    assert "Traceback" not in out, "a study that cannot go on ends with its message alone"
    (db,) = (tmp_path / "runs" / "failing-fast" / "studies").glob("*.db")
    trials = study_trials(db, db.stem)
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2 and all(t.value is None for t in trials)
    found = sweep_records(tmp_path / "runs" / "failing-fast")
    assert sorted(r["config"]["tuning"]["trial"] for r in found.values()) == [0, 1]
    assert all(r["status"] == "failed" and "NonFiniteLossError" in r["error"] for r in found.values())


@pytest.mark.slow
def test_multirun_runs_a_tune_preset_and_counts_its_trials(tmp_path, shared_cache):
    """`./multirun.sh tune_dpo` in fast mode, one study of 2 trials: planned, counted from the study, reported."""
    env = {"IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(shared_cache), "WANDB_MODE": "offline",
           "MULTIRUN_PROGRESS_EVERY": "2"}
    result = run_command([str(MULTIRUN), "tune_dpo", *FAST, "dataset=sentiment", "hydra.sweeper.n_trials=2"],
                         cwd=tmp_path, env=env, timeout=600)
    out = result.stdout
    assert result.returncode == 0, out[-5000:]
    assert "1 Optuna studies of 2 trials in 1 sweep(s)" in out and "0/2 runs already done" in out
    assert "[multirun] 2/2 runs done: 2 completed, 0 failed" in out and "all 2 runs completed" in out
    assert re.search(r"^\[imi-bench\] trial 1 of study dpo-sentiment-s0-\w+: val/gold_reward=", out, re.M)
    assert (tmp_path / "runs" / "tune_dpo-fast" / "report" / "report.md").exists(), out[-3000:]


@pytest.mark.slurm
def test_a_study_s_trials_run_as_one_slurm_array(cluster_env, tmp_path, shared_cache):
    env = {**cluster_env, "IMI_BENCH_RUNS": str(tmp_path / "runs"), "IMI_BENCH_CACHE": str(shared_cache),
           "IMI_BENCH_SWEEP_ID": "slurm-tune", "WANDB_MODE": "disabled"}
    out = tune(tmp_path, env, "hydra.sweeper.n_trials=2", launcher="slurm", timeout=300)
    assert "2 trials in batches of 32" in out and "#1 : " in out, out[-3000:]
    sweep = tmp_path / "runs" / "slurm-tune-fast"
    (db,) = (sweep / "studies").glob("*.db")
    trials = study_trials(db, db.stem)
    found = sweep_records(sweep)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert sorted(r["config"]["tuning"]["trial"] for r in found.values()) == [0, 1]
    assert all(math.isfinite(t.value) and t.value == found[t.user_attrs["run_id"]]["metrics"]["val/gold_reward"]
               for t in trials)
