"""`walk`'s fast path: untagged Ethernet, IPv4 without options, TCP or UDP, in one call.

Most packets a sidecar captures are exactly that, and the walk through the dispatch
tables costs three decoder calls and three table look-ups for them. `eth_ipv4` reads the
three headers at once and fills `rec` with the same objects, keys and key order as
`link.ethernet`, `ip.ipv4` and `tcp.tcp` / `udp.udp` (tests/test_decode_fastpath.py
compares the two on generated packets). It declines (None) whatever it does not cover,
so the tables decode it: VLAN tags, IP options, fragments (also first fragments, MF),
other protocols, and every header that is cut short or malformed, whose errors the
decoders report.
"""

from __future__ import annotations

import struct

from pcaptool.decode import TCP_PORT, UDP_PORT, Table
from pcaptool.decode.ip import V4_NAMES, ipv4_addr
from pcaptool.decode.link import MAC_NAMES, mac
from pcaptool.decode.tcp import FLAG_NAMES, TS_ONLY, U32X2, flags_of, options

HEAD = struct.Struct("!6s6sHBBHHHBBH4s4s")  # Ethernet + IPv4 without options: 34 bytes
TCP = struct.Struct("!HHIIBBHHH")
UDP = struct.Struct("!HHH")

Walked = tuple[str, Table | None, object, int, int]


def eth_ipv4(buf: bytes, rec: dict) -> Walked | None:
    """`walk`'s answer for an untagged Ethernet / IPv4 / TCP or UDP packet, or None."""
    end = len(buf)
    # IPv4 ethertype, version 4 with a 20-byte header, neither MF nor a fragment offset
    if end < 42 or buf[14] != 0x45 or buf[12] != 8 or buf[13] or buf[20] & 0x3F or buf[21]:
        return None
    proto = buf[23]
    if proto != 6 and proto != 17:
        return None
    dmac, smac, _, _, tos, total, ident, frag, ttl, _, _, src, dst = HEAD.unpack_from(buf)
    pend = min(end, 14 + total) if total >= 20 else end
    if proto == 6:
        if pend < 54:
            return None
        sport, dport, seq, ack, doff, bits, win, _csum, urg = TCP.unpack_from(buf, 34)
        hlen = (doff >> 4) * 4
        if hlen < 20 or 34 + hlen > pend:
            return None
    elif pend < 42:
        return None
    s = MAC_NAMES.get(smac) or mac(smac)
    d = MAC_NAMES.get(dmac) or mac(dmac)
    rec["l2"] = {"type": "ethernet", "src": s, "dst": d, "ethertype": 0x0800}
    s = V4_NAMES.get(src) or ipv4_addr(src)
    d = V4_NAMES.get(dst) or ipv4_addr(dst)
    # the dicts of ip.ipv4_fields and tcp.tcp_fields, written out (a call less each)
    rec["ip"] = {
        "version": 4,
        "src": s,
        "dst": d,
        "ttl": ttl,
        "id": ident,
        "flags": ["DF"] if frag & 0x4000 else [],
        "frag_offset": 0,
        "proto": proto,
        "len": total,
        "hdr_len": 20,
        "tos": tos,
    }
    if proto == 17:
        return _udp(buf, pend, rec)
    names, letters = FLAG_NAMES.get(bits) or flags_of(bits)
    t = rec["tcp"] = {
        "sport": sport,
        "dport": dport,
        "seq": seq,
        "ack": ack,
        "flags": names,
        "flags_str": letters,
        "window": win,
        "hdr_len": hlen,
        "len": 0,
    }
    if urg and bits & 0x20:
        t["urgent"] = urg
    if hlen == 32 and buf[54:58] == TS_ONLY:  # NOP NOP timestamps: Linux's every segment
        t["options"] = {"ts": list(U32X2.unpack_from(buf, 58))}
    elif hlen > 20:
        t["options"] = options(buf, 54, 34 + hlen)
    off = 34 + hlen
    if pend > off:
        t["len"] = pend - off
        key = sport if dport not in TCP_PORT and sport in TCP_PORT else dport
        return "tcp", TCP_PORT, key, off, pend
    return "tcp", None, None, 34, pend


def _udp(buf: bytes, pend: int, rec: dict) -> Walked:
    sport, dport, length = UDP.unpack_from(buf, 34)
    rec["udp"] = {"sport": sport, "dport": dport, "len": max(length - 8, 0)}
    upend = min(pend, 34 + length) if length >= 8 else pend
    if upend > 42:
        key = sport if dport not in UDP_PORT and sport in UDP_PORT else dport
        return "udp", UDP_PORT, key, 42, upend
    return "udp", None, None, 34, pend
