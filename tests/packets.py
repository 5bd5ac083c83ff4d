"""Packet builders for the decoder tests: every header by struct, so a test can cut or
break any field. Each builder returns bytes; `CASES` is one packet of each class the
decoders know (link types, IP versions, transports, DNS, TLS, every tunnel)."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.rdata
import dns.rrset

from pcaptool.capfile.reader import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)

MAC_A, MAC_B = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")
A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
OUT_A, OUT_B = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
A6 = bytes.fromhex("20010db8000000000000000000000001")
B6 = bytes.fromhex("20010db8000000000000000000000002")


def eth(payload: bytes, etype: int = 0x0800, vlans: tuple[int, ...] = ()) -> bytes:
    tags = b"".join(struct.pack("!HH", 0x8100, v) for v in vlans)
    first = 0x8100 if vlans else etype
    if vlans:
        tags = tags[2:] + struct.pack("!H", etype)
    return MAC_B + MAC_A + struct.pack("!H", first) + tags + payload


def ip4(payload: bytes, proto: int, src: bytes = A, dst: bytes = B, frag: int = 0) -> bytes:
    return (
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0, src, dst)
        + payload
    )


def ip6(payload: bytes, nxt: int, src: bytes = A6, dst: bytes = B6) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nxt, 64, src, dst) + payload


def tcp(sport: int, dport: int, payload: bytes = b"", flags: int = 0x18) -> bytes:
    opts = struct.pack("!BBH", 2, 4, 1460) + b"\x01" + struct.pack("!BBB", 3, 3, 7) + bytes(4)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, (5 + 3) << 4, flags, 512, 0, 0)
    return hdr + opts + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp_echo() -> bytes:
    return struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"ping"


def arp() -> bytes:
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + MAC_A + A + bytes(6) + B


def mpls(payload: bytes, labels: tuple[int, ...]) -> bytes:
    out = b""
    for i, label in enumerate(labels):
        bottom = 0x100 if i == len(labels) - 1 else 0
        out += struct.pack("!I", label << 12 | bottom | 64)
    return out + payload


def pppoe(payload: bytes, session: int = 0x2D, compressed: bool = False) -> bytes:
    proto = b"\x21" if compressed else b"\x00\x21"
    body = proto + payload
    return struct.pack("!BBHH", 0x11, 0, session, len(body)) + body


def gre(payload: bytes, proto: int, key: int | None = None) -> bytes:
    flags = 0x2000 if key is not None else 0
    out = struct.pack("!HH", flags, proto)
    if key is not None:
        out += struct.pack("!I", key)
    return out + payload


def vxlan(frame: bytes, vni: int) -> bytes:
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def geneve(frame: bytes, vni: int, options: bytes = b"") -> bytes:
    return struct.pack("!BBHI", len(options) // 4, 0, 0x6558, vni << 8) + options + frame


def dns_response() -> bytes:
    """A DNSSEC-signed response with one record of every type the issue names."""
    q = dns.message.make_query("example.com.", "A", want_dnssec=True)
    r = dns.message.make_response(q)
    rows = [
        ("A", "93.184.216.34"),
        ("RRSIG", "A 13 2 300 20250101000000 20240101000000 12345 example.com. AAAA"),
        ("NSEC", "a.example.com. A RRSIG NSEC"),
        ("NSEC3", "1 0 10 AABB 2T7B4G4VSA5SMI47K61MV5BV1A22BOJR A RRSIG"),
        ("DNSKEY", "257 3 13 AAAA"),
        ("DS", "12345 13 2 " + "ab" * 32),
        ("SVCB", '1 svc.example.com. alpn="h2,h3" port=8443'),
        ("HTTPS", "1 . alpn=h2 ipv4hint=192.0.2.1"),
        ("CAA", '0 issue "letsencrypt.org"'),
        ("TXT", '"v=spf1 -all" "second"'),
        ("SRV", "10 5 443 svc.example.com."),
        ("TYPE65280", "\\# 3 abcdef"),
    ]
    for rtype, text in rows:
        rdata = dns.rdata.from_text("IN", rtype, text)
        r.answer.append(dns.rrset.from_rdata("example.com.", 300, rdata))
    r.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.ECSOption("192.0.2.0", 24)])
    return r.to_wire()


def dns_query() -> bytes:
    return dns.message.make_query("example.com.", "AAAA").to_wire()


def tls_client_hello(sni: str = "example.com") -> bytes:
    name = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    alpn = b"\x02h2"
    alpn_ext = struct.pack("!HHH", 16, len(alpn) + 2, len(alpn)) + alpn
    exts = sni_ext + alpn_ext
    body = (
        (b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00")
        + struct.pack("!H", len(exts))
        + exts
    )
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


INNER_TCP = ip4(tcp(40000, 80, b"GET / HTTP/1.1\r\n\r\n"), 6)
INNER_FRAME = eth(INNER_TCP)

# (name, linktype, frame, expected encap types outermost first)
TUNNELS = [
    ("mpls", LINKTYPE_ETHERNET, eth(mpls(INNER_TCP, (100, 200)), 0x8847), ["mpls"]),
    ("pppoe", LINKTYPE_ETHERNET, eth(pppoe(INNER_TCP), 0x8864, vlans=(10, 20)), ["pppoe"]),
    ("pppoe-pfc", LINKTYPE_ETHERNET, eth(pppoe(INNER_TCP, compressed=True), 0x8864), ["pppoe"]),
    (
        "gre",
        LINKTYPE_ETHERNET,
        eth(ip4(gre(INNER_TCP, 0x0800, key=7), 47, OUT_A, OUT_B)),
        ["ipv4", "gre"],
    ),
    (
        "gre-teb",
        LINKTYPE_ETHERNET,
        eth(ip4(gre(INNER_FRAME, 0x6558), 47, OUT_A, OUT_B)),
        ["ipv4", "gre", "ethernet"],
    ),
    (
        "vxlan",
        LINKTYPE_ETHERNET,
        eth(ip4(udp(51000, 4789, vxlan(INNER_FRAME, 42)), 17, OUT_A, OUT_B)),
        ["ipv4", "udp", "vxlan", "ethernet"],
    ),
    (
        "geneve",
        LINKTYPE_ETHERNET,
        eth(ip4(udp(51000, 6081, geneve(INNER_FRAME, 99, bytes(8))), 17, OUT_A, OUT_B)),
        ["ipv4", "udp", "geneve", "ethernet"],
    ),
    ("ipip", LINKTYPE_ETHERNET, eth(ip4(INNER_TCP, 4, OUT_A, OUT_B)), ["ipv4"]),
    ("4in6", LINKTYPE_RAW, ip6(INNER_TCP, 4), ["ipv6"]),
    (
        "mpls-in-gre-in-vlan",
        LINKTYPE_ETHERNET,
        eth(ip4(gre(mpls(INNER_TCP, (5,)), 0x8847), 47, OUT_A, OUT_B), vlans=(3,)),
        ["ipv4", "gre", "mpls"],
    ),
]

# (name, linktype, frame): one of every class the decoders read
CASES = [(name, lt, frame) for name, lt, frame, _ in TUNNELS] + [
    ("tcp", LINKTYPE_ETHERNET, INNER_FRAME),
    ("tcp-v6", LINKTYPE_ETHERNET, eth(ip6(tcp(40000, 443, tls_client_hello()), 6), 0x86DD)),
    (
        "tls",
        LINKTYPE_LINUX_SLL,
        struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\0\0", 0x0800)
        + ip4(tcp(40000, 443, tls_client_hello()), 6),
    ),
    ("dns-response", LINKTYPE_ETHERNET, eth(ip4(udp(53, 40000, dns_response()), 17))),
    ("dns-query-v6", LINKTYPE_RAW, ip6(udp(40000, 53, dns_query()), 17)),
    (
        "dns-tcp",
        LINKTYPE_ETHERNET,
        eth(ip4(tcp(40000, 53, struct.pack("!H", len(dns_response())) + dns_response()), 6)),
    ),
    ("icmp", LINKTYPE_NULL, struct.pack("<I", 2) + ip4(icmp_echo(), 1)),
    (
        "icmp-error",
        LINKTYPE_ETHERNET,
        eth(ip4(struct.pack("!BBHI", 3, 3, 0, 0) + ip4(udp(1, 2, b"x"), 17), 1)),
    ),
    (
        "icmpv6",
        LINKTYPE_LINUX_SLL2,
        struct.pack("!HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, MAC_A + b"\0\0")
        + ip6(struct.pack("!BBHHH", 128, 0, 0, 1, 1), 58),
    ),
    ("arp", LINKTYPE_ETHERNET, eth(arp(), 0x0806)),
]
