"""The prepared GPU check plans on any machine and, without CUDA, refuses before running anything."""
from __future__ import annotations

import pytest
import torch

from bench.gpu_check import STEPS, main


def test_dry_run_lists_every_step_within_ten_minutes(capsys):
    assert main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines()] == ["gpu_tests", "smollm2_full_model"]
    assert "-m gpu tests/test_gpu.py" in out and "model.trainable_layers=null" in out and "hardware=gpu" in out
    assert sum(limit for _, limit, _ in STEPS) <= 600 - 60  # a minute of start-up left in the 10


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_without_cuda_it_runs_nothing(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "gpu")]) == 2
    assert "no CUDA device here: nothing run" in capsys.readouterr().err
    assert not (tmp_path / "gpu").exists()


def test_a_step_that_overruns_is_stopped_and_keeps_its_output(tmp_path):
    import sys

    from bench.gpu_check import run_step

    slow = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"]
    result = run_step("slow", 2, slow, tmp_path)
    assert result["rc"] == 124 and result["wall_s"] < 30
    log = (tmp_path / "slow.log").read_text()
    assert log.startswith("started\n") and log.endswith("[gpu_check] stopped after 2 s")  # text, not b'...'
    assert result["tail"] == log
    quick = run_step("quick", 30, [sys.executable, "-c", "print('done')"], tmp_path)
    assert quick["rc"] == 0 and (tmp_path / "quick.log").read_text() == "done\n"
