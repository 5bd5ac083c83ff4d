#!/usr/bin/env bash
# Capture speed: pcaptool capture -w vs tcpdump -w on the same UDP burst across a veth pair.
#
# For each rate (packets/s), trafgen (netsniff-ng) sends RATE*SECS UDP packets from one
# namespace to the other while the capture runs in the receiving namespace; first pcaptool,
# then tcpdump, then pcaptool --format pcapng (the pcapy-ng path), same load. Printed per tool: packets sent, captured (read back from the file
# with capinfos), kernel drops, CPU seconds the capture process used while the load ran
# (/proc/PID/schedstat, between "ready" and the stop signal, so start-up is left out),
# and the CPU per packet ratio pcaptool/tcpdump. Needs root, trafgen, tcpdump, capinfos.
#
# Usage: bench/capture.sh [RATES] [SECS]     e.g. bench/capture.sh "20000 50000 100000" 3
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${1:-"20000 50000 100000"}
SECS=${2:-3}
SIZE=${SIZE:-64} # UDP payload bytes
. bench/lib.sh
bench_require bench/capture.sh trafgen tcpdump capinfos ip
bench_lab "ptcapb$$" 78
cap=$BENCH_CAP work=$BENCH_WORK
bench_udp_config "$work/udp.cfg" "$SIZE"

# nanoseconds on CPU (user + system) of a process: the first field of schedstat
cpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }

# run_one TOOL RATE -> prints "captured drops cpu_seconds achieved_send_rate"
run_one() {
  local tool=$1 rate=$2 n=$(($2 * SECS)) out="$work/$1.pcap" err="$work/$1.err" pid t0 t1 drops
  rm -f "$out" "$err" "$work/ready"
  if [ "$tool" != tcpdump ]; then
    # pcaptool: libpcap's C dump loop (one interface to pcap, the default engine);
    # pcaptool-ng: --format pcapng, every packet through pcapy-ng and Python
    local fmt=pcap
    [ "$tool" = pcaptool-ng ] && fmt=pcapng
    ip netns exec "$cap" env PYTHONPATH="$PWD" "$BENCH_PY" -m pcaptool capture -i eth --format "$fmt" \
      --filter "udp port 9999" -w "$out" --ready-file "$work/ready" 2>"$err" &
    pid=$!
    for _ in $(seq 200); do [ -e "$work/ready" ] && break; sleep 0.05; done
  else
    ip netns exec "$cap" tcpdump -i eth0 -n -w "$out" "udp port 9999" 2>"$err" &
    pid=$!
    for _ in $(seq 200); do grep -q listening "$err" 2>/dev/null && break; sleep 0.05; done
  fi
  sleep 0.2
  t0=$(cpu_ns "$pid")
  local w0 w1
  w0=$(date +%s%N)
  bench_send "$rate" "$n"
  w1=$(date +%s%N)
  sleep 1.2 # > tcpdump's 1 s TPACKET_V3 block timeout, so the last packets are delivered
  t1=$(cpu_ns "$pid")
  kill -TERM "$pid"
  wait "$pid" || true
  if [ "$tool" != tcpdump ]; then
    drops=$(tail -n1 "$err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["packets_dropped_kernel"])')
  else
    drops=$(awk '/dropped by kernel/ {print $1}' "$err")
  fi
  echo "$(capinfos -T -M -c -r "$out" | awk -F'\t' '{print $2}') ${drops:-?} $(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.4f", d / 1e9}') $(awk -v n="$n" -v d=$((w1 - w0)) 'BEGIN {printf "%.0f", n * 1e9 / d}')"
}

printf '%-8s %-11s %9s %9s %9s %7s %8s %12s\n' rate tool sent sent_pps captured drops cpu_s us/packet
for rate in $RATES; do
  n=$((rate * SECS))
  read -r pc_cap pc_drop pc_cpu pc_pps < <(run_one pcaptool "$rate")
  read -r td_cap td_drop td_cpu td_pps < <(run_one tcpdump "$rate")
  read -r ng_cap ng_drop ng_cpu ng_pps < <(run_one pcaptool-ng "$rate")
  for row in "pcaptool $pc_cap $pc_drop $pc_cpu $pc_pps" "tcpdump $td_cap $td_drop $td_cpu $td_pps" \
    "pcaptool-ng $ng_cap $ng_drop $ng_cpu $ng_pps"; do
    read -r tool captured drops cpu pps <<<"$row"
    printf '%-8s %-11s %9s %9s %9s %7s %8s %12s\n' "$rate" "$tool" "$n" "$pps" "$captured" "$drops" "$cpu" \
      "$(awk -v c="$cpu" -v p="$captured" 'BEGIN {printf "%.3f", p ? c * 1e6 / p : 0}')"
  done
  awk -v a="$pc_cpu" -v b="$td_cpu" -v c="$ng_cpu" -v r="$rate" -v pa="$pc_cap" -v pb="$td_cap" -v pc="$ng_cap" \
    'BEGIN {printf "%-8s CPU per packet vs tcpdump: pcaptool %.1fx, pcaptool-ng %.1fx\n", r, (a / pa) / (b / pb), (c / pc) / (b / pb)}'
done
echo "(CPU = time on CPU of the capture process while the load ran, from /proc/PID/schedstat; payload ${SIZE} B; ${SECS} s per run)"
