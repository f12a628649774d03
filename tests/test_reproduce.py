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


def test_a_record_made_by_other_code_is_refused_naming_its_commit(make_config, shared_cache, tmp_path, capsys):
    """Reproducing is for the code that made a record: another fingerprint (or none, as records made
    before fingerprints existed) is refused before any compute, naming the commit to check out."""
    result = run(make_config("method=dpo"))
    record_path = result.directory / "record.json"
    record = json.loads(record_path.read_text())
    record["provenance"]["code_fingerprint"] = "0" * 16
    record["provenance"]["git_commit"] = "abcdef1234567890"
    record_path.write_text(json.dumps(record))
    assert main([str(tmp_path / "runs"), "--runs", "0", "--cache-root", str(shared_cache)]) == 2
    err = capsys.readouterr().err
    assert "made by other code (fingerprint 0000000000000000, commit abcdef123456" in err
    assert "check out commit abcdef123456" in err
