"""Hydra entry point: `python -m bench.train method=dpo method.beta=0.1` (or `imi-bench-train ...`).

Thin by design: compose the config, run it (bench.pipeline), report where the record is, and return
the objective metric to Hydra's sweepers. In a multirun a failed job writes a failed record and
returns NaN so the other jobs go on; a single run exits non-zero.
"""
from __future__ import annotations

import math

import hydra
import transformers
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.pipeline import run
from bench.report import print_summary

# Our own progress bars say what is happening; transformers' per-load bars and notices only add noise.
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    result = run(cfg, overrides=list(hydra_cfg.overrides.task))
    print_summary(result, objective=cfg.objective)
    if result.record["status"] != "completed":
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise SystemExit(1)
        return math.nan
    return float(result.record["metrics"].get(cfg.objective, math.nan))


if __name__ == "__main__":
    main()
