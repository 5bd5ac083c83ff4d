"""NDJSON output: one record per line, orjson-encoded, for `jq` and Cloud Logging."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import BinaryIO

import orjson

_OPTIONS = orjson.OPT_APPEND_NEWLINE
# Cloud Logging takes entries up to 256 KB; no line of ours is longer than this. A record
# that would be is cut (`record_bound`) and says what went in `cut`.
MAX_RECORD_BYTES = 64 * 1024
_MESSAGE_CUT = 1024
_CHUNK = 64 * 1024  # NdjsonWriter's writes


def dumps(rec: dict) -> bytes:
    """One record as a JSON line (bytes, newline included)."""
    return orjson.dumps(rec, option=_OPTIONS)


def encode(rec: dict) -> bytes:
    """A record as a JSON line of at most MAX_RECORD_BYTES."""
    line = orjson.dumps(rec, option=_OPTIONS)
    if len(line) <= MAX_RECORD_BYTES:
        return line
    return record_bound(rec, len(line))


def record_bound(rec: dict, size: int) -> bytes:
    """Cut a record too long for a log entry, least useful parts first: the header lists
    of HTTP/2 frames, messages after the first four of `http.more`, HTTP headers and
    trailers, then every application layer and the message's tail. `cut` gives the
    original size and what was removed."""
    cut: list[str] = []
    rec["cut"] = {"bytes": size, "keys": cut}
    for step in _CUTS:
        step(rec, cut)
        line = orjson.dumps(rec, option=_OPTIONS)
        if len(line) <= MAX_RECORD_BYTES:
            return line
    return line  # only the envelope and L2-L4 are left: far below the bound


def _cut_frame_headers(rec: dict, cut: list) -> None:
    frames = (rec.get("http2") or {}).get("frames") or ()
    if any(f.pop("headers", None) is not None for f in frames):
        cut.append("http2.frames.headers")


def _cut_more(rec: dict, cut: list) -> None:
    more = (rec.get("http") or {}).get("more")
    if more and len(more) > 4:
        del more[4:]
        cut.append("http.more")


def _cut_headers(rec: dict, cut: list) -> None:
    h = rec.get("http")
    if h:
        for m in [h, *h.get("more", ())]:
            for key in ("headers", "trailers", "body_sample"):
                if m.pop(key, None) is not None and f"http.{key}" not in cut:
                    cut.append(f"http.{key}")


def _cut_layers(rec: dict, cut: list) -> None:
    for key in ("http", "http2", "httpRequest", "dns", "tls", "icmp", "conn"):
        if rec.pop(key, None) is not None:
            cut.append(key)
    tcp = rec.get("tcp")
    if tcp and tcp.pop("options", None) is not None:
        cut.append("tcp.options")
    msg = rec.get("message")
    if isinstance(msg, str) and len(msg) > _MESSAGE_CUT:
        rec["message"] = msg[:_MESSAGE_CUT] + "…"
        cut.append("message")


_CUTS = (_cut_frame_headers, _cut_more, _cut_headers, _cut_layers)


class NdjsonWriter:
    """Writes records to a binary stream; `flush()` when the producer is about to wait.

    Lines are gathered here and written 64 KiB at a time: with PYTHONUNBUFFERED set (as
    container images often do) `sys.stdout.buffer` is the raw file, and a write per
    record would be a system call per packet."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._lines: list[bytes] = []
        self._size = 0

    def write(self, rec: dict) -> None:
        line = orjson.dumps(rec, option=_OPTIONS)  # `encode`, in line
        if len(line) > MAX_RECORD_BYTES:
            line = record_bound(rec, len(line))
        self._lines.append(line)
        self._size += len(line)
        if self._size >= _CHUNK:
            self._drain()

    def write_all(self, records: Iterable[dict]) -> None:
        """`write` every record of `records` (translate's loop, without a call per record)."""
        dumps, options, limit = orjson.dumps, _OPTIONS, MAX_RECORD_BYTES
        for rec in records:
            line = dumps(rec, option=options)
            if len(line) > limit:
                line = record_bound(rec, len(line))
            self._lines.append(line)  # not bound: flush() (before a read) renews the list
            self._size += len(line)
            if self._size >= _CHUNK:
                self._drain()

    def _drain(self) -> None:
        lines = self._lines
        if lines:
            self._lines, self._size = [], 0
            self.out.write(lines[0] if len(lines) == 1 else b"".join(lines))

    def flush(self) -> None:
        self._drain()
        self.out.flush()


class PrettyWriter:
    """Indented, coloured JSON for humans (rich)."""

    def __init__(self, out=None) -> None:
        from rich.console import Console

        self.console = Console(file=out or sys.stdout, soft_wrap=True)

    def write(self, rec: dict) -> None:
        self.console.print_json(encode(rec).decode())

    def flush(self) -> None:
        self.console.file.flush()
