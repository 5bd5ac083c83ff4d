"""Throughput of `pcaptool translate` beside `tshark -T ek` on the same capture, same run.

Makes a realistic HTTP capture (bench/gen_http.py, default 200,000 packets) unless one is
given, then prints packets/s of each, their ratio and pcaptool's peak memory.

    python bench/translate.py [--packets 200000] [--capture FILE] [--tshark-packets N]
                              [-- EXTRA TRANSLATE ARGS]

tshark is slow on this much TCP (about 1,000 packets/s here), so by default it reads the
first 20,000 packets of the same file (`-c`); --tshark-packets 0 makes it read all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def run(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of a command whose stdout is discarded."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}")
    return elapsed, usage.ru_maxrss


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def count(path: Path) -> int:
    sys.path.insert(0, str(REPO))
    from pcaptool.pcapfile import read_packets

    return sum(1 for _ in read_packets(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--capture", type=Path)
    ap.add_argument("--tshark-packets", type=int, default=20_000)
    ap.add_argument("extra", nargs="*", help="extra arguments for pcaptool translate")
    args = ap.parse_args()

    capture = args.capture
    if capture is None:
        capture = BENCH / "out" / f"http{args.packets}.pcap"
        capture.parent.mkdir(parents=True, exist_ok=True)
        if not capture.exists():
            subprocess.run(
                [sys.executable, str(BENCH / "gen_http.py"), str(capture), str(args.packets)],
                check=True,
            )
    n = count(capture)

    secs, rss = run([sys.executable, "-m", "pcaptool", "translate", *args.extra, str(capture)])
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
    tsecs, _ = run(cmd)
    theirs = tn / tsecs
    print(f"{'tshark -T ek':<40} {tn:>9} packets {tsecs:8.2f} s {theirs:>10,.0f} packets/s")
    print(f"ratio: {ours / theirs:.1f}x tshark -T ek")


if __name__ == "__main__":
    main()
