"""The report as one self-contained HTML page: inline CSS and SVG, no script, no link out
except the trace links of the worst requests (to Cloud Trace, opened only when clicked).

Everything that came off the network (URLs, paths, names) is HTML-escaped.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from urllib.parse import quote

from pcaptool import __version__
from pcaptool.report import plots
from pcaptool.report.summary import Summary

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:12px}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:8px 0}figure svg{max-width:100%;height:auto}
.totals td{font-size:14px}.url{max-width:420px;overflow-wrap:anywhere}
"""

SECTIONS = (  # (chart id, heading, table of numbers under it)
    ("latency-over-time", "Request latency", None),
    ("endpoint-percentiles", "Latency per endpoint", "endpoints"),
    ("status-over-time", "Status codes", None),
    ("tcp-trouble", "TCP trouble", None),
    ("top-talkers", "Top talkers", "top_talkers"),
    ("top-destinations", "Top destinations", "top_destinations"),
    ("dns", "DNS", "dns_failures"),
)


def _cell(value, column: str) -> str:
    if value is None:
        return "<td></td>"
    if isinstance(value, float):
        if column.endswith("_s"):
            return f'<td class="n">{value * 1000:.3f} ms</td>'
        return f'<td class="n">{value:.6g}</td>'
    if isinstance(value, int):
        return f'<td class="n">{value}</td>'
    if isinstance(value, datetime):
        return f"<td>{value.isoformat(sep=' ', timespec='microseconds')}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def _table(table_id: str, columns: list[str], rows: list[tuple]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(_cell(v, c) for v, c in zip(row, columns, strict=True)) + "</tr>"
        for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def trace_link(trace: str | None) -> str:
    """Cloud Trace's page for a trace id (`projects/P/traces/T`, or a bare `T`)."""
    if not trace:
        return ""
    project, _, tid = trace.rpartition("/traces/")
    project = project.removeprefix("projects/")
    url = "https://console.cloud.google.com/traces/list?tid=" + quote(tid, safe="")
    if project:
        url += "&project=" + quote(project, safe="")
    return f'<a href="{html.escape(url)}">{html.escape(tid)}</a>'


def _worst(s: Summary) -> str:
    result = s["worst_requests"]
    head = "".join(f"<th>{c}</th>" for c in result.columns)
    rows = []
    for r in result.dicts():
        cells = [
            _cell(r["time"], "time"),
            _cell(r["method"], "method"),
            f'<td class="url">{html.escape(r["url"] or "")}</td>',
            _cell(r["status"], "status"),
            _cell(r["latency_s"], "latency_s"),
            f"<td>{trace_link(r['trace'])}</td>",
            _cell(r["flow_id"], "flow_id"),
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = "".join(rows)
    return f'<table id="worst_requests"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render(s: Summary, title: str) -> str:
    t = s.totals
    span = ""
    if t["first_ns"] is not None:
        first = datetime.fromtimestamp(t["first_ns"] / 1e9, UTC).isoformat(timespec="seconds")
        last = datetime.fromtimestamp(t["last_ns"] / 1e9, UTC).isoformat(timespec="seconds")
        span = f"{first} – {last}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(span)} · pcaptool {__version__}</p>",
        _table(
            "totals",
            ["packets", "bytes", "requests", "connections"],
            [tuple(t[k] for k in ("packets", "bytes", "requests", "connections"))],
        ),
    ]
    for chart_id, heading, table in SECTIONS:
        parts.append(f"<h2>{heading}</h2>")
        parts.append(f'<figure id="{chart_id}">{plots.CHARTS[chart_id](s)}</figure>')
        if table is not None:
            result = s[table]
            parts.append(_table(table, result.columns, result.rows))
        if chart_id == "dns":
            result = s["dns"]
            parts.append(_table("dns_summary", result.columns, result.rows))
        if chart_id == "tcp-trouble":
            rows = [r for r in s["trouble_over_time"].rows if any(r[1:])]
            parts.append(_table("trouble_over_time", s["trouble_over_time"].columns, rows))
    parts.append("<h2>Slowest requests</h2>")
    parts.append(_worst(s))
    parts.append("</body></html>")
    return "\n".join(parts)
