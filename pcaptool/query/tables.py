"""Flatten records into the three tables of `pcaptool query`, in an on-disk DuckDB database.

- `packets`: one row per packet record (`pcap` present).
- `requests`: one row per HTTP exchange, from the records that carry Cloud Logging's
  `httpRequest` (the record that completed the response).
- `connections`: one row per connection record (`conn`, written by `--flows`).
- `dns` (a view): one row per DNS response, with the query it answers and its latency.

Every table keeps the whole record as JSON in `record`, so a field without a column of its
own is still reachable (`record->>'$.tls.sni'`). Rows are streamed to NDJSON files in a
scratch directory and loaded by DuckDB with fixed column types, so memory stays bounded
by DuckDB's `memory_limit` whatever the size of the run (DuckDB spills to disk past it).
Loading runs on one DuckDB thread: a parallel `read_json` holds a buffer per thread
beside the limit (it ran out of memory at 64 MB on two cores) and would need insertion
order given up to stay within it; queries then use every core.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import orjson

from pcaptool.errors import PcapToolError

# name -> DuckDB type, in column order; `time` columns are filled from `*_ns` in SQL.
PACKETS = {
    "num": "BIGINT",
    "file": "VARCHAR",
    "ts_ns": "BIGINT",
    "severity": "VARCHAR",
    "message": "VARCHAR",
    "flow_id": "VARCHAR",
    "proto": "VARCHAR",
    "src": "VARCHAR",
    "dst": "VARCHAR",
    "sport": "INTEGER",
    "dport": "INTEGER",
    "len": "INTEGER",
    "caplen": "INTEGER",
    "tcp_flags": "VARCHAR",
    "tcp_analysis": "VARCHAR[]",
    "dns_id": "INTEGER",
    "dns_qr": "VARCHAR",
    "dns_qname": "VARCHAR",
    "dns_rcode": "VARCHAR",
    "dns_latency_s": "DOUBLE",
    "http_type": "VARCHAR",
    "http_status": "INTEGER",
    "http_error": "VARCHAR",
    "trace": "VARCHAR",
    "record": "JSON",
}
REQUESTS = {
    "ts_ns": "BIGINT",
    "start_ns": "BIGINT",
    "method": "VARCHAR",
    "url": "VARCHAR",
    "host": "VARCHAR",
    "path": "VARCHAR",
    "status": "INTEGER",
    "latency_s": "DOUBLE",
    "protocol": "VARCHAR",
    "client_ip": "VARCHAR",
    "server_ip": "VARCHAR",
    "user_agent": "VARCHAR",
    "request_size": "BIGINT",
    "response_size": "BIGINT",
    "grpc_status": "INTEGER",
    "trace": "VARCHAR",
    "span_id": "VARCHAR",
    "flow_id": "VARCHAR",
    "num": "BIGINT",
    "file": "VARCHAR",
    "record": "JSON",
}
CONNECTIONS = {
    "ts_ns": "BIGINT",
    "start_ns": "BIGINT",
    "flow_id": "VARCHAR",
    "proto": "VARCHAR",
    "state": "VARCHAR",
    "outcome": "VARCHAR",
    "duration_s": "DOUBLE",
    "orig_ip": "VARCHAR",
    "orig_port": "INTEGER",
    "resp_ip": "VARCHAR",
    "resp_port": "INTEGER",
    "orig_packets": "BIGINT",
    "resp_packets": "BIGINT",
    "orig_bytes": "BIGINT",
    "resp_bytes": "BIGINT",
    "retransmissions": "BIGINT",
    "service": "VARCHAR",
    "http_requests": "BIGINT",
    "severity": "VARCHAR",
    "record": "JSON",
}
TABLES = {"packets": PACKETS, "requests": REQUESTS, "connections": CONNECTIONS}

# DNS responses with the query each answers (same id, mirrored endpoints, the latest query
# before it): the latency is the record's own `dns.latency` where translate gave one.
DNS_VIEW = """
CREATE VIEW dns AS
WITH q AS (SELECT ts_ns, src, dst, coalesce(sport, -1) AS sport, coalesce(dport, -1) AS dport,
                  dns_id FROM packets WHERE dns_qr = 'query'),
     r AS (SELECT time, ts_ns, src, dst, coalesce(sport, -1) AS sport,
                  coalesce(dport, -1) AS dport, dns_id, dns_qname, dns_rcode, dns_latency_s,
                  flow_id FROM packets WHERE dns_qr = 'response')
