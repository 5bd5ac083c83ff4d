#!/usr/bin/env bash
# Benchmark `pcaptool merge` against `mergecap -w` in the same run.
#
# Synthesizes a 400k-packet capture (realistic frame sizes: ACKs, full MSS segments,
# mid-size requests), splits it round-robin into 8 interleaved parts (the worst case for
# a k-way merge: the input changes at every packet), merges the parts with both tools,
# checks the outputs hold the same packets, and prints packets/s of each, the ratio
# (target >= 0.5x mergecap) and pcaptool's peak RSS (target < 100 MB).
#
# Usage: bench/merge.sh [PACKETS] [PARTS]      (defaults 400000 8)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mergecap >/dev/null || { echo "bench/merge.sh: mergecap is not installed" >&2; exit 2; }
work=$(mktemp -d /tmp/ptmrg-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 - "$work" "${1:-400000}" "${2:-8}" <<'PY'
import os
import random
import subprocess
import sys
import time

from pcaptool.pcapfile import PcapWriter, read_packets

work, total, nparts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
parts = [os.path.join(work, f"part-{i:02d}.pcap") for i in range(nparts)]
files = [open(p, "wb", buffering=1 << 20) for p in parts]
writers = [PcapWriter(f, 1, nanosecond=False) for f in files]
base = bytes(rng.randrange(256) for _ in range(1514))
ts = 1_700_000_000 * 10**9
for n in range(total):
    ts += rng.randrange(1, 200) * 1000  # microsecond steps, as tcpdump writes them
    r = rng.random()
    size = 66 if r < 0.45 else 1514 if r < 0.8 else rng.randrange(90, 700)
    writers[n % nparts].write(ts, base[:size])
for f in files:
    f.close()
size_mb = sum(os.path.getsize(p) for p in parts) / 1e6


def run(cmd):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench: {cmd[0]} failed")
    return elapsed, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


out_m, out_p = os.path.join(work, "mergecap.pcap"), os.path.join(work, "pcaptool.pcap")
t_m, rss_m = run(["mergecap", "-F", "pcap", "-w", out_m, *parts])
t_p, rss_p = run([sys.executable, "-m", "pcaptool", "merge", *parts, "-o", out_p])
same = [(p.ts_ns, p.data) for p in read_packets(out_m)] == [
    (p.ts_ns, p.data) for p in read_packets(out_p)
]
print(f"input: {total} packets, {nparts} interleaved parts, {size_mb:.0f} MB")
print(f"mergecap -w     : {t_m:6.2f} s  {total / t_m:>10,.0f} packets/s  peak RSS {rss_m:5.1f} MB")
print(f"pcaptool merge  : {t_p:6.2f} s  {total / t_p:>10,.0f} packets/s  peak RSS {rss_p:5.1f} MB")
print(f"ratio pcaptool/mergecap: {t_m / t_p:.2f}x (target >= 0.5x); "
      f"pcaptool peak RSS {rss_p:.1f} MB (target < 100 MB); same packets: {same}")
sys.exit(0 if same else 1)
PY
