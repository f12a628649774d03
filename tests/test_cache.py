"""The shared disk cache: one build under concurrency, nothing half-written after a crash."""
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from bench.cache import DiskCache, cache_key


def _build_slowly(root: str, counter_dir: str) -> str:
    def build(directory: Path) -> dict:
        # every build leaves a marker, so the test can count how many processes built the entry
        (Path(counter_dir) / f"built-{os.getpid()}").write_text("x")
        time.sleep(0.5)
        (directory / "value.txt").write_text("42")
        return {"flops": 1.0}

    entry = DiskCache(root).get_or_build("thing", {"a": 1}, build)
    return (entry.path / "value.txt").read_text()


def test_concurrent_jobs_build_once(tmp_path):
    counters = tmp_path / "counters"
    counters.mkdir()
    with mp.get_context("spawn").Pool(3) as pool:
        values = pool.starmap(_build_slowly, [(str(tmp_path / "cache"), str(counters))] * 3)
    assert values == ["42"] * 3
    assert len(list(counters.iterdir())) == 1


def test_hit_reports_build_cost(tmp_path):
    cache = DiskCache(tmp_path)
    first = cache.get_or_build("k", {"x": 1}, lambda d: {"flops": 7.0})
    second = cache.get_or_build("k", {"x": 1}, lambda d: pytest.fail("must not rebuild"))
    assert (first.hit, second.hit) == (False, True)
    # a hit reports the cost the first build measured and stored, never a cost of its own
    assert second.build_cost == first.build_cost and second.build_cost["flops"] == 7.0
    assert second.key == cache_key({"x": 1}) != cache_key({"x": 2})


def test_failed_build_leaves_no_entry(tmp_path):
    cache = DiskCache(tmp_path)

    def broken(directory: Path) -> dict:
        (directory / "partial.bin").write_text("half")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        cache.get_or_build("k", {"x": 1}, broken)
    assert not (tmp_path / "k" / cache_key({"x": 1})).exists()
    assert [p for p in (tmp_path / "k").iterdir() if not p.name.endswith(".lock")] == []
    rebuilt = cache.get_or_build("k", {"x": 1}, lambda d: {})
    assert not rebuilt.hit