SELECT r.time, r.dst AS client, r.src AS server, r.dns_id AS id, r.dns_qname AS name,
       r.dns_rcode AS rcode, coalesce(r.dns_latency_s, (r.ts_ns - q.ts_ns) / 1e9) AS latency_s,
       r.flow_id
FROM r ASOF LEFT JOIN q
  ON r.dns_id = q.dns_id AND r.dst = q.src AND r.src = q.dst AND r.dport = q.sport
 AND r.sport = q.dport AND r.ts_ns >= q.ts_ns
"""

TRACE = "logging.googleapis.com/trace"
SPAN = "logging.googleapis.com/spanId"
LABELS = "logging.googleapis.com/labels"


def _ts_ns(rec: dict) -> int | None:
    ts = rec.get("timestamp")
    if isinstance(ts, dict):
        return int(ts.get("seconds", 0)) * 1_000_000_000 + int(ts.get("nanos", 0))
    return None


def _num(value) -> int | None:
    """An integer field, whether a record gave it as a number or as int64 text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _seconds(value) -> float | None:
    """Cloud Logging's duration text `"0.0123s"`, or nanoseconds as a number."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1e9
    return None


def _analysis(tcp: dict) -> list[str] | None:
    """The names of the TCP expert findings on a packet, whatever their JSON shape."""
    found = tcp.get("analysis")
    if isinstance(found, dict):  # tshark's names: retransmission, zero_window, …
        return [str(x) for x in found.get("flags") or ()]
    if isinstance(found, list):
        return [str(x) for x in found]
    return None


def _packet_row(rec: dict, ts_ns: int | None) -> dict:
    pcap, ip = rec["pcap"], rec.get("ip") or {}
    l4 = rec.get("tcp") or rec.get("udp") or {}
    tcp, dns, http = rec.get("tcp") or {}, rec.get("dns") or {}, rec.get("http") or {}
    questions = dns.get("questions") or [{}]
    err = http.get("error")
    return {
        "num": pcap.get("num"),
        "file": pcap.get("file"),
        "ts_ns": ts_ns,
        "severity": rec.get("severity"),
        "message": rec.get("message"),
        "flow_id": (rec.get("flow") or {}).get("id"),
        "proto": str((rec.get(LABELS) or {}).get("proto") or "").upper() or None,
        "src": ip.get("src"),
        "dst": ip.get("dst"),
        "sport": l4.get("sport"),
        "dport": l4.get("dport"),
        "len": pcap.get("len"),
        "caplen": pcap.get("caplen"),
        "tcp_flags": tcp.get("flags_str"),
        "tcp_analysis": _analysis(tcp),
        "dns_id": dns.get("id"),
        "dns_qr": dns.get("qr"),
        "dns_qname": questions[0].get("name") if isinstance(questions[0], dict) else None,
        "dns_rcode": dns.get("rcode"),
        "dns_latency_s": _seconds(dns.get("latency")),
        "http_type": http.get("type"),
        "http_status": _num(http.get("status")),
        "http_error": err.get("code") if isinstance(err, dict) else None,
        "trace": rec.get(TRACE),
    }


def _request_row(rec: dict, ts_ns: int | None) -> dict:
    req, http = rec["httpRequest"], rec.get("http") or {}
    latency = _seconds(req.get("latency"))
    asked = http.get("request") or {}
    target = asked.get("target") or http.get("target") or ""
    return {
        "ts_ns": ts_ns,
        "start_ns": ts_ns - int(latency * 1e9) if ts_ns is not None and latency else ts_ns,
        "method": req.get("requestMethod"),
        "url": req.get("requestUrl"),
        "host": asked.get("host") or http.get("host"),
        "path": target.split("?", 1)[0] or None,
        "status": _num(req.get("status")),
        "latency_s": latency,
        "protocol": req.get("protocol"),
        "client_ip": req.get("remoteIp"),
        "server_ip": req.get("serverIp"),
        "user_agent": req.get("userAgent"),
        "request_size": _num(req.get("requestSize")),
        "response_size": _num(req.get("responseSize")),
        "grpc_status": _num(http.get("grpc_status")),
        "trace": rec.get(TRACE),
        "span_id": rec.get(SPAN),
        "flow_id": (rec.get("flow") or {}).get("id"),
        "num": (rec.get("pcap") or {}).get("num"),
        "file": (rec.get("pcap") or {}).get("file"),
    }


def _connection_row(rec: dict, ts_ns: int | None) -> dict:
    conn = rec["conn"]
    orig, resp = conn.get("orig") or {}, conn.get("resp") or {}
    duration = conn.get("duration")
    retrans = [_num(side.get("retransmissions")) for side in (orig, resp)]
    outcome = conn.get("outcome")
    if isinstance(outcome, dict):
        outcome = outcome.get("state") or outcome.get("name")
    return {
        "ts_ns": ts_ns,
        "start_ns": ts_ns - duration if ts_ns is not None and isinstance(duration, int) else ts_ns,
        "flow_id": (rec.get("flow") or {}).get("id"),
        "proto": str(conn.get("proto") or "").upper() or None,
        "state": conn.get("state"),
        "outcome": outcome,
        "duration_s": duration / 1e9 if isinstance(duration, (int, float)) else None,
        "orig_ip": orig.get("ip"),
        "orig_port": orig.get("port"),
        "resp_ip": resp.get("ip"),
        "resp_port": resp.get("port"),
        "orig_packets": _num(orig.get("packets")),
        "resp_packets": _num(resp.get("packets")),
        "orig_bytes": _num(orig.get("bytes")),
        "resp_bytes": _num(resp.get("bytes")),
        "retransmissions": sum(r for r in retrans if r)
        if any(r is not None for r in retrans)
        else None,
        "service": conn.get("service"),
        "http_requests": _num(conn.get("http_requests")),
        "severity": rec.get("severity"),
    }


class Tables:
    """A scratch DuckDB database holding the three tables of one set of records."""

    def __init__(self, workdir: str | os.PathLike | None = None, memory_limit: str = "256MB"):
        try:
            import duckdb
        except ImportError:
            raise PcapToolError(
                "pcaptool query/report need DuckDB: pip install 'pcaptool[analysis]'"
            ) from None
        self._tmp = tempfile.TemporaryDirectory(prefix="pcaptool-query-", dir=workdir)
        self.dir = Path(self._tmp.name)
        self.db = duckdb.connect(str(self.dir / "run.duckdb"))
        self.memory_limit = memory_limit
        self.db.execute(f"SET memory_limit = '{memory_limit}'")
        # Freed memory goes back to the system within 16 MB (the allocator keeps up to
        # 128 MB by default beside the limit: the peak then depends on timing).
        self.db.execute("SET allocator_flush_threshold = '16MB'")
        self.db.execute("SET allocator_background_threads = true")
        self.db.execute(f"SET temp_directory = '{self.dir / 'spill'}'")
        self.counts = dict.fromkeys(TABLES, 0)

    def load(self, records: Iterable[dict]) -> Tables:
        """Stream RECORDS into the tables; call once."""
        files = {name: open(self.dir / f"{name}.ndjson", "wb") for name in TABLES}  # noqa: SIM115
        try:
            for rec in records:
                ts_ns = _ts_ns(rec)
                if "pcap" in rec:
                    self._write(files, "packets", _packet_row(rec, ts_ns), rec)
                    if isinstance(rec.get("httpRequest"), dict):
                        self._write(files, "requests", _request_row(rec, ts_ns), rec)
                elif isinstance(rec.get("conn"), dict):
                    self._write(files, "connections", _connection_row(rec, ts_ns), rec)
        finally:
            for f in files.values():
                f.close()
        import duckdb

        threads = self.db.execute("SELECT current_setting('threads')").fetchone()[0]
        self.db.execute("SET threads = 1")
        try:
            for name, columns in TABLES.items():
                self._create(name, columns)
        except duckdb.OutOfMemoryException:
            raise PcapToolError(
                f"query: DuckDB's memory limit {self.memory_limit} is too small to load the "
                "records; give more with --memory (256MB is the default)"
            ) from None
        except duckdb.Error as exc:
            reason = " ".join(str(exc).split())
            raise PcapToolError(f"query: loading the records failed: {reason}") from None
        finally:
            self.db.execute(f"SET threads = {int(threads)}")
        self.db.execute(DNS_VIEW)
        return self

    def _write(self, files, table: str, row: dict, rec: dict) -> None:
        row["record"] = rec
        files[table].write(orjson.dumps(row) + b"\n")
        self.counts[table] += 1

    def _create(self, name: str, columns: dict[str, str]) -> None:
        spec = ", ".join(f"'{col}': '{typ}'" for col, typ in columns.items())
        path = self.dir / f"{name}.ndjson"
        times = "make_timestamp(ts_ns // 1000) AS time"
        if "start_ns" in columns:
            times += ", make_timestamp(start_ns // 1000) AS start_time"
        self.db.execute(
            f"CREATE TABLE {name} AS SELECT {times}, * FROM read_json('{path}', "
            f"format = 'newline_delimited', columns = {{{spec}}})"
        )
        path.unlink()

    def close(self) -> None:
        self.db.close()
        self._tmp.cleanup()

    def __enter__(self) -> Tables:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
