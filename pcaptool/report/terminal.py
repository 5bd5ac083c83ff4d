"""The report's summary as rich tables, for `pcaptool report` on a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pcaptool.report.summary import Summary
from pcaptool.stdio import stdout_console

SHOWN = (
    ("endpoints", "Latency per endpoint"),
    ("worst_requests", "Slowest requests"),
    ("trouble_over_time", "TCP trouble over time"),
    ("top_talkers", "Top talkers"),
    ("top_destinations", "Top destinations"),
    ("dns", "DNS"),
    ("dns_failures", "DNS failures"),
)


def _text(value, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and column.endswith("_s"):
        return f"{value * 1000:.3f} ms"
    return str(value)


def show(s: Summary, console: Console | None = None) -> None:
    console = console or stdout_console()
    t = s.totals
    console.print(
        f"[bold]{t['packets']}[/] packets, {t['bytes']} bytes, "
        f"[bold]{t['requests']}[/] HTTP requests, {t['connections']} connections"
    )
    for name, title in SHOWN:
        result = s[name]
        rows = result.rows
        if name == "trouble_over_time":
            rows = [r for r in rows if any(r[1:])]
        if not rows:
            continue
        table = Table(*result.columns, title=title, title_justify="left")
        for row in rows:
            table.add_row(*(_text(v, c) for v, c in zip(row, result.columns, strict=True)))
        console.print(table)
