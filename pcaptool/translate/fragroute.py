"""Parallel translate's routing of IP fragments: every fragment of a datagram goes to one
worker, whose reassembler (pcaptool/decode/ipfrag.py) then sees them all; when the first
fragment comes first, that is the worker of the connection the datagram belongs to."""

from __future__ import annotations

import struct

PROTO_TCP, PROTO_UDP = 6, 17
PORTS = struct.Struct("!HH")
DNS_PORT = 53


class Fragment(tuple):
    """flow_of's key for an IP fragment: (datagram, the key to send it by when it is its
    datagram's first fragment seen, the flow key of its ports or None). `FragmentRouter`
    turns it into the key its datagram was first sent by."""


def fragment_key(data: bytes, dgram: tuple, offset: int, p: int, proto: int | None = None):
    proto = dgram[4] if proto is None else proto
    src, dst = dgram[1], dgram[2]
    flow = None
    if not offset and proto in (PROTO_TCP, PROTO_UDP) and p + 4 <= len(data):
        sport, dport = PORTS.unpack_from(data, p)
        a, b = (src, sport), (dst, dport)
        flow = (proto, a, b) if a < b else (proto, b, a)
        if sport == DNS_PORT or dport == DNS_PORT:  # as parallel.flow_of keys DNS
            flow = ("dns", src, dst) if src < dst else ("dns", dst, src)
    return Fragment((dgram, flow or ((src, dst) if src < dst else (dst, src)), flow)), False


class FragmentRouter:
    """Which key each datagram's fragments are sent by: its first fragment's flow when
    that fragment comes first (the reassembled packet is then translated by the worker
    that owns its connection), else its address pair; remembered for its other fragments
    (at most `size` datagrams, oldest forgotten)."""

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self.keys: dict[tuple, object] = {}

    def route(self, frag: Fragment) -> object:
        dgram, key, _ = frag
        known = self.keys.get(dgram)
        if known is not None:
            return known
        if len(self.keys) >= self.size:
            del self.keys[next(iter(self.keys))]
        self.keys[dgram] = key
        return key
