"""A run re-made from its own record gives the same metrics; a doctored record is caught."""
import json

from bench.pipeline import run
from bench.reproduce import main


def test_reproduce_from_record_and_detect_a_changed_number(make_config, shared_cache, tmp_path, capsys):
    result = run(make_config("method=rmipo"))
    assert result.record["status"] == "completed"
    assert main([str(tmp_path / "runs"), "--runs", "0", "--cache-root", str(shared_cache)]) == 0
    assert "1/1 runs reproduced" in capsys.readouterr().out

    record_path = result.directory / "record.json"
    record = json.loads(record_path.read_text())
    record["metrics"]["gold_reward"] += 0.01
    record_path.write_text(json.dumps(record))
    assert main([str(tmp_path / "runs"), "--runs", "0", "--cache-root", str(shared_cache)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "gold_reward: recorded" in out


def test_every_committed_record_names_a_method_config_that_builds_today():
    """Keys renamed since a committed result was recorded (RENAMED_METHOD_KEYS) are mapped, so
    `python -m bench.reproduce results/<name>` can re-run every committed run."""
    from pathlib import Path

    from bench.methods import build_method
    from bench.reproduce import completed_records, current_config

    results = Path(__file__).resolve().parents[1] / "results"
    found = [r for folder in sorted(results.iterdir()) if folder.is_dir() for r in completed_records(folder)]
    assert {r["config"]["method"]["name"] for r in found} >= {"dpo", "rmipo", "imi_dpo"}
    for record in found:
        build_method(current_config(record["config"])["method"])
