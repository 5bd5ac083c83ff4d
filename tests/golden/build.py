"""Builds the golden captures: small, deterministic, one protocol family each.

`python tests/golden/build.py` rewrites every `<case>.pcap`/`.pcapng` here; then
`python tests/golden/build.py --ndjson` rewrites each `<case>.ndjson` from
`pcaptool translate`, to be read and checked by a person before committing.
`tests/test_golden.py` checks that the committed captures equal what this builds and
that translate still produces the committed NDJSON.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import dpkt

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from pcaptool.capfile.reader import (  # noqa: E402
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PcapngWriter,
    PcapWriter,
)

T0 = 1_717_243_200_123_456_789  # 2024-06-01T12:00:00.123456789Z
MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")
V4_A, V4_B, V4_R = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([10, 0, 0, 254])
V6_A = bytes.fromhex("20010db8000000000000000000000001")
V6_B = bytes.fromhex("20010db8000000000000000000000002")
LL_A = bytes.fromhex("fe80000000000000000000fffe00000a")
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")


def eth(payload, etype=dpkt.ethernet.ETH_TYPE_IP, src=MAC_A, dst=MAC_B) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=src, dst=dst, type=etype, data=bytes(payload)))


def ip4(payload, p, src=V4_A, dst=V4_B, ttl=64, **kw) -> dpkt.ip.IP:
    pkt = dpkt.ip.IP(src=src, dst=dst, p=p, ttl=ttl, data=payload, **kw)
    pkt.len = 20 + len(bytes(payload))
    return pkt


def ip6(payload, nxt, src=V6_A, dst=V6_B, hlim=64) -> bytes:
    data = bytes(payload)
    return struct.pack("!IHBB16s16s", 6 << 28, len(data), nxt, hlim, src, dst) + data


def tcp(sport, dport, flags, seq=1000, ack=0, data=b"", opts=b"") -> dpkt.tcp.TCP:
    seg = dpkt.tcp.TCP(
        sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=65535, opts=opts, data=data
    )
    seg.off = 5 + len(opts) // 4
    return seg


def udp(sport, dport, data=b"") -> dpkt.udp.UDP:
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
    u.ulen = 8 + len(data)
    return u


def icmp4(itype, code, body: bytes) -> bytes:
    return struct.pack("!BBH", itype, code, 0) + body


def icmp6(itype, code, body: bytes) -> bytes:
    return struct.pack("!BBH", itype, code, 0) + body


def arp(op, sha, spa, tha, tpa) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, spa, tha, tpa)


def write_pcap(
    name: str, linktype: int, frames: list[bytes], nanosecond=True, big_endian=False
) -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf, linktype, 65535, nanosecond=nanosecond)
    for i, frame in enumerate(frames):
        w.write(T0 + i * 1_000_250, frame)
    data = buf.getvalue()
    if big_endian:
        data = _swap_pcap(data)
    (HERE / name).write_bytes(data)


def _swap_pcap(data: bytes) -> bytes:
    """The same pcap written by a big-endian host."""
    out = bytearray(struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", data, 0)))
    pos = 24
    while pos < len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, pos)
        out += struct.pack(">IIII", sec, frac, incl, orig) + data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
    return bytes(out)


def dns_query(qid, name, qtype=dpkt.dns.DNS_A) -> bytes:
    msg = dpkt.dns.DNS(id=qid, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)])
    msg.op = dpkt.dns.DNS_RD
    return bytes(msg)


def dns_answer(qid, name, addrs) -> bytes:
    msg = dpkt.dns.DNS(id=qid, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
    msg.op = dpkt.dns.DNS_RD | dpkt.dns.DNS_RA
    msg.qr = dpkt.dns.DNS_R
    msg.an = [
        dpkt.dns.DNS.RR(
            name=name, type=dpkt.dns.DNS_CNAME, ttl=300, cname="edge.example.net", rlen=0
        ),
        *(
            dpkt.dns.DNS.RR(name="edge.example.net", type=dpkt.dns.DNS_A, ttl=60, ip=a)
            for a in addrs
        ),
    ]
    return bytes(msg)


def client_hello(sni: str, alpn: list[str]) -> bytes:
    def ext(etype, body):
        return struct.pack("!HH", etype, len(body)) + body

    name = sni.encode()
    sni_body = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    protos = b"".join(bytes([len(p)]) + p.encode() for p in alpn)
    alpn_body = struct.pack("!H", len(protos)) + protos
    versions = b"\x04\x03\x04\x03\x03"
    exts = ext(0, sni_body) + ext(16, alpn_body) + ext(43, versions)
    hello = (
        b"\x03\x03"
        + bytes(range(32))
        + b"\x00"
        + struct.pack("!H", 4)
        + b"\x13\x01\x13\x02"
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    hs = b"\x01" + len(hello).to_bytes(3, "big") + hello
    return struct.pack("!BHH", 22, 0x0301, len(hs)) + hs


def build() -> None:
    # ARP and ICMPv4: echo, errors quoting their original datagram, redirect.
    quoted_udp = bytes(ip4(udp(40000, 33434, b"probe"), dpkt.ip.IP_PROTO_UDP, ttl=1))
    write_pcap(
        "arp_icmp4.pcap",
        LINKTYPE_ETHERNET,
        [
            eth(arp(1, MAC_A, V4_A, b"\0" * 6, V4_B), dpkt.ethernet.ETH_TYPE_ARP, dst=b"\xff" * 6),
            eth(arp(2, MAC_B, V4_B, MAC_A, V4_A), dpkt.ethernet.ETH_TYPE_ARP, src=MAC_B, dst=MAC_A),
            eth(ip4(icmp4(8, 0, struct.pack("!HH", 7, 1) + b"ping"), 1)),
            eth(ip4(icmp4(0, 0, struct.pack("!HH", 7, 1) + b"ping"), 1, src=V4_B, dst=V4_A)),
            eth(ip4(icmp4(3, 3, b"\0\0\0\0" + quoted_udp), 1, src=V4_B, dst=V4_A)),
            eth(ip4(icmp4(11, 0, b"\0\0\0\0" + quoted_udp), 1, src=V4_R, dst=V4_A)),
            eth(ip4(icmp4(5, 1, V4_R + quoted_udp), 1, src=V4_R, dst=V4_A)),
            eth(ip4(icmp4(3, 4, struct.pack("!HH", 0, 1400) + quoted_udp), 1, src=V4_R, dst=V4_A)),
        ],
    )
    # ICMPv6: echo, neighbor and router discovery, redirect, errors.
    quoted6 = ip6(udp(40000, 33434, b"probe"), 17, hlim=1)
    lladdr = b"\x01\x01" + MAC_A
    write_pcap(
        "icmp6.pcap",
        LINKTYPE_ETHERNET,
        [
            eth(
                ip6(icmp6(128, 0, struct.pack("!HH", 9, 1) + b"ping"), 58),
                dpkt.ethernet.ETH_TYPE_IP6,
            ),
            eth(
                ip6(icmp6(129, 0, struct.pack("!HH", 9, 1) + b"ping"), 58, V6_B, V6_A),
                dpkt.ethernet.ETH_TYPE_IP6,
            ),
            eth(
                ip6(icmp6(135, 0, b"\0" * 4 + V6_B + lladdr), 58, V6_A, V6_B, 255),
                dpkt.ethernet.ETH_TYPE_IP6,
            ),
            eth(
                ip6(icmp6(136, 0, b"\x60\0\0\0" + V6_B + b"\x02\x01" + MAC_B), 58, V6_B, V6_A, 255),
                dpkt.ethernet.ETH_TYPE_IP6,
            ),
            eth(
                ip6(
                    icmp6(
                        134,
                        0,
                        b"\x40\x00\x07\x08" + b"\0" * 8 + lladdr + b"\x05\x01\0\0\0\0\x05\xdc",
                    ),
                    58,
                    LL_A,
                    ALL_NODES,
                    255,
                ),
                dpkt.ethernet.ETH_TYPE_IP6,
            ),
            eth(
                ip6(icmp6(137, 0, b"\0" * 4 + LL_A + V6_B), 58, LL_A, V6_A, 255),
                dpkt.ethernet.ETH_TYPE_IP6,
            ),
            eth(ip6(icmp6(1, 4, b"\0" * 4 + quoted6), 58, V6_B, V6_A), dpkt.ethernet.ETH_TYPE_IP6),
            eth(ip6(icmp6(3, 0, b"\0" * 4 + quoted6), 58, V6_B, V6_A), dpkt.ethernet.ETH_TYPE_IP6),
            eth(
                ip6(icmp6(2, 0, struct.pack("!I", 1280) + quoted6), 58, V6_B, V6_A),
                dpkt.ethernet.ETH_TYPE_IP6,
            ),
        ],
    )
    # TCP handshake with options, 802.1Q and QinQ, IPv6 with a hop-by-hop header, a
    # later IPv4 fragment, RST.
    syn_opts = b"\x02\x04\x05\xb4\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x03\x07"
    vlan = struct.pack("!HH", 100, 0x0800)
    qinq = struct.pack("!HHHH", 200, 0x8100, 300, 0x86DD)
    hop_by_hop = bytes([6, 0, 1, 4, 0, 0, 0, 0])
    frag = ip4(b"\0" * 16, 17, offset=185)
    write_pcap(
        "tcp_vlan_v6.pcap",
        LINKTYPE_ETHERNET,
        [
            eth(ip4(tcp(51234, 8080, 0x02, seq=1000, opts=syn_opts), 6)),
            eth(
                ip4(
                    tcp(8080, 51234, 0x12, seq=5000, ack=1001, opts=syn_opts[:4]),
                    6,
                    src=V4_B,
                    dst=V4_A,
                ),
                src=MAC_B,
                dst=MAC_A,
            ),
            eth(ip4(tcp(51234, 8080, 0x10, seq=1001, ack=5001), 6)),
            eth(ip4(tcp(51234, 8080, 0x18, seq=1001, ack=5001, data=b"hello"), 6)),
            eth(vlan + bytes(ip4(tcp(51234, 8080, 0x11, seq=1006, ack=5001), 6)), 0x8100),
            eth(
                vlan
                + bytes(ip4(tcp(8080, 51234, 0x11, seq=5001, ack=1007), 6, src=V4_B, dst=V4_A)),
                0x8100,
                src=MAC_B,
                dst=MAC_A,
            ),
            eth(qinq + ip6(hop_by_hop + bytes(tcp(443, 50000, 0x04, seq=9)), 0), 0x88A8),
            eth(frag),
        ],
    )
    # DNS over UDP and TCP, a TLS ClientHello with SNI and ALPN.
    query = dns_query(0x1234, "www.example.com")
    answer = dns_answer(
        0x1234, "www.example.com", [bytes([93, 184, 216, 34]), bytes([93, 184, 216, 35])]
    )
    tcp_query = struct.pack("!H", len(query)) + query
    write_pcap(
        "dns_tls.pcap",
        LINKTYPE_ETHERNET,
        [
            eth(ip4(udp(40001, 53, query), 17)),
            eth(ip4(udp(53, 40001, answer), 17, src=V4_B, dst=V4_A)),
            eth(ip4(tcp(40002, 53, 0x18, seq=1, ack=1, data=tcp_query), 6)),
            eth(
                ip4(
                    tcp(
                        50443,
                        443,
                        0x18,
                        seq=1,
                        ack=1,
                        data=client_hello("api.example.com", ["h2", "http/1.1"]),
                    ),
                    6,
                )
            ),
        ],
    )
    # One file per link type.
    ping = bytes(ip4(icmp4(8, 0, struct.pack("!HH", 1, 1)), 1))
    ping6 = ip6(icmp6(128, 0, struct.pack("!HH", 1, 1)), 58)
    sll = struct.pack("!HHH8sH", 4, 1, 6, MAC_A + b"\0\0", 0x0800)
    sll2 = struct.pack("!HHIHBB8s", 0x86DD, 0, 3, 1, 0, 6, MAC_A + b"\0\0")
    write_pcap("linux_sll.pcap", LINKTYPE_LINUX_SLL, [sll + ping], nanosecond=False)
    write_pcap("linux_sll2.pcap", LINKTYPE_LINUX_SLL2, [sll2 + ping6])
    write_pcap("null_bigendian.pcap", LINKTYPE_NULL, [struct.pack(">I", 2) + ping], big_endian=True)
    write_pcap("loop.pcap", LINKTYPE_LOOP, [struct.pack(">I", 24) + ping6], nanosecond=False)
    write_pcap("raw.pcap", LINKTYPE_RAW, [ping, ping6])
    write_pcap("ipv4_linktype.pcap", LINKTYPE_IPV4, [ping])
    # pcapng: two named interfaces of different link types, then a second section.
    buf = io.BytesIO()
    w = PcapngWriter(buf, application="pcaptool golden")
    e0 = w.add_interface(LINKTYPE_ETHERNET, 65535, "eth0")
    r1 = w.add_interface(LINKTYPE_RAW, 65535, "tun0")
    w.write(e0, T0, eth(ip4(udp(1111, 2222, b"x"), 17)))
    w.write(r1, T0 + 1, ping)
    w2 = PcapngWriter(buf, application="pcaptool golden")
    w2.add_interface(LINKTYPE_ETHERNET, 65535, "eth1")
    w2.write(0, T0 + 2, eth(ip4(udp(3333, 4444, b"y"), 17)))
    (HERE / "multi_iface.pcapng").write_bytes(buf.getvalue())
    # gzip of a pcap (mtime 0 so it is reproducible).
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as f:
        f.write((HERE / "dns_tls.pcap").read_bytes())
    (HERE / "dns_tls_gzip.pcap.gz").write_bytes(gz.getvalue())


CAPTURES = (
    "arp_icmp4.pcap",
    "icmp6.pcap",
    "tcp_vlan_v6.pcap",
    "dns_tls.pcap",
    "linux_sll.pcap",
    "linux_sll2.pcap",
    "null_bigendian.pcap",
    "loop.pcap",
    "raw.pcap",
    "ipv4_linktype.pcap",
    "multi_iface.pcapng",
    "dns_tls_gzip.pcap.gz",
)


# the run id of every golden record (pcap.id, label run): fixed, so the NDJSON is stable
RUN_ID = "golden"


def ndjson() -> None:
    for name in CAPTURES:
        out = subprocess.run(
            [sys.executable, "-m", "pcaptool", "translate", name],
            cwd=HERE,
            capture_output=True,
            check=True,
            env={**os.environ, "PCAP_RUN_ID": RUN_ID},
        ).stdout
        (HERE / (name.split(".")[0] + ".ndjson")).write_bytes(out)


if __name__ == "__main__":
    build()
    if "--ndjson" in sys.argv:
        ndjson()
