"""Code fingerprints (bench.fingerprint): code changes count, prose does not, and each build's list
leaves out the code it does not depend on."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bench.fingerprint import BUILD_CODE, _source_files, build_fingerprint, code_fingerprint, run_fingerprint


@pytest.fixture()
def demo_package(tmp_path, monkeypatch):
    package = tmp_path / "fpdemo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text('"""Doc."""\ndef f(x):\n    return x + 1  # why\n')
    (package / "b.py").write_text("def g():\n    return 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    for name in [m for m in sys.modules if m.startswith("fpdemo")]:
        del sys.modules[name]


def _rewrite(path: Path, text: str) -> None:
    stat = path.stat()
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new mtime even within one tick


def test_comments_docstrings_and_layout_do_not_count(demo_package):
    before = code_fingerprint("fpdemo.a")
    _rewrite(demo_package / "a.py", '"""Another docstring."""\n\ndef f(x):\n    """Says what."""\n    return x + 1\n')
    assert code_fingerprint("fpdemo.a") == before


def test_a_code_change_counts_only_where_it_is(demo_package):
    a, b, whole = code_fingerprint("fpdemo.a"), code_fingerprint("fpdemo.b"), code_fingerprint("fpdemo")
    _rewrite(demo_package / "b.py", "def g():\n    return 3\n")
    assert code_fingerprint("fpdemo.a") == a
    assert code_fingerprint("fpdemo.b") != b
    assert code_fingerprint("fpdemo") != whole
    assert len(whole) == 16 and set(whole) <= set("0123456789abcdef")  # 16 lowercase hex digits


def test_a_missing_module_adds_nothing(demo_package):
    assert code_fingerprint("fpdemo.a", "fpdemo.not_there") == code_fingerprint("fpdemo.a")


def test_the_trainer_is_in_no_shared_build_but_in_every_run():
    import bench

    trainer = Path(bench.__file__).parent / "trainer.py"
    for kind, modules in BUILD_CODE.items():
        files = {f for m in modules for f in _source_files(m)}
        assert trainer not in files, kind
    assert trainer in set(_source_files("bench"))
    # tooling (checking, logging, reporting, planning) never invalidates a run; the library's code does
    from bench.fingerprint import RUN_CODE, TOOLING

    assert run_fingerprint() == code_fingerprint(*RUN_CODE, leave_out=TOOLING) != code_fingerprint(*RUN_CODE)
    assert all(_source_files(module) for module in TOOLING), "a TOOLING entry names no module"
    tasks = Path(bench.__file__).parent / "data" / "tasks" / "sentiment.py"
    assert tasks in {f for m in BUILD_CODE["sft"] for f in _source_files(m)}
    assert build_fingerprint("sft") != build_fingerprint("reference")
    assert len(run_fingerprint()) == 16


def test_an_unknown_build_kind_is_named():
    with pytest.raises(KeyError, match="'checkpoint'"):
        build_fingerprint("checkpoint")


def test_a_cache_entry_is_keyed_by_its_code(tmp_path, monkeypatch):
    """The same payload under other code is another entry (never reused); a kind without a code list
    (generic use of the cache) is keyed by its payload alone."""
    import bench.cache as cache_module
    from bench.cache import DiskCache, cache_key

    cache = DiskCache(tmp_path)
    first = cache.get_or_build("reference", {"x": 1}, lambda d: {})
    assert first.meta["code_fingerprint"] == build_fingerprint("reference")
    monkeypatch.setattr(cache_module, "build_fingerprint", lambda kind: "0" * 16)  # as if the code had changed
    second = cache.get_or_build("reference", {"x": 1}, lambda d: {})
    assert not second.hit and second.key != first.key
    assert cache.get_or_build("thing", {"x": 1}, lambda d: {}).key == cache_key({"x": 1})


def test_a_completed_record_of_other_code_is_not_skipped(tmp_path):
    from bench import records

    record = {"status": "completed", "config_hash": "abc", "provenance": {"code_fingerprint": "f" * 16}}
    records.write_record(tmp_path, record)
    assert records.completed_record(tmp_path, "abc", "f" * 16)["config_hash"] == "abc"
    assert records.completed_record(tmp_path, "abc", "e" * 16) is None  # other code: run again
    assert records.completed_record(tmp_path, "abd", "f" * 16) is None  # other config
    assert records.completed_record(tmp_path, "abc")["config_hash"] == "abc"  # no code asked: config alone
