"""A query's result: a table on a terminal, CSV/NDJSON on a pipe, CSV/NDJSON/Parquet files."""

from __future__ import annotations

import csv
import sys
from datetime import datetime

import orjson

from pcaptool.errors import PcapToolError, UsageError

FORMATS = ("table", "csv", "ndjson", "parquet")
_BY_SUFFIX = {".csv": "csv", ".json": "ndjson", ".ndjson": "ndjson", ".parquet": "parquet"}
TERMINAL_ROWS = 1000  # a terminal shows this many rows; pipes and files get every row


def choose_format(output: str | None, fmt: str | None, terminal: bool) -> str:
    """The format asked for, else the output's suffix, else table on a terminal, CSV."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"-F/--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if fmt == "parquet" and (output in (None, "-")):
            raise UsageError("Parquet needs a file: -o FILE.parquet")
        if fmt == "table" and output not in (None, "-"):
            raise UsageError("-F table is for the terminal; use csv, ndjson or parquet for a file")
        return fmt
    if output not in (None, "-"):
        for suffix, name in _BY_SUFFIX.items():
            if output.endswith(suffix):
                return name
        raise UsageError(f"{output}: say the format with -F (csv, ndjson, parquet)")
    return "table" if terminal else "csv"


def write_result(db, sql: str, output: str | None, fmt: str) -> int:
    """Run SQL on DB and write its rows; returns the number of rows."""
    import duckdb

    try:
        if output not in (None, "-"):
            return _copy(db, sql, output, fmt)
        cur = db.execute(sql)
    except duckdb.Error as exc:
        raise PcapToolError(f"query: {_one_line(exc)}") from None
    if cur.description is None:
        return 0
    names = [d[0] for d in cur.description]
    if fmt == "table":
        return _table(cur, names)
    return _stream(cur, names, fmt)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _copy(db, sql: str, output: str, fmt: str) -> int:
    options = {"csv": "FORMAT csv, HEADER", "ndjson": "FORMAT json", "parquet": "FORMAT parquet"}
    target = output.replace("'", "''")
    db.execute(f"CREATE OR REPLACE TEMP VIEW _result AS {sql}")
    db.execute(f"COPY (SELECT * FROM _result) TO '{target}' ({options[fmt]})")
    return db.execute("SELECT count(*) FROM _result").fetchone()[0]


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _stream(cur, names: list[str], fmt: str) -> int:
    out = sys.stdout
    count = 0
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(names)
    while rows := cur.fetchmany(10_000):
        for row in rows:
            if writer is not None:
                writer.writerow([_plain(v) for v in row])
            else:
                out.write(orjson.dumps(dict(zip(names, row, strict=True)), default=str).decode())
                out.write("\n")
        count += len(rows)
    out.flush()
    return count


def _table(cur, names: list[str]) -> int:
    from rich.table import Table

    from pcaptool.stdio import stdout_console

    table = Table(*names, show_lines=False)
    rows = cur.fetchmany(TERMINAL_ROWS)
    for row in rows:
        table.add_row(*("" if v is None else str(_plain(v)) for v in row))
    console = stdout_console()
    console.print(table)
    if cur.fetchone() is not None:
        console.print(f"(first {TERMINAL_ROWS} rows; -o FILE or a pipe gets every row)")
    return len(rows)
