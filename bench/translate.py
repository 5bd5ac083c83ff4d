"""Throughput of `pcaptool translate` beside `tshark -T ek` on the same capture, same run.

Makes a realistic HTTP capture (bench/gen_http.py, default 200,000 packets) unless one is
given, then prints packets/s of each, their ratio and pcaptool's peak memory.

    python bench/translate.py [--packets 200000] [--capture FILE] [--tshark-packets N]
                              [-- EXTRA TRANSLATE ARGS]

Issue 2's figure (L2-L4, DNS, TLS) is `python bench/translate.py -- --no-http`; without
`--no-http` the HTTP analysis runs too (bench/translate_http.py covers it, with workers).
tshark is slow on this much TCP (about 560 packets/s here), so by default it reads the
first 20,000 packets of the same file (`-c`); --tshark-packets 0 makes it read all (the
ratio came out within 5 % of the 20,000-packet one: 184x over all 200,009 packets).
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("extra", nargs="*", help="extra arguments for pcaptool translate")
    args = ap.parse_args()

    capture = ensure_capture(args.capture, args.packets)
    n = count(capture)

    secs, _cpu, rss = run(
        [sys.executable, "-m", "pcaptool", "translate", *args.extra, str(capture)]
    )
    ours = n / secs
    label = " ".join(["pcaptool translate", *args.extra])
    print(
        f"{label:<40} {n:>9} packets {secs:8.2f} s {ours:>10,.0f} packets/s  peak {rss / 1024:6.1f} MB"
    )

    if shutil.which("tshark") is None:
        print("tshark not installed: no ratio")
        return
    tn = args.tshark_packets or n
    cmd = ["tshark", "-r", str(capture), "-T", "ek"]
    if args.tshark_packets:
        cmd[3:3] = ["-c", str(tn)]
    tsecs, _cpu, _rss = run(cmd)
    theirs = tn / tsecs
    print(f"{'tshark -T ek':<40} {tn:>9} packets {tsecs:8.2f} s {theirs:>10,.0f} packets/s")
    print(f"ratio: {ours / theirs:.1f}x tshark -T ek")


if __name__ == "__main__":
    main()
