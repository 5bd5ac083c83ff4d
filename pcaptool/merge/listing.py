"""`pcaptool merge --list`: name, size, time range and packet count of each part."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from pcaptool.capfile.reader import CaptureReader
from pcaptool.capfile.streams import open_input
from pcaptool.errors import CaptureFormatError
from pcaptool.merge.ndjson import _ndjson_records
from pcaptool.merge.parts import NDJSON_SUFFIXES, MergeResult, Part


@dataclass
class PartSummary:
    name: str
    size: int | None
    updated: datetime | None
    first_ns: int | None = None
    last_ns: int | None = None
    packets: int | None = None
    error: str | None = None


def summarize(part: Part, path: str | None = None) -> PartSummary:
    """Name, size, time range and packet count of one part (reads it through)."""
    summary = PartSummary(part.name, part.size, part.updated)
    path = path or part.path
    if path is None:
        return summary
    if path != "-" and part.name.endswith(NDJSON_SUFFIXES):
        return _summarize_ndjson(summary, path)
    first = last = None
    count = 0
    try:
        stream = open_input(sys.stdin.buffer if path == "-" else path)
        try:
            for pkt in CaptureReader(stream, part.name):
                if first is None:
                    first = pkt.ts_ns
                last = pkt.ts_ns
                count += 1
        finally:
            stream.close()
    except CaptureFormatError as exc:
        summary.error = str(exc)
    summary.first_ns, summary.last_ns, summary.packets = first, last, count
    return summary


def _summarize_ndjson(summary: PartSummary, path: str) -> PartSummary:
    result = MergeResult()
    part = Part(summary.name, path)
    count, first, last = 0, None, None
    try:
        for (ts, *_rest), _i, _line in _ndjson_records(part, 0, False, lambda m: None, result):
            first = ts if first is None else min(first, ts)
            last = ts if last is None else max(last, ts)
            count += 1
    except CaptureFormatError as exc:
        summary.error = str(exc)
    summary.first_ns, summary.last_ns, summary.packets = first, last, count
    return summary


def format_ns(ts_ns: int | None) -> str:
    """Integer ns -> RFC 3339 UTC with nanoseconds (`-` for none)."""
    if ts_ns is None:
        return "-"
    sec, frac = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"
