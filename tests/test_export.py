"""`merge -F ndjson` reads records exported from Cloud Logging and gives back pcaptool's.

The LogEntries are built with google-cloud-logging's own types (LogEntry, protobuf
Struct payload, HttpRequest), serialised as the API serialises them (LogEntry.to_json),
from a translate run with HTTP, trace context and --flows: the special fields moved out
of the payload, numbers turned into doubles, int64 sizes into strings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tcpconv import Capture, Conn
from typer.testing import CliRunner

from pcaptool.cli import app
from pcaptool.record.export import from_log_entry

logging_v2 = pytest.importorskip(
    "google.cloud.logging_v2", reason="test extra google-cloud-logging"
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
MOVED = {  # record key → LogEntry field, as Cloud Logging's agent moves them
    "logging.googleapis.com/labels": "labels",
    "logging.googleapis.com/operation": "operation",
    "logging.googleapis.com/trace": "trace",
    "logging.googleapis.com/spanId": "span_id",
    "logging.googleapis.com/trace_sampled": "trace_sampled",
}


def run_records(tmp: Path) -> list[dict]:
    cap = Capture()
    for i in range(2):
        conn = Conn(cap, client=("10.0.0.1", 40000 + i))
        conn.handshake()
        conn.client(
            f"GET /p{i} HTTP/1.1\r\nHost: x\r\ntraceparent: 00-{TRACE}-00f067aa0ba902b7-01\r\n\r\n".encode()
        )
        conn.server(b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\n\r\nno", dt=2_000_000)
        conn.close()
    path = cap.write(tmp / "run.pcap")
    r = CliRunner().invoke(app, ["translate", "--flows", "--project", "proj", str(path)])
    assert r.exit_code == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def to_log_entry(rec: dict) -> dict:
    from google.cloud.logging_v2.types import LogEntry
    from google.protobuf import struct_pb2, timestamp_pb2

    payload = {
        k: v
        for k, v in rec.items()
        if k not in MOVED and k not in ("timestamp", "severity", "httpRequest")
    }
    struct = struct_pb2.Struct()
    struct.update(payload)
    entry = LogEntry(log_name="projects/proj/logs/run.googleapis.com%2Fstdout", json_payload=struct,
                     severity=rec["severity"], insert_id=f"{rec['timestamp']['nanos']}")  # fmt: skip
    entry.timestamp = timestamp_pb2.Timestamp(**rec["timestamp"])
    for key, field in MOVED.items():
        if key in rec:
            setattr(entry, field, rec[key])
    if "httpRequest" in rec:
        h = rec["httpRequest"]
        secs, _, frac = h["latency"].rstrip("s").partition(".")
        entry.http_request = {
            "request_method": h["requestMethod"], "request_url": h["requestUrl"], "status": h["status"],
            "response_size": int(h.get("responseSize", 0)), "protocol": h.get("protocol", ""),
            "latency": {"seconds": int(secs), "nanos": int((frac + "000000000")[:9])},
        }  # fmt: skip
    return json.loads(
        LogEntry.to_json(entry, use_integers_for_enums=False, including_default_value_fields=False)
    )


def test_log_entry_json_is_what_an_export_holds(tmp_path) -> None:
    rec = next(r for r in run_records(tmp_path) if "httpRequest" in r)
    entry = to_log_entry(rec)
    assert isinstance(entry["jsonPayload"]["pcap"]["num"], float)  # integers became doubles
    assert entry["trace"] == f"projects/proj/traces/{TRACE}" and "labels" in entry
    assert isinstance(entry["httpRequest"]["responseSize"], str)
    back = from_log_entry(entry)
    assert (
        back["pcap"] == rec["pcap"]
        and back["logging.googleapis.com/trace"] == rec["logging.googleapis.com/trace"]
    )
    assert back["httpRequest"]["status"] == 503 and back["timestamp"] == rec["timestamp"]


@pytest.mark.parametrize("layout", ["gcloud-array", "sink-ndjson"])
def test_merge_reads_exported_log_entries_back_into_records(tmp_path, layout) -> None:
    recs = run_records(tmp_path)
    assert any("conn" in r for r in recs) and any("httpRequest" in r for r in recs)
    entries = [to_log_entry(r) for r in recs]
    export = tmp_path / "export.json"
    if layout == "gcloud-array":  # gcloud lists newest first
        export.write_text(json.dumps(entries[::-1], indent=2))
    else:  # a sink's file: one entry a line, in time order
        export.write_text("".join(json.dumps(e) + "\n" for e in entries))
    plain = tmp_path / "records.json"
    plain.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    for src, out in ((export, out_a), (plain, out_b)):
        r = CliRunner().invoke(app, ["merge", "-F", "ndjson", "-o", str(out), str(src)])
        assert r.exit_code == 0, r.stderr
    got = [json.loads(x) for x in out_a.read_text().splitlines()]
    want = [json.loads(x) for x in out_b.read_text().splitlines()]
    assert len(got) == len(recs)
    for g, w in zip(got, want, strict=True):
        w_http = w.pop("httpRequest", None)
        g_http = g.pop("httpRequest", None)
        assert g == w
        if w_http:  # the typed HttpRequest keeps what it has fields for
            assert {k: g_http[k] for k in ("requestMethod", "status", "latency")} == {
                k: w_http[k] for k in ("requestMethod", "status", "latency")
            }


def test_connection_records_sort_with_their_packets(tmp_path) -> None:
    recs = run_records(tmp_path)
    packets = [r for r in recs if "pcap" in r]
    (tmp_path / "packets.json").write_text("".join(json.dumps(r) + "\n" for r in packets))
    conns = [r for r in recs if "conn" in r]
    (tmp_path / "conns.json").write_text("".join(json.dumps(r) + "\n" for r in conns))
    out = tmp_path / "o.json"
    parts = [str(tmp_path / "packets.json"), str(tmp_path / "conns.json")]
    r = CliRunner().invoke(app, ["merge", "-F", "ndjson", "-o", str(out), *parts])
    assert r.exit_code == 0, r.stderr
    merged = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(merged) == len(recs)
    conns = [i for i, m in enumerate(merged) if "conn" in m]
    assert len(conns) == 2
    for i in conns:  # after the connection's last packet, before any later one
        assert merged[i - 1]["pcap"]["num"] >= merged[i]["conn"]["last_num"]
    stamps = [(m["timestamp"]["seconds"], m["timestamp"]["nanos"]) for m in merged]
    assert stamps == sorted(stamps)


def test_trace_ids_are_qualified_with_the_metadata_servers_project(
    tmp_path, metadata_server
) -> None:
    """No --project and no PROJECT_ID: on Google Cloud the metadata server names it."""
    import os

    from conftest import run_pcaptool

    cap = Capture()
    conn = Conn(cap)
    conn.handshake()
    conn.client(
        f"GET / HTTP/1.1\r\nHost: x\r\ntraceparent: 00-{TRACE}-00f067aa0ba902b7-01\r\n\r\n".encode()
    )
    conn.server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    path = cap.write(tmp_path / "t.pcap")
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ID", "GOOGLE_CLOUD_PROJECT")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    traces = {}
    for name, extra in (("gcp", metadata_server.env), ("elsewhere", {})):
        r = run_pcaptool("translate", str(path), env={**env, **extra})
        assert r.returncode == 0, r.stderr
        recs = [json.loads(x) for x in r.stdout.splitlines()]
        traces[name] = {
            x["logging.googleapis.com/trace"] for x in recs if "logging.googleapis.com/trace" in x
        }
    assert traces["gcp"] == {f"projects/test-project/traces/{TRACE}"}
    assert traces["elsewhere"] == {TRACE}
