"""`pcaptool schema`: the record schema, as JSON Schema or as a BigQuery table schema."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity


def schema(
    bigquery: Annotated[
        bool, typer.Option("--bigquery", help="BigQuery's table schema (for bq mk / bq load).")
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Print the schema of the NDJSON records that translate writes.

    Without options, the JSON Schema (pcaptool/schema/record.schema.json); with
    --bigquery, the BigQuery table schema derived from it (docs/query.md#bigquery).

    Example:

    \b
        pcaptool schema --bigquery > records.schema.json
        bq load --source_format=NEWLINE_DELIMITED_JSON --ignore_unknown_values dataset.packets 'gs://BUCKET/PREFIX/*.json.gz' records.schema.json
    """
    set_verbosity(quiet, verbose)
    import json

    from pcaptool.record.bigquery import bigquery_schema, json_schema

    doc = bigquery_schema() if bigquery else json_schema()
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
