#!/usr/bin/env bash
# The sidecar under load with JSON on (issue 13): JSON must never cost pcap packets.
#
# For each rate (packets/s), trafgen (netsniff-ng) sends RATE*SECS UDP packets from one
# namespace to the other while entrypoint.sh runs in the receiving namespace with
# PCAP_JSON=true and PCAP_JSON_LOG=true (parts to a local GCS_MOUNT on /dev/shm), then
# the sidecar is stopped with SIGTERM and drains; each rate runs first with JSON off (the
# pcap branch alone: the reference), then on. Printed per run:
#   sent          packets trafgen sent
#   pcap_parts    packets in the uploaded .pcap parts        (should equal sent)
#   captured      packets capture wrote (its final stats line)
#   drops         packets the kernel dropped before capture read them (same line)
#   json          per-packet records in the uploaded .json parts
#   shed          packets translate shed (sum of the WARNING records' shed.packets)
#   json+shed     should equal captured
#   log_lines     per-packet records printed on stdout (PCAP_JSON_LOG)
#   bytes/record  mean size of a per-packet record in the .json parts
# Needs root, trafgen, capinfos. Usage: bench/sidecar_load.sh [RATES] [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${1:-"20000 50000 100000"}
SECS=${2:-3}
SIZE=${SIZE:-64} # UDP payload bytes
. bench/lib.sh
bench_require bench/sidecar_load.sh trafgen capinfos ip
PY=$BENCH_PY

bench_lab "ptsdl$$" 79
cap=$BENCH_CAP work=$BENCH_WORK
bench_udp_config "$work/udp.cfg" "$SIZE"

# run_one RATE JSON -> one row of figures (JSON=false: the pcap branch alone, for reference)
run_one() {
  local rate=$1 json=$2 n=$(($1 * SECS)) run="$work/run$1" pid
  mkdir -p "$run"
  ip netns exec "$cap" env PCAPTOOL="$PY -m pcaptool" PYTHONPATH="$PWD" TMPDIR="$run" \
    PCAP_IFACE=eth GCS_MOUNT="$run/pcap" PCAP_JSON="$json" PCAP_JSON_LOG="$json" \
    PCAP_L4_PROTOS=udp PCAP_ROTATE_SECS=2 PCAP_HC_PORT=$((20000 + $$ % 10000)) \
    PCAP_READY_FILE="$run/ready" bash entrypoint.sh >"$run/stdout" 2>"$run/stderr" &
  pid=$!
  for _ in $(seq 300); do [ -e "$run/ready" ] && break; sleep 0.1; done
  sleep 0.5
  bench_send "$rate" "$n"
  sleep 1.5
  kill -TERM "$pid"
  wait "$pid" || echo "bench: the sidecar exited with status $? (see $run/stderr)" >&2
  "$PY" - "$run" "$n" "$rate" "$json" <<'PY'
import gzip, json, pathlib, subprocess, sys

run, sent, rate, on = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dest = run / "pcap"
pcap = 0
for part in dest.rglob("*.pcap.gz"):
    raw = run / "count.pcap"
    raw.write_bytes(gzip.decompress(part.read_bytes()))
    out = subprocess.run(["capinfos", "-T", "-M", "-c", "-r", str(raw)], capture_output=True, text=True)
    pcap += int(out.stdout.split("\t")[1])
records = shed = size = 0
for part in dest.rglob("*.json.gz"):
    for line in gzip.decompress(part.read_bytes()).splitlines():
        rec = json.loads(line)
        if "shed" in rec:
            shed += rec["shed"]["packets"]
        elif "pcap" in rec and "len" in rec["pcap"]:
            records += 1
            size += len(line) + 1
captured = drops = None
for line in (run / "stderr").read_text().splitlines():
    if '"capture finished"' in line:
        stats = json.loads(line)
        captured, drops = stats.get("packets_written"), stats.get("packets_dropped_kernel")
log_lines = sum(
    1 for line in (run / "stdout").read_text().splitlines() if '"len":' in line and '"shed"' not in line
)
print(f"{rate:>8} {on:>5} {sent:>9} {pcap:>10} {captured!s:>9} {drops!s:>7} {records:>9} {shed:>8} "
      f"{records + shed:>9} {log_lines:>9} {size / records if records else 0:>12.0f}")
PY
  rm -rf "$run"
}

printf '%8s %5s %9s %10s %9s %7s %9s %8s %9s %9s %12s\n' rate json sent pcap_parts captured \
  drops json shed json+shed log_lines bytes/record
for rate in $RATES; do
  run_one "$rate" false
  run_one "$rate" true
done
echo "(pcap_parts should equal sent, json+shed should equal captured; ${SECS} s per rate, payload ${SIZE} B)"
