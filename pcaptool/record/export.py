"""Records exported from Cloud Logging, turned back into pcaptool records.

Cloud Logging stores a pcaptool record as a LogEntry (https://cloud.google.com/logging/
docs/reference/v2/rest/v2/LogEntry): the payload goes under `jsonPayload`, the special
fields become LogEntry fields (`logging.googleapis.com/labels` → `labels`, `…/operation`
→ `operation`, `…/trace` → `trace`, `…/spanId` → `spanId`, `…/trace_sampled` →
`traceSampled`; `timestamp` becomes an RFC 3339 string, `httpRequest` a typed object, int64 sizes as
strings, as pcaptool writes them), and every number of the payload a double (protobuf's Struct).
`gcloud logging read --format=json` prints a JSON array of them; a sink to Cloud Storage
writes one per line. `record_lines` reads either (and plain pcaptool NDJSON) and gives back
the records as pcaptool writes them, so the README's jq recipes apply unchanged.

What cannot come back: a payload number that was a whole float (`2.0`) returns as an
integer (pcaptool writes whole numbers as integers, so its own records are unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

import orjson

from pcaptool.record.envelope import LABELS, OPERATION, TRACE

SPAN = "logging.googleapis.com/spanId"
SAMPLED = "logging.googleapis.com/trace_sampled"
# LogEntry field → pcaptool record key
_SPECIAL = {
    "labels": LABELS,
    "operation": OPERATION,
    "trace": TRACE,
    "spanId": SPAN,
    "traceSampled": SAMPLED,
    "httpRequest": "httpRequest",
}


def is_log_entry(obj: object) -> bool:
    return (
        isinstance(obj, dict) and "jsonPayload" in obj and ("logName" in obj or "insertId" in obj)
    )


def _whole(value):
    """Struct's doubles back to integers where they are whole."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def _timestamp(text: str) -> dict:
    """RFC 3339 (nanoseconds kept) to the record's {"seconds", "nanos"}."""
    head, _, frac = text.rstrip("Z").partition(".")
    frac, offset = (frac, "") if not any(c in frac for c in "+-") else _split_offset(frac)
    when = datetime.fromisoformat(head + (offset or "+00:00"))
    digits = "".join(c for c in frac if c.isdigit())
    return {"seconds": int(when.timestamp()), "nanos": int((digits + "000000000")[:9])}


def _split_offset(frac: str) -> tuple[str, str]:
    for i, c in enumerate(frac):
        if c in "+-":
            return frac[:i], frac[i:]
    return frac, ""


def from_log_entry(entry: dict) -> dict:
    """One exported LogEntry as the pcaptool record it was written as."""
    payload = _whole(entry.get("jsonPayload") or {})
    rec: dict = {}
    if "timestamp" in entry:
        rec["timestamp"] = _timestamp(entry["timestamp"])
    rec["severity"] = entry.get("severity", "DEFAULT")  # the proto default is left out
    rec.update(payload)
    for field, key in _SPECIAL.items():
        if field in entry and key not in rec:
            value = entry[field]
            if field == "operation":
                value = {k: v for k, v in value.items() if v is not False}  # proto defaults
            rec[key] = value
    return rec


def record_lines(stream: Iterable[bytes]) -> Iterator[bytes]:
    """NDJSON lines of pcaptool records from pcaptool NDJSON, LogEntry NDJSON (a sink's
    files, in time order), or a `gcloud logging read --format=json` array (read whole, as
    gcloud prints it indented, and put in time order)."""
    lines = iter(stream)
    for line in lines:
        if not line.strip():
            continue
        if line.lstrip()[:1] == b"[":
            entries = orjson.loads(line + b"".join(lines))
            recs = [from_log_entry(e) if is_log_entry(e) else e for e in entries]
            # gcloud lists newest first; a part is read in time order
            for rec in sorted(recs, key=sort_key):
                yield orjson.dumps(rec) + b"\n"
            return
        if b'"jsonPayload"' in line:
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield line
                continue
            if is_log_entry(entry):
                yield orjson.dumps(from_log_entry(entry)) + b"\n"
                continue
        yield line


def sort_key(rec: dict) -> tuple[int, int, int]:
    """Where a record goes in time order: (ns, packet number, 0 packet / 1 connection).

    Packet records sort by their capture time and number; connection records (`--flows`,
    no `pcap`) by their end time, right after the packet that ended them.
    """
    ts = rec.get("timestamp")
    pcap = rec.get("pcap")
    if isinstance(ts, dict):
        ns = int(ts["seconds"]) * 1_000_000_000 + int(ts.get("nanos", 0))
    else:  # a record trimmed by --fields: its pcap.date says when
        from pcaptool.merge.ndjson import rfc3339_ns

        ns = rfc3339_ns(pcap["date"])
    if pcap is not None:
        return ns, int(pcap["num"]), 0
    return ns, int(rec["conn"].get("last_num", 0)), 1
