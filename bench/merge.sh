#!/usr/bin/env bash
# Benchmark `pcaptool merge` against `mergecap -w` in the same run.
#
# Synthesizes a 400k-packet capture (realistic frame sizes: ACKs, full MSS segments,
# mid-size requests), splits it round-robin into 8 interleaved parts (the worst case for
# a k-way merge: the input changes at every packet), merges the parts with both tools,
# checks the outputs hold the same packets, and prints packets/s of each, the ratio
# (target >= 0.5x mergecap) and pcaptool's peak RSS (target < 100 MB).
#
# Runs on plain parts, on the same parts gzip'd (what the sidecar uploads), and on the
# same packets cut into consecutive parts (rotated parts do not overlap in time).
# Exit 0 when both targets hold on both runs.
#
# Usage: bench/merge.sh [PACKETS] [PARTS]      (defaults 400000 8)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mergecap >/dev/null || { echo "bench/merge.sh: mergecap is not installed" >&2; exit 2; }
work=$(mktemp -d /tmp/ptmrg-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 - "$work" "${1:-400000}" "${2:-8}" <<'PY'
import itertools
import os
import random
import subprocess
import sys
import time

from pcaptool.capfile.reader import PcapWriter, read_packets

work, total, nparts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
parts = [os.path.join(work, f"part-{i:02d}.pcap") for i in range(nparts)]
# the same packets cut into consecutive stretches, as rotate writes them
rotated = [os.path.join(work, f"rotated-{i:02d}.pcap") for i in range(nparts)]
files = [open(p, "wb", buffering=1 << 20) for p in parts + rotated]
writers = [PcapWriter(f, 1, nanosecond=False) for f in files]
base = bytes(rng.randrange(256) for _ in range(1514))
ts = 1_700_000_000 * 10**9
for n in range(total):
    ts += rng.randrange(1, 200) * 1000  # microsecond steps, as tcpdump writes them
    r = rng.random()
    size = 66 if r < 0.45 else 1514 if r < 0.8 else rng.randrange(90, 700)
    writers[n % nparts].write(ts, base[:size])
    writers[nparts + n * nparts // total].write(ts, base[:size])
for f in files:
    f.close()
size_mb = sum(os.path.getsize(p) for p in parts) / 1e6


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run(cmd, output, repeat=3):
    """Best of REPEAT runs: wall s, CPU s, peak RSS MB (other jobs share this machine).

    Peak RSS comes from GNU time (package `time`): a child forked from this Python
    driver would report the driver's pages as its own until exec.
    """
    best = None
    for _ in range(repeat):
        if os.path.exists(output):
            os.unlink(output)  # truncating the last run's output would be billed to this one
        stats = os.path.join(work, "time.txt")
        argv = [GNU_TIME, "-f", "%M", "-o", stats, *cmd] if GNU_TIME else cmd
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"bench: {cmd[0]} failed")
        rss_kib = int(open(stats).read().split()[-1]) if GNU_TIME else usage.ru_maxrss
        # CPU time is steadier than wall time on a busy machine
        got = (elapsed, usage.ru_utime + usage.ru_stime, rss_kib / 1024)
        best = got if best is None else (min(best[0], got[0]), min(best[1], got[1]), max(best[2], got[2]))
    return best


def same_packets(a, b):
    # streamed, so the driver stays small: a forked child's peak RSS counts the
    # parent's pages until exec
    missing = object()
    return all(
        x == y
        for x, y in itertools.zip_longest(
            ((p.ts_ns, p.data) for p in read_packets(a)),
            ((p.ts_ns, p.data) for p in read_packets(b)),
            fillvalue=missing,
        )
    )


def compare(label, inputs):
    out_m, out_p = os.path.join(work, "mergecap.pcap"), os.path.join(work, "pcaptool.pcap")
    t_m, cpu_m, rss_m = run(["mergecap", "-F", "pcap", "-w", out_m, *inputs], out_m)
    t_p, cpu_p, rss_p = run([sys.executable, "-m", "pcaptool", "merge", *inputs, "-o", out_p], out_p)
    same = same_packets(out_m, out_p)
    print(f"{label}:")
    for name, t, cpu, rss in (("mergecap -w   ", t_m, cpu_m, rss_m), ("pcaptool merge", t_p, cpu_p, rss_p)):
        print(
            f"  {name}: {t:5.2f} s wall {total / t:>10,.0f} packets/s | "
            f"{cpu:5.2f} s CPU {total / cpu:>10,.0f} packets/s | peak RSS {rss:5.1f} MB"
        )
    print(
        f"  ratio pcaptool/mergecap: {t_m / t_p:.2f}x wall, {cpu_m / cpu_p:.2f}x CPU "
        f"(target >= 0.5x); pcaptool peak RSS {rss_p:.1f} MB (target < 100 MB); "
        f"same packets: {same}"
    )
    return same and cpu_m / cpu_p >= 0.5 and rss_p < 100


print(f"input: {total} packets in {nparts} interleaved parts, {size_mb:.0f} MB")
ok = compare("plain pcap parts, interleaved round-robin", parts)
gz_parts = []
for p in parts:
    subprocess.run(["gzip", "-1", "-k", p], check=True)
    gz_parts.append(p + ".gz")
ok = compare("gzip parts (.pcap.gz), interleaved round-robin", gz_parts) and ok
ok = compare("plain pcap parts, consecutive (as rotated)", rotated) and ok
sys.exit(0 if ok else 1)
PY
