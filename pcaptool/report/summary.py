"""The numbers of a report, each computed by one SQL query over the query tables."""

from __future__ import annotations

from dataclasses import dataclass, field

# Bucket widths for "over time" charts: the smallest that gives at most MAX_BUCKETS.
_WIDTHS_S = (1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400)
MAX_BUCKETS = 120
SCATTER_POINTS = 5000  # latency scatter: at most this many requests (reservoir sample)
TOP = 10
WORST = 20

RETRANSMITTED = (
    "len(list_filter(coalesce(tcp_analysis, []), lambda x: x LIKE '%retransmission%')) > 0"
)
ZERO_WINDOW = "list_contains(coalesce(tcp_analysis, []), 'zero_window')"
FAILED_CONNECTION = (
    "(state IN ('REJ', 'S0') OR coalesce(outcome, '') IN ('refused', 'timeout', 'reset'))"
)

# Each query's text is part of the report's contract: docs/query.md shows them.
QUERIES = {
    "totals": """
        SELECT (SELECT count(*) FROM packets) AS packets,
               (SELECT coalesce(sum(len), 0) FROM packets) AS bytes,
               (SELECT count(*) FROM requests) AS requests,
               (SELECT count(*) FROM connections) AS connections,
               (SELECT min(ts_ns) FROM packets) AS first_ns,
               (SELECT max(ts_ns) FROM packets) AS last_ns""",
    "latency_points": f"""
        SELECT time, latency_s, status FROM requests WHERE latency_s IS NOT NULL
        USING SAMPLE {SCATTER_POINTS} ROWS (reservoir, 42)""",
    "endpoints": f"""
        SELECT method, path, count(*) AS requests,
               quantile_cont(latency_s, 0.5) AS p50_s,
               quantile_cont(latency_s, 0.95) AS p95_s,
               quantile_cont(latency_s, 0.99) AS p99_s,
               count(*) FILTER (WHERE status >= 500) AS errors_5xx
        FROM requests WHERE latency_s IS NOT NULL
        GROUP BY method, path ORDER BY requests DESC, path LIMIT {TOP}""",
    "status_over_time": """
        SELECT time_bucket(to_seconds($width), time) AS bucket,
               CASE WHEN status IS NULL THEN 'none' ELSE (status // 100)::VARCHAR || 'xx' END
                 AS class,
               count(*) AS requests
        FROM requests GROUP BY ALL ORDER BY bucket, class""",
    "trouble_over_time": f"""
        WITH p AS (
          SELECT time_bucket(to_seconds($width), time) AS bucket,
                 count(*) FILTER (WHERE {RETRANSMITTED}) AS retransmissions,
                 count(*) FILTER (WHERE tcp_flags LIKE 'R%') AS resets,
                 count(*) FILTER (WHERE {ZERO_WINDOW}) AS zero_windows
          FROM packets WHERE proto = 'TCP' GROUP BY ALL),
        c AS (
          SELECT time_bucket(to_seconds($width), start_time) AS bucket,
                 count(*) AS failed_connections
          FROM connections WHERE {FAILED_CONNECTION} GROUP BY ALL)
        SELECT bucket, coalesce(retransmissions, 0) AS retransmissions,
               coalesce(resets, 0) AS resets, coalesce(zero_windows, 0) AS zero_windows,
               coalesce(failed_connections, 0) AS failed_connections
        FROM p FULL OUTER JOIN c USING (bucket) ORDER BY bucket""",
    "top_talkers": f"""
        SELECT src AS address, sum(len) AS bytes, count(*) AS packets
        FROM packets WHERE src IS NOT NULL
        GROUP BY src ORDER BY bytes DESC, address LIMIT {TOP}""",
    "top_destinations": f"""
        SELECT CASE WHEN dport IS NULL THEN dst WHEN contains(dst, ':') THEN '[' || dst || ']:' || dport
                    ELSE dst || ':' || dport END AS destination, sum(len) AS bytes,
               count(*) AS packets
        FROM packets WHERE dst IS NOT NULL
        GROUP BY destination ORDER BY bytes DESC, destination LIMIT {TOP}""",
    "dns": """
        SELECT (SELECT count(*) FROM packets WHERE dns_qr = 'query') AS queries,
               count(*) AS responses,
               count(*) FILTER (WHERE rcode <> 'NOERROR') AS failures,
               quantile_cont(latency_s, 0.5) AS p50_s,
               quantile_cont(latency_s, 0.95) AS p95_s,
               max(latency_s) AS max_s
        FROM dns""",
    "dns_failures": f"""
        SELECT rcode, name, count(*) AS responses FROM dns WHERE rcode <> 'NOERROR'
        GROUP BY ALL ORDER BY responses DESC, name LIMIT {TOP}""",
    "dns_latency_points": f"""
        SELECT time, latency_s, rcode FROM dns
        WHERE latency_s IS NOT NULL USING SAMPLE {SCATTER_POINTS} ROWS (reservoir, 42)""",
    "worst_requests": f"""
        SELECT time, method, url, status, latency_s, trace, flow_id
        FROM requests WHERE latency_s IS NOT NULL
        ORDER BY latency_s DESC, time LIMIT {WORST}""",
}


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple]

    def dicts(self) -> list[dict]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass
class Summary:
    width_s: int
    results: dict[str, Result] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Result:
        return self.results[name]

    @property
    def totals(self) -> dict:
        return self["totals"].dicts()[0]


def bucket_width(first_ns: int | None, last_ns: int | None) -> int:
    """Seconds per bucket: the smallest width giving at most MAX_BUCKETS buckets."""
    span = ((last_ns or 0) - (first_ns or 0)) / 1e9
    for width in _WIDTHS_S:
        if span / width <= MAX_BUCKETS:
            return width
    return _WIDTHS_S[-1]


def run(db, name: str, width_s: int | None = None) -> Result:
    sql = QUERIES[name]
    cur = db.execute(sql, {"width": width_s}) if "$width" in sql else db.execute(sql)
    return Result([d[0] for d in cur.description], cur.fetchall())


def summarize(db) -> Summary:
    """Every number of the report from the tables in DB."""
    totals = run(db, "totals")
    first_ns, last_ns = totals.rows[0][4], totals.rows[0][5]
    summary = Summary(bucket_width(first_ns, last_ns), {"totals": totals})
    for name in QUERIES:
        if name != "totals":
            summary.results[name] = run(db, name, summary.width_s)
    return summary
