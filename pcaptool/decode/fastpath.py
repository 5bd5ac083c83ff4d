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
from pcaptool.decode.ip import ipv4_addr
from pcaptool.decode.link import mac
from pcaptool.decode.tcp import FLAG_NAMES, flags_of, options

# Ethernet + IPv4 without options (34 bytes): both MACs, TOS, total length, id, flags and
# fragment offset, TTL, both addresses; the version, protocol and ethertype are checked
# byte by byte first.
HEAD = struct.Struct("!12s2xxBHHHBxxx8s")
TCP = struct.Struct("!HHIIBBHxxH")  # without the checksum
TCP_TS = struct.Struct("!HHIIBBHxxHIII")  # and the first 12 option bytes
TS_WORD = 0x0101080A  # NOP, NOP, timestamps (kind 8, length 10): Linux's every segment
UDP = struct.Struct("!HHH")
IPV4_20 = b"\x08\x00\x45"  # ethertype 0x0800, then version 4 and a 20-byte header

# The `l2` of a frame's MAC pair (12 bytes: destination, source), and the names of a
# packet's address pair (8 bytes: source, destination): a capture's pairs repeat, and one
# look-up of the pair costs less than two of its halves. Bounded: emptied when full. The
# `l2` objects are shared by the records of their pair: nothing changes them once made
# (a tunnel's `outer` copies what it moves), as `ip.flags` and `tcp.flags` lists.
MAC_PAIRS: dict[bytes, dict] = {}
ADDR_PAIRS: dict[bytes, tuple[str, str]] = {}
PAIRS_LIMIT = 16_384
DF, NO_FLAGS = ["DF"], []  # `ip.flags` of a packet that is not a fragment

Walked = tuple[str, Table | None, object, int, int]


def eth_ipv4(buf: bytes, rec: dict) -> Walked | None:
    """`walk`'s answer for an untagged Ethernet / IPv4 / TCP or UDP packet, or None."""
    end = len(buf)
    # the IPv4 ethertype, version 4 with a 20-byte header; TCP or UDP
    if end < 42 or buf[12:15] != IPV4_20:
        return None
    proto = buf[23]
    if proto != 6 and proto != 17:
        return None
    macs, tos, total, ident, frag, ttl, addrs = HEAD.unpack_from(buf)
    if frag & 0x3FFF:  # MF or a fragment offset
        return None
    pend = 14 + total if 20 <= total < end - 14 else end  # min(end, 14 + total), the IP length
    if proto == 6:
        if pend < 54:
            return None
        if end >= 66:
            sport, dport, seq, ack, doff, bits, win, urg, word, tsval, tsecr = TCP_TS.unpack_from(
                buf, 34
            )
        else:
            sport, dport, seq, ack, doff, bits, win, urg = TCP.unpack_from(buf, 34)
            word = 0
        hlen = (doff >> 4) * 4
        if hlen < 20 or 34 + hlen > pend:
            return None
    elif pend < 42:
        return None
    rec["l2"] = MAC_PAIRS.get(macs) or _l2(macs)
    s, d = ADDR_PAIRS.get(addrs) or _addr_pair(addrs)
    # the dicts of ip.ipv4_fields and tcp.tcp_fields, written out (a call less each)
    rec["ip"] = {
        "version": 4,
        "src": s,
        "dst": d,
        "ttl": ttl,
        "id": ident,
        "flags": DF if frag & 0x4000 else NO_FLAGS,
        "frag_offset": 0,
        "proto": proto,
        "len": total,
        "hdr_len": 20,
        "tos": tos,
    }
    if proto == 17:
        return _udp(buf, pend, rec)
    names, letters = FLAG_NAMES.get(bits) or flags_of(bits)
    off = 34 + hlen
    t = rec["tcp"] = {
        "sport": sport,
        "dport": dport,
        "seq": seq,
        "ack": ack,
        "flags": names,
        "flags_str": letters,
        "window": win,
        "hdr_len": hlen,
        "len": pend - off,  # the header fits (checked above): never negative
    }
    if urg and bits & 0x20:
        t["urgent"] = urg
    if hlen == 32 and word == TS_WORD:
        t["options"] = {"ts": [tsval, tsecr]}
    elif hlen > 20:
        t["options"] = options(buf, 54, 34 + hlen)
    if pend > off:
        key = sport if dport not in TCP_PORT and sport in TCP_PORT else dport
        return "tcp", TCP_PORT, key, off, pend
    return "tcp", None, None, 34, pend


def _l2(macs: bytes) -> dict:
    """`link.ethernet`'s `l2` of an untagged IPv4 frame between these MACs (dst, src)."""
    if len(MAC_PAIRS) >= PAIRS_LIMIT:
        MAC_PAIRS.clear()
    l2 = {"type": "ethernet", "src": mac(macs[6:]), "dst": mac(macs[:6]), "ethertype": 0x0800}
    MAC_PAIRS[macs] = l2
    return l2


def _addr_pair(addrs: bytes) -> tuple[str, str]:
    if len(ADDR_PAIRS) >= PAIRS_LIMIT:
        ADDR_PAIRS.clear()
    pair = ADDR_PAIRS[addrs] = (ipv4_addr(addrs[:4]), ipv4_addr(addrs[4:]))
    return pair


def _udp(buf: bytes, pend: int, rec: dict) -> Walked:
    sport, dport, length = UDP.unpack_from(buf, 34)
    rec["udp"] = {"sport": sport, "dport": dport, "len": max(length - 8, 0)}
    upend = min(pend, 34 + length) if length >= 8 else pend
    if upend > 42:
        key = sport if dport not in UDP_PORT and sport in UDP_PORT else dport
        return "udp", UDP_PORT, key, 42, upend
    return "udp", None, None, 34, pend
