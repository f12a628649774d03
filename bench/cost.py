"""Cost accounting for one run (docs/design.md §8). Depends on nothing else in the suite.

`CostMeter` times the phases (setup, train, eval), counts trained and no-grad tokens and turns them into FLOPs
by the estimate of Kaplan et al. 2020 (§2.1), extended to partly trainable models (`bench.models.flop_parameters`).
Time blocked on a shared cache's lock or in a queue is recorded as `wait_s` and taken out of its phase, so
`total_s` and `device_hours` count only work this run did.
"""
from __future__ import annotations

import resource
import time
from contextlib import contextmanager

import torch

PHASES = ("setup", "train", "eval")
NOGRAD_KINDS = ("reference", "marginal", "kl", "eval", "curve")  # kl: KTO's mismatched sequences
# The no-grad passes the trainer runs on the policy from a frozen trunk's states when it has one (bench.trunk)
TRUNK_KINDS = ("marginal",)


def device_description() -> tuple[str, int]:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), torch.cuda.device_count()
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)", 1


def peak_memory() -> tuple[int, str]:
    """Peak bytes: CUDA max allocated on GPU, else this process's max resident set size."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"


def model_flops(train_tokens: int, nograd_tokens: int, n_params: int, n_backprop: int | None = None,
                n_trainable: int | None = None) -> float:
    """Estimated FLOPs (docs/design.md §8): per trained token 2·N forward + 2·N_backprop backward through the blocks
    from the lowest trainable one up + 2·N_trainable for the weight gradients (6·N when everything trains,
    None meaning N), and 2·N per no-grad token; N = non-embedding parameters (bench.models.flop_parameters)."""
    backprop = n_params if n_backprop is None else n_backprop
    trainable = n_params if n_trainable is None else n_trainable
    return (2.0 * n_params + 2.0 * backprop + 2.0 * trainable) * train_tokens + 2.0 * n_params * nograd_tokens


class CostMeter:
    """Wall time per phase, tokens per kind, and the one-off costs of the shared caches a run used."""

    def __init__(self, n_params: int = 0, device_count: int = 1):
        self.n_params = n_params
        # None = the whole model trains (the 6·N case); set from bench.models.flop_parameters otherwise
        self.n_backprop: int | None = None
        self.n_trainable: int | None = None
        # non-embedding parameters of the frozen blocks below a frozen trunk (bench.trunk): their states are
        # computed once (a shared build, counted there), so the per-step policy passes skip them
        self.n_trunk = 0
        self.device_count = device_count
        self.seconds = {p: 0.0 for p in PHASES}
        self.waits = {p: 0.0 for p in PHASES}
        self.train_tokens = 0
        self.nograd_tokens = {k: 0 for k in NOGRAD_KINDS}
        self.shared: dict[str, dict] = {}

    def state_dict(self) -> dict:
        """The counters, for a checkpoint (bench.checkpoint)."""
        return {"seconds": dict(self.seconds), "waits": dict(self.waits), "train_tokens": self.train_tokens,
                "nograd_tokens": dict(self.nograd_tokens), "shared": {k: dict(v) for k, v in self.shared.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Add a checkpoint's counters to this meter's: a resumed run counts the work up to its checkpoint
        and what it does from there, its own setup included (the work between the checkpoint and the
        interruption is redone, and counted once). Shared builds keep the first attempt's entries."""
        for phase in PHASES:
            self.seconds[phase] += state["seconds"][phase]
            self.waits[phase] += state["waits"][phase]
        self.train_tokens += state["train_tokens"]
        for kind in NOGRAD_KINDS:
            self.nograd_tokens[kind] += state["nograd_tokens"].get(kind, 0)
        self.shared = {**self.shared, **state["shared"]}

    @contextmanager
    def phase(self, name: str):
        if name not in self.seconds:
            raise ValueError(f"unknown cost phase {name!r}; expected one of {PHASES}")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def add_wait(self, seconds: float, phase: str = "setup") -> None:
        """Seconds spent waiting (lock, queue) inside `phase`: excluded from that phase's compute time."""
        self.waits[phase] += float(seconds)

    def compute_seconds(self) -> dict[str, float]:
        return {p: max(0.0, s - self.waits[p]) for p, s in self.seconds.items()}

    def add_train_tokens(self, n: int) -> None:
        self.train_tokens += int(n)

    def add_nograd_tokens(self, kind: str, n: int) -> None:
        self.nograd_tokens[kind] += int(n)

    def add_shared(self, name: str, key: str, hit: bool, build_cost: dict, wait_s: float = 0.0) -> None:
        """Record a shared cache (sft, dataset, reference): whether it was hit, what building it cost, and
        how long this run waited on its lock (setup time that is not compute)."""
        self.shared[name] = {"key": key, "hit": bool(hit), **build_cost, "wait_s": round(float(wait_s), 4)}
        self.add_wait(wait_s, "setup")

    def set_parameter_counts(self, counts: dict[str, int]) -> None:
        """The model's counts for the FLOPs estimate: bench.models.flop_parameters(model)."""
        self.n_params, self.n_backprop, self.n_trainable = counts["n_params"], counts["n_backprop"], counts["n_trainable"]

    def set_frozen_trunk(self, n_trunk: int) -> None:
        """The run's policy passes start from a frozen trunk's states: 2·n_trunk FLOPs fewer per trained token
        and per no-grad token of TRUNK_KINDS (docs/design.md §13)."""
        self.n_trunk = int(n_trunk)

    def flops(self, train_tokens: int, nograd_tokens: int, trunk_nograd_tokens: int = 0) -> float:
        """FLOPs of `train_tokens` trained and `nograd_tokens` no-grad tokens, of which `trunk_nograd_tokens`
        ran from the frozen trunk (see set_frozen_trunk; trained tokens always do when there is one)."""
        full = model_flops(train_tokens, nograd_tokens, self.n_params, self.n_backprop, self.n_trainable)
        return full - 2.0 * self.n_trunk * (train_tokens + trunk_nograd_tokens)

    def total_flops(self) -> float:
        """FLOPs of everything counted so far (what `summary()["flops"]` reports)."""
        return self.flops(self.train_tokens, sum(self.nograd_tokens.values()), self._trunk_nograd_tokens())

    def _trunk_nograd_tokens(self) -> int:
        return sum(self.nograd_tokens[k] for k in TRUNK_KINDS) if self.n_trunk else 0

    def summary(self) -> dict:
        device_name, count = device_description()
        count = max(count if torch.cuda.is_available() else 1, self.device_count)
        seconds = self.compute_seconds()
        total = sum(seconds.values())
        nograd = sum(self.nograd_tokens.values())
        peak, peak_kind = peak_memory()
        return {
            **{f"{p}_s": round(s, 4) for p, s in seconds.items()},
            "total_s": round(total, 4),
            "wait_s": round(sum(self.waits.values()), 4),
            "device_name": device_name,
            "device_count": count,
            "device_hours": total * count / 3600.0,
            "train_tokens": self.train_tokens,
            "nograd_tokens": nograd,
            **{f"nograd_tokens/{k}": v for k, v in self.nograd_tokens.items()},
            "n_params_nonembedding": self.n_params,
            "n_params_backprop": self.n_params if self.n_backprop is None else self.n_backprop,
            "n_params_trainable": self.n_params if self.n_trainable is None else self.n_trainable,
            "n_params_trunk": self.n_trunk,
            "flops_train": self.flops(self.train_tokens, 0),
            "flops_nograd": self.flops(0, nograd, self._trunk_nograd_tokens()),
            "flops": self.total_flops(),
            "peak_memory_bytes": peak,
            "peak_memory_kind": peak_kind,
            "shared": self.shared,
        }
