#!/usr/bin/env python3
"""Rotate throughput: `pcaptool rotate --max-bytes` beside `tcpdump -r -w -C` (same file, same run).

Both cut the same synthesized capture (bench/compress.py's generator, default 200 MB)
into ~20 MB parts; prints MB/s and packets/s of each and the ratio. rotate's figure
includes starting Python and fsyncing every part.

    python3 bench/rotate.py [--size-mb 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compress import synthesize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=200)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(prefix="pcaptool-bench-") as tmp:
        src = Path(tmp) / "capture.pcap"
        packets = synthesize(src, int(args.size_mb * 1e6))
        mb = src.stat().st_size / 1e6

        ours = Path(tmp) / "rotate"
        t = time.perf_counter()
        with open(src, "rb") as stdin:
            out = subprocess.run(
                [sys.executable, "-m", "pcaptool", "rotate", "--dir", str(ours)]
                + ["--max-bytes", "20000000"],
                stdin=stdin,
                capture_output=True,
                env=env,
                check=True,
            )
        t_ours = time.perf_counter() - t
        n_ours = len(out.stdout.splitlines())

        ref = Path(tmp) / "tcpdump"
        ref.mkdir()
        t = time.perf_counter()
        subprocess.run(
            ["tcpdump", "-Z", "root", "-r", str(src), "-w", str(ref / "part"), "-C", "20"],
            capture_output=True,
            check=True,
        )
        t_ref = time.perf_counter() - t
        n_ref = len(list(ref.iterdir()))

        print(f"capture: {mb:.1f} MB, {packets} packets")
        print(
            f"tcpdump -C 20    : {mb / t_ref:8.1f} MB/s {packets / t_ref / 1e3:8.0f} kpkt/s  {n_ref} parts"
        )
        print(
            f"pcaptool rotate  : {mb / t_ours:8.1f} MB/s {packets / t_ours / 1e3:8.0f} kpkt/s  {n_ours} parts"
        )
        print(f"rotate runs at {t_ref / t_ours:.2f}x tcpdump's speed")


if __name__ == "__main__":
    main()
