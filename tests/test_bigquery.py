"""`pcaptool schema --bigquery`: derived from the JSON Schema, and every corpus record loads."""

from __future__ import annotations

import json

import pytest
from runbuilder import build
from typer.testing import CliRunner

from conftest import corpus_files
from pcaptool.cli import app
from pcaptool.query.sources import records
from pcaptool.record import bigquery

SchemaField = pytest.importorskip("google.cloud.bigquery").SchemaField
runner = CliRunner()


def schema_fields() -> list:
    result = runner.invoke(app, ["schema", "--bigquery"])
    assert result.exit_code == 0, result.output
    return [SchemaField.from_api_repr(f) for f in json.loads(result.stdout)]


def test_the_schema_is_valid_for_bigquery():
    fields = schema_fields()
    names = {f.name for f in fields}
    assert {"timestamp", "severity", "message", "pcap", "ip", "tcp", "http", "httpRequest"} <= names
    pcap = next(f for f in fields if f.name == "pcap")
    assert pcap.field_type == "RECORD" and {f.name for f in pcap.fields} >= {"num", "date", "len"}
    assert all(f.mode == "NULLABLE" for f in fields)


def test_every_top_level_property_of_the_json_schema_is_a_column_or_skipped():
    declared = bigquery._properties(bigquery.json_schema(), bigquery.json_schema())
    columns = {f["name"] for f in bigquery.bigquery_schema()}
    for name in declared:
        assert (name in columns) == bool(bigquery._NAME.match(name)), name


def test_derivation_follows_the_json_schema():
    """Types come from the schema's own constructs, not from a hand-kept list."""
    root = {"$defs": {"m": {"type": "object", "properties": {"more": {"type": "array", "items": {"$ref": "#/$defs/m"}}}, "additionalProperties": False}}}  # fmt: skip
    f = bigquery._field
    assert f("a", {"type": ["integer", "null"]}, root, ())["type"] == "INT64"
    assert f("a", {"type": ["integer", "string"]}, root, ())["type"] == "JSON"
    assert (
        f("a", {"type": "object", "additionalProperties": {"type": "string"}}, root, ())["type"]
        == "JSON"
    )
    assert f("a", {"type": "array", "items": {"type": "array"}}, root, ())["type"] == "JSON"
    assert f("a", {"type": "array", "items": {"type": "string"}}, root, ()) == {
        "name": "a",
        "type": "STRING",
        "mode": "REPEATED",
    }
    rec = f("m", {"$ref": "#/$defs/m"}, root, ())
    assert rec["type"] == "RECORD" and rec["fields"][0] == {
        "name": "more",
        "type": "JSON",
        "mode": "NULLABLE",
    }


def test_conforms_catches_what_a_load_rejects():
    fields = [{"name": "n", "type": "INT64", "mode": "NULLABLE"},
              {"name": "r", "type": "STRING", "mode": "REPEATED"}]  # fmt: skip
    assert bigquery.conforms({"n": 1, "r": ["a"]}, fields) == []
    assert bigquery.conforms({"n": "1"}, fields) == ["n: INT64 but str"]
    assert bigquery.conforms({"r": [None]}, fields) == ["r[0]: null in a REPEATED field"]
    assert bigquery.conforms({"zzz": 1}, fields) == ["zzz: not in the schema"]


def test_every_record_of_the_corpus_and_of_a_built_run_conforms(tmp_path):
    run = build(tmp_path / "run.pcap")
    paths = [
        str(run.path),
        *(str(p) for p in corpus_files() if p.suffix != ".md" and p.name != "MANIFEST.tsv"),
    ]
    fields = bigquery.bigquery_schema()
    count = 0
    for rec in records(paths, warn=lambda m: None):
        assert bigquery.conforms(rec, fields) == [], rec.get("message")
        count += 1
    assert count > 200
