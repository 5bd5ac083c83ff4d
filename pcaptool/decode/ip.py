"""IPv4 (RFC 791) and IPv6 (RFC 8200) with its extension headers walked.

`ipv4`/`ipv6` fill rec["ip"] and step to the IP_PROTO table with the payload's offset and
end (the end honours the IP length, not just the captured bytes). A fragment captured
whole steps to `IP_FRAGMENT`, where the translator's reassembler takes it
(pcaptool/decode/ipfrag.py); one the snap length cut is read as tshark does: a first
fragment's contents as far as they go, a later one's not at all. An IP header inside another (IP-in-IP, 6in4, GRE) moves the outer
one into rec["encap"].
"""

from __future__ import annotations

import contextlib
import struct
from socket import AF_INET, AF_INET6, inet_ntop

from pcaptool.decode import IP_FRAGMENT, IP_PROTO, Step, Truncated, need, outer
from pcaptool.decode.dns import DNS_PORTS, MDNS_PORT, message

IPV4 = struct.Struct("!BBHHHBBH4s4s")
IPV6 = struct.Struct("!IHBB16s16s")
EXT_HDR = struct.Struct("!BB")
FRAG_HDR = struct.Struct("!BxHI")
PORTS = struct.Struct("!HH")

PROTO_NAMES = {
    0: "HOPOPT",
    1: "ICMP",
    2: "IGMP",
    4: "IPIP",
    6: "TCP",
    17: "UDP",
    41: "IPv6",
    43: "IPv6-Route",
    44: "IPv6-Frag",
    47: "GRE",
    50: "ESP",
    51: "AH",
    58: "ICMPv6",
    59: "IPv6-NoNxt",
    60: "IPv6-Opts",
    103: "PIM",
    112: "VRRP",
    132: "SCTP",
    135: "Mobility",
}
# Extension headers walked to reach the upper layer (ESP is opaque; stop there).
EXT_NAMES = {
    0: "hop-by-hop",
    43: "routing",
    44: "fragment",
    60: "destination",
    51: "ah",
    135: "mobility",
}


# Dotted quads by their 4 bytes: inet_ntop costs several dict look-ups, and a capture's
# addresses repeat. Bounded: emptied when full.
V4_NAMES: dict[bytes, str] = {}
NAMES_LIMIT = 16_384


def ipv4_addr(b: bytes) -> str:
    s = V4_NAMES.get(b)
    if s is None:
        if len(V4_NAMES) >= NAMES_LIMIT:
            V4_NAMES.clear()
        s = V4_NAMES[b] = inet_ntop(AF_INET, b)
    return s


def ipv6_addr(b: bytes) -> str:
    return inet_ntop(AF_INET6, b)


