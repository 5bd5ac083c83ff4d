"""UDP header (RFC 768); a datagram with payload steps to the UDP_PORT table."""

from __future__ import annotations

import struct

from pcaptool.decode import UDP_PORT, Step, need

UDP = struct.Struct("!HHHH")
PORTS = struct.Struct("!HH")


def udp(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    if off + 8 > end:
        if off + 4 <= end:  # a header cut short keeps its ports
            sport, dport = PORTS.unpack_from(buf, off)
            rec["udp"] = {"sport": sport, "dport": dport}
        need("udp", "UDP header", off, 8, end)
    sport, dport, length, _csum = UDP.unpack_from(buf, off)
    size = max(length - 8, 0)
    rec["udp"] = {"sport": sport, "dport": dport, "len": size}
    # The UDP length bounds the payload (Ethernet padding is not payload); 0 is TSO.
    pend = min(end, off + length) if length >= 8 else end
    return (
        (UDP_PORT, sport if dport not in UDP_PORT and sport in UDP_PORT else dport, off + 8, pend)
        if pend > off + 8
        else None
    )
