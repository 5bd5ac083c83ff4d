"""Throughput of `pcaptool translate` with HTTP analysis, one worker and two, beside
`tshark -T ek` on the same capture in the same run; peak memory of each.

Makes the realistic HTTP capture of bench/gen_http.py (200,000 packets by default) unless
one is given, then prints packets/s (wall clock) and CPU seconds of:

- `pcaptool translate --no-http` (L2-L4 only, for reference),
- `pcaptool translate` (reassembly, HTTP/1.x, HTTP/2, trace context),
- `pcaptool translate --workers 2` and `--workers 2 --ordered`,
- `tshark -T ek` (on the first --tshark-packets packets: it is slow on this much TCP),

and the ratios the issue sets targets for (1 worker >= 40,000 packets/s and >= 10x tshark
-T ek; 2 workers >= 1.5x one; peak < 250 MB). Other work on the machine slows the wall
clock, so the CPU seconds (user + sys of the command and its workers) are printed too.

    python bench/translate_http.py [--packets 200000] [--capture FILE] [--tshark-packets N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import count, ensure_capture, run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--capture", type=Path)
    ap.add_argument("--tshark-packets", type=int, default=20_000)
    args = ap.parse_args()

    capture = ensure_capture(args.capture, args.packets)
    n = count(capture)
    print(f"capture: {capture} ({n} packets), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    base = [sys.executable, "-m", "pcaptool", "translate"]
    rows = {}
    for label, extra in (
        ("translate --no-http", ["--no-http"]),
        ("translate (HTTP analysis)", []),
        ("translate --workers 2", ["--workers", "2"]),
        ("translate --workers 2 --ordered", ["--workers", "2", "--ordered"]),
    ):
        wall, cpu, rss = run([*base, *extra, str(capture)])
        rows[label] = (n / wall, cpu, rss)
        print(
            f"{label:<34} {wall:7.2f} s {n / wall:>10,.0f} packets/s  "
            f"cpu {cpu:6.2f} s  peak {rss / 1024:6.1f} MB"
        )

    one = rows["translate (HTTP analysis)"][0]
    two = rows["translate --workers 2"][0]
    two_o = rows["translate --workers 2 --ordered"][0]
    peak = max(r[2] for r in rows.values()) / 1024
    print(f"1 worker: {one:,.0f} packets/s (target >= 40,000)")
    print(f"--workers 2: {two / one:.2f}x one worker, ordered {two_o / one:.2f}x (target >= 1.5x)")
    print(f"peak memory: {peak:.1f} MB (target < 250 MB)")
    # what an otherwise idle machine would show: CPU seconds do not grow with load
    cpu1 = rows["translate (HTTP analysis)"][1]
    cpu2 = rows["translate --workers 2"][1]
    print(
        f"CPU-bound view: 1 worker {n / cpu1:,.0f} packets per CPU second; --workers 2 "
        f"spends {cpu2 / cpu1:.2f}x the CPU, so on 2 idle cores {2 * cpu1 / cpu2:.2f}x one worker"
    )
    if shutil.which("tshark") is None:
        print("tshark not installed: no ratio")
        return
    tn = min(args.tshark_packets or n, n)
    wall, cpu, rss = run(["tshark", "-r", str(capture), "-c", str(tn), "-T", "ek"])
    theirs = tn / wall
    print(
        f"{'tshark -T ek':<34} {wall:7.2f} s {theirs:>10,.0f} packets/s  "
        f"cpu {cpu:6.2f} s  peak {rss / 1024:6.1f} MB  ({tn} packets)"
    )
    print(
        f"ratio: 1 worker {one / theirs:.1f}x tshark -T ek (target >= 10x), 2 workers {two / theirs:.1f}x"
    )


if __name__ == "__main__":
    main()
