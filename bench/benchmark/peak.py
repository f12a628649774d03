"""How close a trainer runs to the machine: achieved model FLOP/s against a measured matmul peak.

Owns: measuring fp32 matmul GFLOP/s on this machine for one representative shape (the model's MLP
up-projection at a step's token count, its largest matmul), and the model FLOP/s of a run under the
suite's own FLOPs convention (bench.cost, docs/design.md §8: 2·N + 2·N_backprop + 2·N_trainable per trained
token, which is 6·N when every block trains, and 2·N per no-grad token; N = non-embedding parameters).
Attention, the embedding and the LM head are left out of the model FLOPs, as there, so the fraction
is an underestimate of the work done: slight for the tiny model, larger for SmolLM2, whose 49k-token
LM head is ~1/5 of a forward per position (TRL computes it at every position, ours where a token is scored).
"""
from __future__ import annotations

import time

import torch

from bench.cost import model_flops


def representative_shape(workload) -> tuple[int, int, int]:
    """(M, K, N) = (mean non-pad tokens per step, hidden, intermediate): the MLP up-projection of one
    step's batch, the largest matmul of a transformer block (also the gate projection's, and transposed
    the down-projection's). The LM head's is larger on SmolLM2 but is not part of the model FLOPs."""
    tokens = int(workload.pairs.both().attention_mask.sum()) // workload.total_steps
    config = workload.initial_model.config
    return tokens, config.hidden_size, config.intermediate_size


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


def model_gflops(run: dict, flop_parameters: dict[str, int]) -> float:
    """Model GFLOP/s of a timed run: its trained and no-grad tokens costed as bench.cost costs them
    (`flop_parameters`: bench.models.flop_parameters of the model), over the wall seconds."""
    return model_flops(run["tokens"], run["nograd_tokens"], **flop_parameters) / run["seconds"] / 1e9
