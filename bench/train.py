"""Hydra entry point: `python -m bench.train method=dpo method.beta=0.1` (or `imi-bench-train ...`).

Thin by design: compose the config, run it (bench.pipeline), report where the record is, and return
the objective metric to Hydra's sweepers. In a multirun a failed job writes a failed record and
returns NaN so the other jobs go on; a single run exits non-zero.

A user's mistake (a config error, a missing file or model; see bench.preflight, whose Hydra callback
checks a single run before Hydra writes anything) ends with its message alone and exit status 2; the
traceback comes too with IMI_BENCH_DEBUG=1 or HYDRA_FULL_ERROR=1.
"""
from __future__ import annotations

import math
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bench import conf_dir, preflight
from bench.config import ConfigError
from bench.run_summary import print_summary

# conf/hydra/launcher/joblib.yaml shares the plugin's name on purpose (see that file); Hydra's deprecation
# warning about it would stand between a user and the one line that says what went wrong.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")


# An absolute path: conf/ in a checkout, or the copy a wheel installs as bench/conf (bench.conf_dir).
@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float:
    # The training code (torch, transformers' models) is imported by the job that runs, not at the top: a
    # sweep's driver process, which only launches jobs, never pays for it (nor torch: bench.config imports its
    # torch-backed checkers when it validates, which a single run's pre-flight does and a driver does not).
    from bench.models import quiet_transformers
    from bench.pipeline import run

    quiet_transformers()
    hydra_cfg = HydraConfig.get()
    try:
        result = run(cfg, overrides=list(hydra_cfg.overrides.task))
    except ConfigError as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # this job fails, as any job would; its message comes first
            print(f"[imi-bench] error: {err}", flush=True)
            raise
        preflight.refuse(err)
    print_summary(result, objective=cfg.objective)
    if result.record["status"] != "completed":
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise SystemExit(1)
        return math.nan
    return float(result.record["metrics"].get(cfg.objective, math.nan))


def cli() -> None:
    """The console entry (`imi-bench-train`, `python -m bench.train`). Hydra ends its own composition
    errors (an unknown group option, a malformed override) with status 1 before any callback runs;
    they are a user's mistake like ours, so they end with status 2."""
    try:
        main()
    except SystemExit as stop:
        if stop.code == 1 and not preflight.composed():
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":
    cli()