def ipv4(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    if off + 20 > end:
        need("ip", "IPv4 header", off, 20, end)
    vihl, tos, total, ident, frag, ttl, proto, _csum, src, dst = IPV4.unpack_from(buf, off)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4:
        raise Truncated("ip", f"IPv4 header has version {vihl >> 4}")
    if ihl < 20:
        raise Truncated("ip", f"IPv4 header length {ihl} is below 20")
    if off + ihl > end:
        need("ip", "IPv4 options", off, ihl, end)
    s = V4_NAMES.get(src) or ipv4_addr(src)
    d = V4_NAMES.get(dst) or ipv4_addr(dst)
    flags = []
    if frag & 0x4000:
        flags.append("DF")
    if frag & 0x2000:
        flags.append("MF")
    frag_off = (frag & 0x1FFF) * 8
    if "ip" in rec:
        outer(rec, "ip")
    rec["ip"] = ipv4_fields(s, d, ttl, ident, flags, frag_off, proto, total, ihl, tos)
    # TSO/GRO captures carry total length 0; trust the captured bytes then.
    pend = min(end, off + total) if total >= ihl else end
    if frag & 0x3FFF:  # MF or an offset: a fragment
        if ihl < total and off + total <= end:  # whole: reassembled (decode/ipfrag.py)
            return IP_FRAGMENT, proto, off + ihl, pend
        if frag_off:  # cut short: as tshark, only a first fragment's contents are read
            return None
    return IP_PROTO, proto, off + ihl, pend


def ipv6(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    if off + 40 > end:
        need("ip", "IPv6 header", off, 40, end)
    vtcfl, plen, nxt, hlim, src, dst = IPV6.unpack_from(buf, off)
    if vtcfl >> 28 != 6:
        raise Truncated("ip", f"IPv6 header has version {vtcfl >> 28}")
    s, d = inet_ntop(AF_INET6, src), inet_ntop(AF_INET6, dst)
    ip = {
        "version": 6,
        "src": s,
        "dst": d,
        "hop_limit": hlim,
        "flow_label": vtcfl & 0xFFFFF,
        "tclass": (vtcfl >> 20) & 0xFF,
        "proto": nxt,
        "len": plen + 40,
    }
    if "ip" in rec:
        outer(rec, "ip")
    rec["ip"] = ip
    pend = min(end, off + 40 + plen) if plen else end  # jumbograms / TSO: trust caplen
    off += 40
    later_fragment = False
    if nxt in EXT_NAMES:
        ext = []
        whole = plen and off + plen <= end  # a fragment all captured is reassembled
        while nxt in EXT_NAMES:
            need("ip", "IPv6 extension header", off, 8, pend)
            name = EXT_NAMES[nxt]
            if nxt == 44:
                following, fragword, ident = FRAG_HDR.unpack_from(buf, off)
                ip["frag_offset"] = fragword & 0xFFF8
                ip["id"] = ident
                ip["flags"] = ["MF"] if fragword & 1 else []
                later_fragment = (fragword & 0xFFF8) != 0
                size = 8
                if fragword & 0xFFF9 and whole and off + 8 < pend:  # decode/ipfrag.py
                    ext.append(name)
                    ip["ext"] = ext
                    ip["proto"] = following
                    return IP_FRAGMENT, following, off + 8, pend
            else:
                following, hlen = EXT_HDR.unpack_from(buf, off)
                size = (hlen + 2) * 4 if nxt == 51 else (hlen + 1) * 8
            ext.append(name)
            need("ip", f"IPv6 {name} header", off, size, pend)
            off += size
            nxt = following
            if later_fragment:
                break
        ip["ext"] = ext
        ip["proto"] = nxt
    return None if later_fragment else (IP_PROTO, nxt, off, pend)


def inner_ip(buf: bytes, off: int, end: int) -> dict | None:
    """The IP header quoted by an ICMP error, with ports if they are there."""
    sub: dict = {}
    try:
        step = (ipv6 if off < end and buf[off] >> 4 == 6 else ipv4)(buf, off, end, sub)
    except Truncated:
        return None
    orig = sub["ip"]
    proto = orig["proto"]
    inner = {"version": orig["version"], "src": orig["src"], "dst": orig["dst"], "proto": proto}
    first = step is not None and (step[0] is IP_PROTO or not orig.get("frag_offset"))
    if first and proto in (6, 17, 132) and step[2] + 4 <= end:
        poff = step[2]
        inner["sport"], inner["dport"] = sport, dport = PORTS.unpack_from(buf, poff)
        if proto == 17 and (sport in DNS_PORTS or dport in DNS_PORTS):
            _quoted_dns(buf, poff + 8, end, inner, MDNS_PORT in (sport, dport))
    return inner


def _quoted_dns(buf: bytes, off: int, end: int, inner: dict, mdns: bool) -> None:
    """The DNS message a quoted UDP datagram carries, as far as the quote goes (tshark
    decodes it too): `inner["dns"]`, `truncated` where the quote stops."""
    # under 4 bytes of it, or bytes that do not parse as DNS: the ports say enough
    with contextlib.suppress(Truncated):
        inner["dns"] = message(bytes(buf[off:end]), {}, cut=True, mdns=mdns)


def ipv4_fields(
    src: str, dst: str, ttl: int, ident: int, flags: list, frag_off: int, proto: int,
    total: int, ihl: int, tos: int,
) -> dict:  # fmt: skip
    """The record's `ip` object of an IPv4 header (decode/fastpath.py writes the same dict
    out in line; tests/test_decode_fastpath.py checks that they agree)."""
    return {
        "version": 4,
        "src": src,
        "dst": dst,
        "ttl": ttl,
        "id": ident,
        "flags": flags,
        "frag_offset": frag_off,
        "proto": proto,
        "len": total,
        "hdr_len": ihl,
        "tos": tos,
    }
