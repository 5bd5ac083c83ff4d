"""NDJSON output: one record per line, orjson-encoded, for `jq` and Cloud Logging."""

from __future__ import annotations

import sys
from typing import BinaryIO

import orjson

_OPTIONS = orjson.OPT_APPEND_NEWLINE


def dumps(rec: dict) -> bytes:
    """One record as a JSON line (bytes, newline included)."""
    return orjson.dumps(rec, option=_OPTIONS)


def log(severity: str, message: str, **fields) -> None:
    """A structured log line on stderr, as Cloud Logging reads it."""
    from pcaptool.verbosity import should_log

    if not should_log(severity):
        return
    sys.stderr.buffer.write(dumps({"severity": severity, "message": message, **fields}))
    sys.stderr.buffer.flush()


class NdjsonWriter:
    """Writes records to a binary stream; `flush()` when the producer is about to wait."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._write = out.write

    def write(self, rec: dict) -> None:
        self._write(orjson.dumps(rec, option=_OPTIONS))

    def flush(self) -> None:
        self.out.flush()


class PrettyWriter:
    """Indented, coloured JSON for humans (rich)."""

    def __init__(self, out=None) -> None:
        from rich.console import Console

        self.console = Console(file=out or sys.stdout, soft_wrap=True)

    def write(self, rec: dict) -> None:
        self.console.print_json(orjson.dumps(rec).decode())

    def flush(self) -> None:
        self.console.file.flush()
