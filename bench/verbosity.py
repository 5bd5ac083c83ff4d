"""Bytes per JSON record at each PCAP_VERBOSITY level (Cloud Logging bills by the byte).

Makes bench/gen_http.py's capture (20,000 packets by default) unless one is given, runs
`pcaptool translate --verbosity LEVEL` on it for INFO and DEBUG and prints records, bytes
and bytes per record of each, and INFO's share of DEBUG.

    python bench/verbosity.py [--packets 20000] [--capture FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, ensure_capture  # noqa: E402


def measure(capture: Path, level: str) -> tuple[int, int]:
    """(records, bytes) of translate's output at `level`."""
    cmd = [sys.executable, "-m", "pcaptool", "translate", "--verbosity", level, str(capture)]
    out = subprocess.run(cmd, check=True, capture_output=True, cwd=REPO).stdout
    return out.count(b"\n"), len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--capture", type=Path)
    args = ap.parse_args()
    capture = ensure_capture(args.capture, args.packets)
    sizes = {}
    for level in ("DEBUG", "INFO"):
        records, size = measure(capture, level)
        sizes[level] = size
        print(f"{level:5} {records} records, {size} bytes, {size / records:.0f} bytes/record")
    print(f"INFO is {100 * sizes['INFO'] / sizes['DEBUG']:.1f}% of DEBUG")


if __name__ == "__main__":
    main()
