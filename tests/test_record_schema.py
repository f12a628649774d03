"""One record schema (analysis/record_schema.yaml) for the library that writes records and the analysis that
reads them: what one side says, the other cannot contradict."""
from __future__ import annotations

import pandas as pd
import yaml

import analysis.grid
import analysis.load
from analysis.grid import configuration_columns
from bench import records
from helpers import ROOT

SCHEMA = yaml.safe_load((ROOT / "analysis" / "record_schema.yaml").read_text())


def test_both_sides_read_the_one_schema():
    assert records.SCHEMA == analysis.load.SCHEMA == SCHEMA
    assert records.SCHEMA_VERSION == SCHEMA["schema_version"] in analysis.load.SUPPORTED_SCHEMA_VERSIONS
    assert (records.RECORD_FILE, records.HISTORY_FILE) == (analysis.load.RECORD_FILE, analysis.load.HISTORY_FILE)
    assert set(records.NON_RESULT_KEYS) <= set(analysis.grid.NON_RESULT_PREFIXES)


def test_a_checkpoint_interval_is_never_a_hyperparameter():
    """The drift the schema prevents: four seeds of one DPO configuration saved every 50 or 100 steps are one
    configuration, in the config hash and in the analysis."""
    base = {"method": {"name": "dpo", "beta": 0.1}, "dataset": {"name": "sentiment"}, "seed": 0}
    assert records.config_hash({**base, "checkpoint": {"every_steps": 50}}) == records.config_hash(
        {**base, "checkpoint": {"every_steps": 100}})
    frame = pd.DataFrame({"method.name": "dpo", "method.beta": 0.1, "seed": [0, 1, 2, 3],
                          "checkpoint.every_steps": [50, 100, 50, 100]})
    assert "checkpoint.every_steps" not in configuration_columns(frame, ["method.beta", "checkpoint.every_steps"])


def test_a_written_record_has_the_schema_s_fields(make_config):
    from bench.pipeline import run

    result = run(make_config("method=dpo"))
    assert set(result.record) | {"schema_version"} == set(SCHEMA["fields"])
    written = records.read_record(result.directory)
    assert set(written) == set(SCHEMA["fields"]) and written["schema_version"] == SCHEMA["schema_version"]
