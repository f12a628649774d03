"""From timed runs to the numbers reported: spreads over repeats, ratios within a repeat, verdicts.

Pure functions over the run dicts that bench.benchmark.runners returns (tested on hand-computed
numbers in tests/test_benchmark.py). Every ratio is taken within one repeat, where the two variants
ran back to back, and reported as the median and spread over repeats: these machines are shared.
"""
from __future__ import annotations

import operator
import statistics

from bench.benchmark.variants import RATIOS, VARIANTS, claims_for


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[dict], threads: list[int], variants: list[str], loss_only: dict | None = None,
              peaks: dict | None = None, workload: str = "builtin") -> dict:
    """Per thread count: each variant's throughput over repeats, each ratio measured within a repeat
    and judged against its claim on `workload` (variants.claims_for), (given `loss_only`, threads ->
    loss_costs) what a variant's own loss work adds per step over its base's, and (given `peaks`,
    threads -> peak.matmul_gflops, and runs carrying "model_gflops") each variant's model FLOP/s as a
    fraction of the measured matmul peak."""
    claims = claims_for(workload)
    summary = {}
    for n_threads in threads:
        by_repeat: dict[int, dict[str, dict]] = {}
        for run in runs:
            if run["threads"] == n_threads:
                by_repeat.setdefault(run["repeat"], {})[run["variant"]] = run
        per_variant = {
            name: {key: spread([r[name][key] for r in by_repeat.values()])
                   for key in ("tokens_per_s", "seconds_per_step", "tokens_per_cpu_s", "median_step_tokens_per_s",
                               "padding_share")}
            for name in variants
        }
        peak = (peaks or {}).get(str(n_threads))
        if peak is not None:
            for name in variants:
                achieved = [r[name]["model_gflops"] for r in by_repeat.values()]
                per_variant[name]["model_gflops"] = spread(achieved)
                per_variant[name]["peak_fraction"] = spread([g / peak["peak_gflops"] for g in achieved])
        ratios = {}
        for ratio, top, bottom, quantity, _ in RATIOS:
            if top not in variants or bottom not in variants:
                continue
            if quantity not in QUANTITIES:
                raise ValueError(f"benchmark: ratio {ratio} has an unknown quantity {quantity!r}")
            claim = claims[ratio]
            views = {
                # the claim's own measure: whole timed window, wall clock
                "wall": [_ratio(r[top], r[bottom], quantity) for r in by_repeat.values()],
                # process CPU time: less disturbed by other processes on the machine
                "cpu": [_ratio(r[top], r[bottom], quantity, cpu=True) for r in by_repeat.values()],
                # median over steps: robust to bursts of load
                "median_step": [_median_step_ratio(r[top], r[bottom], quantity) for r in by_repeat.values()],
            }
            entry = {"numerator": top, "denominator": bottom, "quantity": quantity,
                     "per_repeat": views["wall"], **{view: spread(v) for view, v in views.items()}}
            if claim is not None:
                op, threshold = claim
                holds = operator.ge if op == ">=" else operator.le
                entry["claim"] = f"{ratio} {op} {threshold}"
                entry["holds_on_median"] = holds(entry["wall"]["median"], threshold)
                entry["holds_in_every_repeat"] = all(holds(x, threshold) for x in views["wall"])
            costs = (loss_only or {}).get(str(n_threads), {})
            top_method, bottom_method = VARIANTS[top].get("method"), VARIANTS[bottom].get("method")
            if (quantity == "seconds_per_step" and top_method in costs and bottom_method in costs
                    and not VARIANTS[top].get("extra_forward")):
                # the rest of the step is the same code on the same batches, so this is the cost ratio
                # without the machine's run-to-run noise
                extra_ms = costs[top_method]["median"] - costs[bottom_method]["median"]
                step_ms = 1e3 * per_variant[bottom]["seconds_per_step"]["median"]
                entry["loss_only"] = {"numerator_ms": costs[top_method]["median"],
                                      "denominator_ms": costs[bottom_method]["median"], "extra_ms": extra_ms,
                                      "extra_share_of_step": extra_ms / step_ms,
                                      "implied_ratio": 1.0 + extra_ms / step_ms}
                if claim is not None:
                    entry["holds_by_loss_only"] = holds(entry["loss_only"]["implied_ratio"], threshold)
            ratios[ratio] = entry
        summary[f"threads={n_threads}"] = {"variants": per_variant, "ratios": ratios,
                                           "loss_only_ms": (loss_only or {}).get(str(n_threads), {}),
                                           **({"matmul_peak": peak} if peak is not None else {})}
    return summary


QUANTITIES = ("tokens_per_s", "seconds_per_step", "steps_per_s")


def _ratio(top: dict, bottom: dict, quantity: str, cpu: bool = False) -> float:
    if quantity == "tokens_per_s":
        key = "tokens_per_cpu_s" if cpu else "tokens_per_s"
        return top[key] / bottom[key]
    key = "cpu_seconds" if cpu else "seconds"
    cost = (top[key] / top["steps_timed"]) / (bottom[key] / bottom["steps_timed"])
    return cost if quantity == "seconds_per_step" else 1.0 / cost  # steps/s: the inverse of the cost ratio


def _median_step_ratio(top: dict, bottom: dict, quantity: str) -> float:
    """tokens/s: ratio of the per-step medians. seconds/step (steps/s): median of step-by-step ratios
    (inverted), the two runs training on identical batches in the same order, so step k of one pairs with
    step k of the other."""
    if quantity == "tokens_per_s":
        return top["median_step_tokens_per_s"] / bottom["median_step_tokens_per_s"]
    if top["step_tokens"] != bottom["step_tokens"]:
        raise RuntimeError(f"benchmark: a {quantity.replace('_', ' ')} ratio needs identical batches on both sides")
    if quantity == "seconds_per_step":
        return statistics.median(a / b for a, b in zip(top["step_seconds"], bottom["step_seconds"]))
    return statistics.median(b / a for a, b in zip(top["step_seconds"], bottom["step_seconds"]))
