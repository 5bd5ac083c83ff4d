"""What `pcaptool query` and `pcaptool report` cost over translating the same capture.

Both translate the capture (with --flows) and load the records into DuckDB; the ratio to
`pcaptool translate --flows` alone says what the tables and the charts add.
Usage: python bench/report.py [--capture FILE] [--packets N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchlib import ensure_capture, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--capture", type=Path)
    ap.add_argument("--packets", type=int, default=200_000)
    args = ap.parse_args()
    capture = ensure_capture(args.capture, args.packets)
    py = [sys.executable, "-m", "pcaptool"]
    sql = "SELECT path, quantile_cont(latency_s, 0.99) FROM requests GROUP BY path"
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        runs = {
            "translate --flows": py + ["translate", "--flows", str(capture)],
            "query": py + ["query", sql, str(capture), "-o", str(Path(tmp) / "q.csv")],
            "report": py + ["report", str(capture), "-o", str(page), "-q"],
        }
        figures = {name: run(cmd) for name, cmd in runs.items()}
        size = page.stat().st_size
    base = figures["translate --flows"][0]
    for name, (wall, cpu, rss) in figures.items():
        print(
            f"{name:18} {wall:6.1f} s wall {cpu:6.1f} s CPU {rss // 1024:5d} MB peak  {wall / base:4.2f}x translate"
        )
    print(f"report page: {size} bytes")


if __name__ == "__main__":
    main()
