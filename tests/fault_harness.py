"""Runs the real entry point (`python -m bench.train ...`) with its phases announced, for tests/test_kill.py.

    python tests/fault_harness.py <the entry point's arguments>

Prints a line `[phase] <name>` (flushed) as the run enters each phase, so that a test that kills this
process at a random moment knows where the kill landed: setup, train, eval (CostMeter phases),
cache-build (inside a shared cache entry's build), checkpoint-write, record-write. Nothing else changes.

IMI_BENCH_KILL_AT=<phase>:<n> makes the process SIGKILL itself the n-th time (1-based) it reaches that
point, at the worst moment of it:
- record-write / checkpoint-write: half the file written to its temp file, not yet renamed into place;
- cache-build: the entry's files built in its temp folder, not yet renamed into place;
- step: in the middle of optimizer step n (of the first run that gets there); setup / train / eval: on
  entering the phase.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

KILL_AT = os.environ.get("IMI_BENCH_KILL_AT", "")
_counts: dict[str, int] = {}


def _kill_comes_next(phase: str) -> bool:
    """Whether the next announcement of `phase` is the one IMI_BENCH_KILL_AT names."""
    return KILL_AT == f"{phase}:{_counts.get(phase, 0) + 1}"


def announce(phase: str) -> None:
    print(f"[phase] {phase}", flush=True)
    kill = _kill_comes_next(phase)
    _counts[phase] = _counts.get(phase, 0) + 1
    if kill:
        print(f"[phase] killing myself at {phase} #{_counts[phase]}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _instrument() -> None:
    import bench.cache
    import bench.checkpoint
    import bench.cost
    import bench.records
    import bench.trainer

    phase = bench.cost.CostMeter.phase

    @contextmanager
    def announced_phase(self, name):
        announce(name)
        with phase(self, name):
            yield

    bench.cost.CostMeter.phase = announced_phase

    write_text = bench.records.atomic_write_text

    def announced_write(path, text):
        if Path(path).name == bench.records.RECORD_FILE:
            if _kill_comes_next("record-write"):
                # the worst moment: half the record in its temp file, nothing renamed yet
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                (Path(path).parent / f".{Path(path).name}.killed.tmp").write_text(text[: len(text) // 2])
            announce("record-write")
        return write_text(path, text)

    bench.records.atomic_write_text = announced_write

    save = bench.checkpoint.RunCheckpoint.save

    def announced_save(self, state):
        if _kill_comes_next("checkpoint-write"):
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f".{bench.checkpoint.FILE}.killed.tmp").write_bytes(b"half a checkpoint")
        announce("checkpoint-write")
        saved = save(self, state)
        print("[phase] train", flush=True)  # back to training (not counted: train:<n> means entering the phase)
        return saved

    bench.checkpoint.RunCheckpoint.save = announced_save

    get_or_build = bench.cache.DiskCache.get_or_build

    def announced_get_or_build(self, kind, payload, build):
        def announced_build(directory):
            cost = build(directory)
            announce("cache-build")  # the files are in the temp folder; the rename has not happened
            return cost
        return get_or_build(self, kind, payload, announced_build)

    bench.cache.DiskCache.get_or_build = announced_get_or_build

    pair_logps = bench.trainer.PreferenceTrainer._pair_logps

    def announced_pair_logps(self, index, step):
        if KILL_AT == f"step:{step + 1}":  # in the middle of optimizer step n (counted from 1)
            print(f"[phase] killing myself at step #{step + 1}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return pair_logps(self, index, step)

    bench.trainer.PreferenceTrainer._pair_logps = announced_pair_logps


if __name__ == "__main__":
    announce("startup")
    _instrument()
    sys.argv = ["bench.train", *sys.argv[1:]]
    runpy.run_module("bench.train", run_name="__main__")
