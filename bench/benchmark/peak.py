"""How close a trainer runs to the machine: achieved model FLOP/s against a measured matmul peak.

Owns: measuring fp32 matmul GFLOP/s on this machine for one representative shape (the model's MLP
up-projection at a step's token count, its largest matmul), and the model FLOP/s of a run under the
suite's own FLOPs convention (bench.cost, DESIGN §8: 6·N per trained token, 2·N per no-grad token,
N = non-embedding parameters). Attention, the embedding and the LM head are left out of the model
FLOPs, as there, so the fraction is a slight underestimate of the work done.
"""
from __future__ import annotations

import time

import torch


def representative_shape(workload) -> tuple[int, int, int]:
    """(M, K, N) = (mean non-pad tokens per step, hidden, intermediate): the MLP up-projection of one
    step's batch, the largest matmul the model runs (also the gate projection's, and transposed the
    down-projection's)."""
    tokens = int(workload.pairs.both().attention_mask.sum()) // workload.total_steps
    return tokens, workload.model_cfg["hidden_size"], workload.model_cfg["intermediate_size"]


def matmul_gflops(shape: tuple[int, int, int], seconds: float = 0.25, rounds: int = 5, seed: int = 0) -> dict:
    """fp32 torch.mm GFLOP/s on `shape` at the current torch thread count: the best round of `rounds`
    (each ~`seconds` long) is the peak; the median shows how steady the machine was."""
    m, k, n = shape
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    out = torch.empty(m, n)
    flops = 2.0 * m * k * n
    for _ in range(3):  # first calls pick kernels and fault in memory
        torch.mm(a, b, out=out)
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < seconds / 5 or calls < 3:
        torch.mm(a, b, out=out)
        calls += 1
    per_round = max(3, int(calls * 5))  # ~`seconds` per round at the speed just seen
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            torch.mm(a, b, out=out)
        rates.append(flops * per_round / (time.perf_counter() - started) / 1e9)
    rates.sort()
    return {"shape": list(shape), "threads": torch.get_num_threads(), "peak_gflops": rates[-1],
            "median_gflops": rates[len(rates) // 2], "rounds": rounds}


def model_gflops(run: dict, non_embedding_parameters: int) -> float:
    """Model GFLOP/s of a timed run: (6·N·trained tokens + 2·N·no-grad tokens) / wall seconds."""
    flops = 6.0 * non_embedding_parameters * run["tokens"] + 2.0 * non_embedding_parameters * run["nograd_tokens"]
    return flops / run["seconds"] / 1e9
