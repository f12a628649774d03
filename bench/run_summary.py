"""What a run prints when it ends: where its record is and its headline numbers."""
from __future__ import annotations

HEADLINE = ("gold_reward", "reference_gold_reward", "win_rate", "kl", "no_eos_rate", "pref_acc", "length")


def print_summary(result, objective: str) -> None:
    record = result.record
    if result.skipped:
        print(f"[imi-bench] skipped {record['run_id']}: a completed run with the same config is at {result.directory}")
        return
    metrics, cost = record["metrics"], record["cost"]
    print(f"[imi-bench] {record['status']}: {record['run_id']}  ->  {result.directory / 'record.json'}")
    if record["status"] != "completed":
        print(f"[imi-bench] error: {record['error'].splitlines()[0]}")
        return
    shown = [k for k in (objective, *HEADLINE) if k in metrics]
    print("[imi-bench] " + "  ".join(f"{k}={metrics[k]:.4g}" for k in dict.fromkeys(shown)))
    print(f"[imi-bench] cost: {cost['total_s']:.1f}s wall (train {cost['train_s']:.1f}s), "
          f"{cost['flops']:.3g} FLOPs, {cost['train_tokens']} trained tokens")
