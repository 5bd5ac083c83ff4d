# shellcheck shell=bash
# Shared by the bench scripts that send UDP across a veth pair (source it; bash):
#   bench_require SCRIPT TOOL...       exit 2 naming the missing tool and its package
#   bench_lab TAG NET                  namespaces ${TAG}c (capture) and ${TAG}p (peer),
#                                      eth0 on each side, 10.NET.0.1 and 10.NET.0.2,
#                                      removed (with $BENCH_WORK) on exit; sets BENCH_CAP,
#                                      BENCH_PEER, BENCH_WORK (a directory on /dev/shm)
#   bench_udp_config FILE SIZE         trafgen's config: UDP peer:40000 -> capture:9999,
#                                      SIZE payload bytes
#   bench_send RATE COUNT              trafgen in the peer namespace, COUNT packets at RATE/s
#   BENCH_PY                           the checkout's .venv python (PYTHON overrides it)

bench_require() {
  local script=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "$script: $tool is required (apt-get install netsniff-ng tcpdump wireshark-common iproute2)" >&2
      exit 2
    }
  done
}

bench_cleanup() {
  ip netns del "$BENCH_CAP" 2>/dev/null || true
  ip netns del "$BENCH_PEER" 2>/dev/null || true
  rm -rf "$BENCH_WORK"
}

bench_lab() {
  local tag=$1 net=$2
  BENCH_NET=$net
  BENCH_CAP="${tag}c"
  BENCH_PEER="${tag}p"
  BENCH_WORK=$(mktemp -d "/dev/shm/${tag}.XXXXXX")
  trap bench_cleanup EXIT
  ip netns add "$BENCH_CAP"
  ip netns add "$BENCH_PEER"
  ip link add "${tag}a" type veth peer name "${tag}b"
  ip link set "${tag}a" netns "$BENCH_CAP"
  ip link set "${tag}b" netns "$BENCH_PEER"
  ip -n "$BENCH_CAP" link set "${tag}a" name eth0
  ip -n "$BENCH_PEER" link set "${tag}b" name eth0
  ip -n "$BENCH_CAP" addr add "10.$net.0.1/24" dev eth0
  ip -n "$BENCH_PEER" addr add "10.$net.0.2/24" dev eth0
  ip -n "$BENCH_CAP" link set eth0 up
  ip -n "$BENCH_PEER" link set eth0 up
  ip -n "$BENCH_CAP" link set lo up
}

bench_udp_config() {
  local file=$1 size=$2 dst_mac src_mac
  dst_mac=$(ip -n "$BENCH_CAP" -br link show eth0 | awk '{print $3}')
  src_mac=$(ip -n "$BENCH_PEER" -br link show eth0 | awk '{print $3}')
  hex() { echo "0x${1//:/, 0x}"; }
  cat >"$file" <<CFG
{ $(hex "$dst_mac"), $(hex "$src_mac"), const16(0x0800),
  0x45, 0, const16($((20 + 8 + size))), const16(0), const16(0x4000), 64, 17, csumip(14, 33),
  10, $BENCH_NET, 0, 2, 10, $BENCH_NET, 0, 1,
  const16(40000), const16(9999), const16($((8 + size))), const16(0),
  fill('x', $size) }
CFG
}

bench_send() {
  ip netns exec "$BENCH_PEER" trafgen --dev eth0 --conf "$BENCH_WORK/udp.cfg" --cpus 1 \
    --rate "${1}pps" --num "$2" --no-sock-mem --notouch-irq --qdisc-path --no-cpu-stats \
    >/dev/null 2>&1
}

BENCH_PY=${PYTHON:-$PWD/.venv/bin/python}
[ -x "$BENCH_PY" ] || BENCH_PY=python3
