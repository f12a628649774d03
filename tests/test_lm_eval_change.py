"""lm-eval's change after training (analysis/lm_eval_change.py) against brute force on a small frame."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.entries import build_entries
from analysis.grid import annotate
from analysis.lm_eval_change import lm_eval_change, lm_eval_columns
from analysis.selection import seed_bootstrap
from analysis.stats import seed_interval

ACC = "lm_eval/imibench_constraints/acc"


def _runs() -> pd.DataFrame:
    reference = [0.40, 0.45, 0.42, 0.38]  # per seed: the items differ by seed, so does the reference's score
    rows = []
    for beta, gain, gold in ((0.1, [0.05, 0.06, 0.04, 0.07], 0.3), (1.0, [0.0, 0.01, -0.01, 0.0], 0.1)):
        for seed in range(4):
            rows.append({"dataset.name": "constraints", "model.name": "smollm2", "hardware.name": "cpu",
                         "method.name": "dpo", "method.beta": beta, "method_info.imi": False, "seed": seed,
                         "gold_reward": gold + 0.01 * seed, "val/gold_reward": gold,
                         ACC: reference[seed] + gain[seed], f"reference_{ACC}": reference[seed],
                         f"{ACC}_stderr": 0.03, f"reference_{ACC}_stderr": 0.03})
    return annotate(pd.DataFrame(rows), ["dataset.name", "model.name", "hardware.name", "method.name", "method.beta"])


def test_the_change_of_each_entry_matches_brute_force():
    runs = _runs()
    assert lm_eval_columns(runs) == [ACC]  # stderr columns are not scores
    boot = seed_bootstrap(runs, n_boot=300, seed=2)
    entries = build_entries(runs, boot, "gold_reward", "mean")
    table = lm_eval_change(runs, boot, entries, 0.95)
    tuned = table[table["entry"] == next(e.name for e in entries if e.kind == "tuned")].iloc[0]
    gains = np.array([0.05, 0.06, 0.04, 0.07])  # the tuned entry chose β = 0.1 (best validation gold)
    assert tuned["delta"] == pytest.approx(gains.mean())
    assert tuned["reference"] == pytest.approx(np.mean([0.40, 0.45, 0.42, 0.38]))
    counts = boot.counts["constraints"]
    low, high = seed_interval(gains.mean(), counts @ gains / counts.sum(axis=1), 4, 0.95)
    assert (tuned["delta_ci_low"], tuned["delta_ci_high"]) == pytest.approx((float(low), float(high)))
    assert tuned["moved"] == "up" and tuned["score"] == "imibench_constraints/acc"
    assert tuned["spread"] == pytest.approx(float(runs[ACC].std(ddof=1)))


def test_no_lm_eval_no_rows():
    runs = _runs().drop(columns=[c for c in _runs().columns if "lm_eval" in c])
    boot = seed_bootstrap(runs, n_boot=50)
    assert lm_eval_change(runs, boot, build_entries(runs, boot, "gold_reward", "mean"), 0.95).empty
