"""bench.publish: completed records copied with machine paths made portable, nothing else changed or lost."""
from __future__ import annotations

import json

import pytest

from bench.publish import PublishError, absolute_paths, machine_prefixes, main, portable, publish
from bench.records import atomic_write_json, write_history


def make_run(root, sweep, run_id, status="completed", env="/opt/envs/bench", **metrics):
    folder = root / sweep / run_id
    record = {
        "run_id": run_id, "status": status, "config_hash": run_id[-4:],
        "config": {"paths": {"runs_root": str(root), "cache_root": f"{root.parent}/cache"}, "seed": 0},
        "provenance": {"command": f"{env}/bin/python -m bench.train seed=0 experiment=x"},
        "cost": {"shared": {"model": {"source": f"{env}/lib/python3.11/site-packages/m/model.gguf"}}},
        "metrics": {"gold_reward": 0.5, **metrics},
    }
    atomic_write_json(folder / "record.json", record)
    write_history(folder, [{"step": 1, "loss": 0.69}])
    return folder


def test_prefixes_come_from_the_record():
    record = {"config": {"paths": {"runs_root": "/data/runs/", "cache_root": "/data/cache"}},
              "provenance": {"command": "/home/u/.venv/bin/python -m bench.train seed=1"}}
    assert machine_prefixes(record) == {"/data/runs": "runs", "/data/cache": ".cache/imi-bench",
                                        "/home/u/.venv": ".venv"}
    # already portable records have nothing to rewrite
    assert machine_prefixes({"config": {"paths": {"runs_root": "runs"}}, "provenance": {"command": "python -m x"}}) == {}


def test_rewriting_respects_path_boundaries_and_the_longest_prefix():
    prefixes = {"/a/runs": "runs", "/a/runs/cache": ".cache/imi-bench"}
    assert portable("/a/runs/s/r1", prefixes) == "runs/s/r1"
    assert portable("/a/runs/cache/dataset/k", prefixes) == ".cache/imi-bench/dataset/k"
    assert portable("/a/runs2/x", prefixes) == "/a/runs2/x"  # another folder that shares the characters
    assert portable("cp /a/runs /a/runs/cache", prefixes) == "cp runs .cache/imi-bench"
    assert portable({"k": ["/a/runs", 3, None]}, prefixes) == {"k": ["runs", 3, None]}
    assert absolute_paths({"a": "runs/x", "b": ["ok", "x /etc/passwd"], "c": "/"}) == ["b[1]"]


def test_publish_a_sweep_folder(tmp_path):
    root = tmp_path / "machine" / "runs"
    make_run(root, "s", "dpo-x-s0-aaaa")
    make_run(root, "s", "dpo-x-s1-bbbb", status="failed")
    dest = tmp_path / "results" / "study"
    summary = publish(root / "s", dest)
    assert summary.copied == ["dpo-x-s0-aaaa"] and summary.skipped == ["dpo-x-s1-bbbb"] and not summary.absolute
    out = json.loads((dest / "dpo-x-s0-aaaa" / "record.json").read_text())
    assert out["config"]["paths"] == {"runs_root": "runs", "cache_root": ".cache/imi-bench"}
    assert out["provenance"]["command"] == ".venv/bin/python -m bench.train seed=0 experiment=x"
    assert out["cost"]["shared"]["model"]["source"] == ".venv/lib/python3.11/site-packages/m/model.gguf"
    assert out["metrics"] == {"gold_reward": 0.5}
    assert (dest / "dpo-x-s0-aaaa" / "history.jsonl").read_text() == \
        (root / "s" / "dpo-x-s0-aaaa" / "history.jsonl").read_text()
    assert not (dest / "dpo-x-s1-bbbb").exists()
    # publishing again changes nothing
    again = publish(root / "s", dest)
    assert again.copied == [] and again.unchanged == ["dpo-x-s0-aaaa"]


def test_a_runs_root_keeps_its_sweep_layout_and_other_records_are_refused(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "sweep_a", "dpo-x-s0-aaaa")
    dest = tmp_path / "out"
    assert publish(root, dest).copied == ["sweep_a/dpo-x-s0-aaaa"]
    make_run(root, "sweep_a", "dpo-x-s0-aaaa", gold_reward=0.9)  # the same run id, another result
    with pytest.raises(PublishError, match="holds another record.*--replace"):
        publish(root, dest)
    assert publish(root, dest, dry_run=True, replace=True).copied == ["sweep_a/dpo-x-s0-aaaa"]
    assert json.loads((dest / "sweep_a/dpo-x-s0-aaaa/record.json").read_text())["metrics"]["gold_reward"] == 0.5
    publish(root, dest, replace=True)
    assert json.loads((dest / "sweep_a/dpo-x-s0-aaaa/record.json").read_text())["metrics"]["gold_reward"] == 0.9


def test_the_command_line_names_what_is_wrong(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "d")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "d")]) == 2
    assert "no record.json" in capsys.readouterr().err
    make_run(tmp_path / "runs", "s", "dpo-x-s0-aaaa", env="/opt/e")
    rec = json.loads((tmp_path / "runs/s/dpo-x-s0-aaaa/record.json").read_text())
    rec["metrics"]["note"] = "copied from /srv/other/file"
    atomic_write_json(tmp_path / "runs/s/dpo-x-s0-aaaa/record.json", rec)
    assert main([str(tmp_path / "runs/s"), str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "copied 1 runs" in out and "still an absolute path in metrics.note" in out
