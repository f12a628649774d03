"""Checkpoint and resume (bench/checkpoint.py, docs/design.md §12), in process on CPU.

A run interrupted by a signal mid-training saves its state at the next step boundary and exits; run
again, it resumes from there and ends with the same metrics, history and validation curve as an
uninterrupted run, bit for bit, with the resumes counted in its record and the checkpoint removed.
Variants: SIGTERM, SIGUSR1, submitit's USR2 with submitit's own handler in place (it requeues and
exits), two interruptions in one run, an interruption in the last step (only evaluation is redone),
gradient accumulation, and methods with state of their own (β-DPO's running statistics and its draws
from the global RNG) or an extra policy pass (rmipo). The SLURM side (a job preempted, timed out or
cancelled) is in tests/test_slurm_faults.py, killed processes in tests/test_kill.py.
"""
from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

from bench import records
from bench.checkpoint import FILE, RunCheckpoint
from bench.pipeline import run

FAST_RESUME = ("train.max_steps=12", "checkpoint.every_steps=5", "eval.curve.fractions=[0.25,0.5,1.0]")
TIMING_KEYS = {"train_tokens_per_s", "device_hours", "train_s"}  # wall-clock, never equal between two runs


def _same(a, b) -> bool:
    """Equal as JSON values, NaN equal to NaN, floats compared exactly."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def _interrupt_at(monkeypatch, steps: dict[int, int]):
    """Deliver signal `steps[k]` to this process while optimizer step k is being computed (mid-step)."""
    import bench.trainer

    original = bench.trainer.PreferenceTrainer._pair_logps

    def pair_logps(self, index, step):
        if step in steps and self.micro_batches_at_signal != self.micro_batches:
            self.micro_batches_at_signal = self.micro_batches
            os.kill(os.getpid(), steps[step])
        return original(self, index, step)

    monkeypatch.setattr(bench.trainer.PreferenceTrainer, "micro_batches_at_signal", -1, raising=False)
    monkeypatch.setattr(bench.trainer.PreferenceTrainer, "_pair_logps", pair_logps)


def _assert_resumed_equal(reference: dict, resumed: dict, resumed_at: list[int], directory) -> None:
    assert resumed["status"] == reference["status"] == "completed", resumed["error"]
    assert _same(resumed["metrics"], reference["metrics"]), "metrics differ from the uninterrupted run"
    assert _same(_without_timing(records.read_history(directory)), _without_timing(reference["_history"]))
    assert _same(_without_timing(resumed["val_curve"]), _without_timing(reference["val_curve"]))
    for key in ("train_tokens", "nograd_tokens", "flops"):
        assert resumed["cost"][key] == reference["cost"][key], key
    assert resumed["provenance"]["resumes"] == len(resumed_at)
    assert resumed["provenance"]["resumed_at_steps"] == resumed_at
    assert resumed["provenance"]["started_at"] <= resumed["provenance"]["finished_at"]
    assert not (directory / "checkpoint").exists(), "the checkpoint outlived the record"


def _reference(make_config, *overrides) -> dict:
    result = run(make_config(*overrides, "sweep_id=uninterrupted"))
    record = dict(result.record)
    record["_history"] = records.read_history(result.directory)
    assert record["provenance"]["resumes"] == 0 and record["provenance"]["resumed_at_steps"] == []
    assert not (result.directory / "checkpoint").exists()
    return record


def _interrupted_then_resumed(make_config, monkeypatch, overrides, signals: list[dict[int, int]]):
    """Run until each interruption in turn (each a {step: signal}), then to the end; the final record."""
    cfg = make_config(*overrides, "sweep_id=interrupted")
    for at in signals:
        with monkeypatch.context() as patch:
            _interrupt_at(patch, at)
            with pytest.raises(SystemExit) as stop:
                run(cfg)
        (step, sig), = at.items()
        assert stop.value.code == 128 + sig
        result_dir = next((cfg_dir for cfg_dir in _run_dirs(cfg)), None)
        assert result_dir is not None and (result_dir / "checkpoint" / FILE).exists()
        assert not (result_dir / records.RECORD_FILE).exists(), "an interrupted run wrote a record"
    result = run(cfg)
    return result


def _run_dirs(cfg):
    sweep = records.run_dir(cfg.paths.runs_root, cfg.sweep_id, "x").parent
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.parametrize("method, extra", [("dpo", ()), ("beta_dpo", ())], ids=["dpo", "beta_dpo"])
def test_sigterm_mid_training_resumes_bit_for_bit(make_config, monkeypatch, method, extra):
    overrides = (f"method={method}", *FAST_RESUME, *extra)
    reference = _reference(make_config, *overrides)
    # SIGTERM while step 6 is computed: saved after it (7 steps done), not at the periodic step 5
    result = _interrupted_then_resumed(make_config, monkeypatch, overrides, [{6: signal.SIGTERM}])
    _assert_resumed_equal(reference, result.record, [7], result.directory)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler outlived the training"


@pytest.mark.slow
@pytest.mark.parametrize("method, extra, interruptions, resumed_at", [
    ("imi_dpo", (), [{2: signal.SIGUSR1}, {9: signal.SIGTERM}], [3, 10]),  # twice in one run
    ("rmipo", (), [{11: signal.SIGTERM}], [12]),                           # the last step: only evaluation is redone
    ("dpo", ("train.grad_accum_steps=2", "train.batch_size=4"), [{4: signal.SIGTERM}], [5]),
    ("beta_dpo", ("checkpoint.every_steps=null",), [{0: signal.SIGUSR1}], [1]),
], ids=["imi_dpo-twice", "rmipo-last-step", "dpo-grad-accum", "beta_dpo-signal-only"])
def test_more_interruptions_resume_bit_for_bit(make_config, monkeypatch, method, extra, interruptions, resumed_at):
    overrides = (f"method={method}", *FAST_RESUME, *extra)
    reference = _reference(make_config, *overrides)
    result = _interrupted_then_resumed(make_config, monkeypatch, overrides, interruptions)
    _assert_resumed_equal(reference, result.record, resumed_at, result.directory)


def test_submitit_handler_runs_after_the_checkpoint(make_config, monkeypatch):
    """Under submitit, USR2 means "checkpoint and requeue": its handler (here a stand-in that records the
    call and exits as submitit does) must run, and only after the checkpoint is on disk."""
    calls = []

    def submitit_handler(signum, frame):
        cfg_dirs = _run_dirs(cfg)
        calls.append((signum, [(d / "checkpoint" / FILE).exists() for d in cfg_dirs]))
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        cfg = make_config(*FAST_RESUME, "sweep_id=submitit")
        with monkeypatch.context() as patch:
            _interrupt_at(patch, {3: signal.SIGUSR2})
            with pytest.raises(SystemExit):
                run(cfg)
        assert calls == [(signal.SIGUSR2, [True])]
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler, "submitit's handler is back in place"
    finally:
        signal.signal(signal.SIGUSR2, previous)
    resumed = run(cfg).record
    assert resumed["status"] == "completed" and resumed["provenance"]["resumed_at_steps"] == [4]


def test_checkpoints_of_another_config_or_a_finished_run_are_not_used(make_config, monkeypatch, tmp_path):
    cfg = make_config(*FAST_RESUME, "sweep_id=stale")
    with monkeypatch.context() as patch:
        _interrupt_at(patch, {3: signal.SIGTERM})
        with pytest.raises(SystemExit):
            run(cfg)
    (directory,) = _run_dirs(cfg)
    checkpoint = RunCheckpoint(directory)
    state = torch.load(checkpoint.path, weights_only=False)
    assert state["step"] == 4 and state["micro_batches"] == 4
    assert checkpoint.load("another-config-hash") is None  # a different config never resumes from it
    state["config_hash"] = "another-config-hash"
    checkpoint.save({k: v for k, v in state.items() if k != "format_version"})
    fresh = run(cfg)
    assert fresh.record["provenance"]["resumes"] == 0  # started over
    # A checkpoint left beside a completed record (killed between the two) is removed by the re-launch.
    (directory / "checkpoint").mkdir()
    (directory / "checkpoint" / FILE).write_bytes(b"left behind")
    again = run(cfg)
    assert again.skipped and not (directory / "checkpoint").exists()


def test_checkpoint_file_is_written_atomically(tmp_path, monkeypatch):
    checkpoint = RunCheckpoint(tmp_path)
    checkpoint.save({"config_hash": "h", "step": 1})
    assert checkpoint.load("h")["step"] == 1

    def failing_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"config_hash": "h", "step": 2})
    monkeypatch.undo()
    assert checkpoint.load("h")["step"] == 1, "the previous checkpoint survives a write cut short"
    assert sorted(p.name for p in checkpoint.directory.iterdir()) == [FILE], "no temp file left"
    assert json.dumps(checkpoint.load("h")["step"]) == "1"
