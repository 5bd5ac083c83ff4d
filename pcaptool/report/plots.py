"""The report's charts as inline SVG (matplotlib, Agg): no script, no network to view them.

Static SVG was chosen over Vega/Plotly: the page needs no JavaScript (nothing to load,
nothing that can fail in a browser console), opens offline, prints, and diffs as text;
the cost is no hover tooltips, which the tables under each chart make up for.
"""

from __future__ import annotations

import io
from collections import defaultdict

from pcaptool.report.summary import Summary

STATUS_COLOURS = {  # Okabe-Ito, readable with colour-blindness
    "1xx": "#999999",
    "2xx": "#009E73",
    "3xx": "#0072B2",
    "4xx": "#E69F00",
    "5xx": "#D55E00",
    "none": "#CC79A7",
}
TROUBLE = {
    "retransmissions": "#E69F00",
    "resets": "#D55E00",
    "zero_windows": "#0072B2",
    "failed_connections": "#CC79A7",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update(
        {"svg.fonttype": "none", "svg.hashsalt": "pcaptool", "font.size": 9, "axes.grid": True}
    )
    import matplotlib.pyplot as plt

    return plt


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure(title: str, height: float = 3.2):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, height))
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
    return fig, ax


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _status_class(status) -> str:
    return "none" if status is None else f"{status // 100}xx"


def latency_over_time(s: Summary) -> str:
    fig, ax = _figure("Request latency over time (by status)")
    rows = s["latency_points"].rows
    if not rows:
        _empty(ax, "HTTP requests")
        return _svg(fig)
    groups = defaultdict(list)
    for time, latency, status in rows:
        groups[_status_class(status)].append((time, latency))
    for cls in sorted(groups):
        xs, ys = zip(*groups[cls], strict=True)
        ax.scatter(xs, ys, s=8, label=cls, color=STATUS_COLOURS.get(cls, "#000000"), alpha=0.7)
    ax.set_yscale("log")
    ax.set_ylabel("latency (s)")
    ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    return _svg(fig)


def endpoint_percentiles(s: Summary) -> str:
    rows = s["endpoints"].dicts()
    fig, ax = _figure("Latency percentiles per endpoint", 1.2 + 0.35 * max(len(rows), 2))
    if not rows:
        _empty(ax, "HTTP requests")
        return _svg(fig)
    labels = [f"{r['method'] or ''} {r['path'] or ''}"[:60] for r in rows]
    ys = range(len(rows))
    for offset, (key, colour) in zip(
        (-0.27, 0, 0.27),
        (("p50_s", "#009E73"), ("p95_s", "#E69F00"), ("p99_s", "#D55E00")),
        strict=True,
    ):
        ax.barh([y + offset for y in ys], [r[key] for r in rows], 0.27, label=key[:3], color=colour)
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    ax.set_xlabel("latency (s)")
    ax.legend(loc="lower right", fontsize=8)
    return _svg(fig)


def _stacked(ax, buckets: list, series: dict[str, list[int]], colours: dict[str, str], width_s):
    # matplotlib dates are in days; a bar stays visible on a long axis with few buckets
    span = (max(buckets) - min(buckets)).total_seconds() / 86400 if len(buckets) > 1 else 0
    width = max(width_s / 86400 * 0.9, span / 150)
    bottom = [0] * len(buckets)
    for name, values in series.items():
        ax.bar(buckets, values, width, bottom=bottom, label=name, color=colours.get(name))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.legend(loc="upper right", fontsize=8)


def status_over_time(s: Summary) -> str:
    fig, ax = _figure(f"HTTP status codes over time ({s.width_s} s buckets)")
    rows = s["status_over_time"].rows
    if not rows:
        _empty(ax, "HTTP requests")
        return _svg(fig)
    buckets = sorted({r[0] for r in rows})
    index = {b: i for i, b in enumerate(buckets)}
    series: dict[str, list[int]] = {}
    for bucket, cls, count in rows:
        series.setdefault(cls, [0] * len(buckets))[index[bucket]] += count
    _stacked(ax, buckets, dict(sorted(series.items())), STATUS_COLOURS, s.width_s)
    ax.set_ylabel("responses")
    fig.autofmt_xdate()
    return _svg(fig)


def tcp_trouble(s: Summary) -> str:
    fig, ax = _figure(f"TCP trouble over time ({s.width_s} s buckets)")
    result = s["trouble_over_time"]
    rows = [r for r in result.dicts() if any(r[k] for k in TROUBLE)]
    if not rows:
        _empty(ax, "retransmissions, resets, zero windows or failed connections")
        return _svg(fig)
    buckets = [r["bucket"] for r in rows]
    _stacked(ax, buckets, {k: [r[k] for r in rows] for k in TROUBLE}, TROUBLE, s.width_s)
    ax.set_ylabel("events")
    fig.autofmt_xdate()
    return _svg(fig)


def _top(s: Summary, name: str, label: str, title: str) -> str:
    rows = s[name].dicts()
    fig, ax = _figure(title, 1.2 + 0.3 * max(len(rows), 2))
    if not rows:
        _empty(ax, "IP packets")
        return _svg(fig)
    ax.barh([str(r[label]) for r in rows], [r["bytes"] for r in rows], color="#0072B2")
    ax.invert_yaxis()
    ax.set_xlabel("bytes on the wire")
    return _svg(fig)


def top_talkers(s: Summary) -> str:
    return _top(s, "top_talkers", "address", "Top talkers (source, by bytes)")


def top_destinations(s: Summary) -> str:
    return _top(s, "top_destinations", "destination", "Top destinations (by bytes)")


def dns(s: Summary) -> str:
    fig, ax = _figure("DNS latency over time (by rcode)")
    rows = s["dns_latency_points"].rows
    if not rows:
        totals = s["dns"].dicts()[0]
        _empty(ax, "answered DNS queries" if totals["queries"] else "DNS")
        return _svg(fig)
    groups = defaultdict(list)
    for time, latency, rcode in rows:
        groups[rcode or "?"].append((time, latency))
    for rcode in sorted(groups):
        xs, ys = zip(*groups[rcode], strict=True)
        colour = "#009E73" if rcode == "NOERROR" else "#D55E00"
        ax.scatter(xs, ys, s=10, label=rcode, color=colour, alpha=0.7)
    ax.set_ylabel("latency (s)")
    ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    return _svg(fig)


CHARTS = {
    "latency-over-time": latency_over_time,
    "endpoint-percentiles": endpoint_percentiles,
    "status-over-time": status_over_time,
    "tcp-trouble": tcp_trouble,
    "top-talkers": top_talkers,
    "top-destinations": top_destinations,
    "dns": dns,
}
