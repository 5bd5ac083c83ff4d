"""`pcaptool query`: SQL over a run's records (DuckDB, in process, out of core)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pcaptool.commands._options import (
    DUCK_MEMORY,
    CacheDir,
    DuckMemory,
    Quiet,
    Verbose,
    set_verbosity,
)
from pcaptool.errors import UsageError


def query(
    sql: Annotated[
        str,
        typer.Argument(metavar="SQL", help="A DuckDB SELECT over packets, requests, connections."),
    ],
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="FILES",
            help="Captures (.pcap/.pcapng, .gz), NDJSON parts, directories, gs:// prefixes.",
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "-o", "--output", metavar="FILE", help="Write the rows to FILE (.csv, .json, .parquet)."
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("-F", "--format", metavar="FORMAT", help="table, csv, ndjson or parquet."),
    ] = None,
    cache_dir: CacheDir = None,
    memory: DuckMemory = DUCK_MEMORY,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Run SQL over the packets, HTTP requests and connections of a run.

    Three tables (columns in docs/query.md): `packets` (one row per packet), `requests`
    (one per HTTP exchange, with latency and trace) and `connections` (one per TCP
    connection). Every table has the whole record as JSON in `record`. Captures are
    translated on the fly; a table on a terminal, CSV on a pipe.

    Example:

    \b
        pcaptool query "SELECT path, quantile_cont(latency_s, 0.95) AS p95 FROM requests GROUP BY path ORDER BY p95 DESC" parts/
        pcaptool query "SELECT * FROM connections WHERE state = 'REJ'" run.pcap -o failed.csv
    """
    set_verbosity(quiet, verbose)
    from pcaptool.query import output as out
    from pcaptool.query.sources import records, resolve
    from pcaptool.query.tables import Tables
    from pcaptool.stdio import quiet_broken_pipe

    if not inputs:
        raise UsageError("name the parts to query: files, directories or gs:// prefixes")
    kind = out.choose_format(output, fmt, sys.stdout.isatty())
    paths = resolve(inputs, cache_dir)
    with Tables(memory_limit=memory) as tables, quiet_broken_pipe():
        tables.load(records(paths))
        rows = out.write_result(tables.db, sql, output, kind)
    if not quiet and output not in (None, "-"):
        print(f"pcaptool: {rows} rows written to {output}", file=sys.stderr)
