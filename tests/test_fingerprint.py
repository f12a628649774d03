"""Code fingerprints (bench.fingerprint): code changes count, prose does not, and each build's list
leaves out the code it does not depend on."""
from __future__ import annotations

import os
import sys
import textwrap
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
    assert len(whole) == 16 and int(whole, 16) >= 0


def test_a_missing_module_adds_nothing(demo_package):
    assert code_fingerprint("fpdemo.a", "fpdemo.not_there") == code_fingerprint("fpdemo.a")


def test_the_trainer_is_in_no_shared_build_but_in_every_run():
    import bench

    trainer = Path(bench.__file__).parent / "trainer.py"
    for kind, modules in BUILD_CODE.items():
        files = {f for m in modules for f in _source_files(m)}
        assert trainer not in files, kind
    assert trainer in set(_source_files("bench"))
    assert build_fingerprint("sft", "bench.data.tasks.sentiment") != build_fingerprint("sft", "bench.data.tasks.arithmetic")
    assert len(run_fingerprint()) == 16


def test_an_unknown_build_kind_is_named():
    with pytest.raises(KeyError, match="'checkpoint'"):
        build_fingerprint("checkpoint")
