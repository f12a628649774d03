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
