"""UDP header (RFC 768)."""

from __future__ import annotations

import struct

from pcaptool.decode import need

UDP = struct.Struct("!HHHH")


def udp(buf: bytes, off: int, end: int, rec: dict) -> dict:
    need("udp", "UDP header", off, 8, end)
    sport, dport, length, _csum = UDP.unpack_from(buf, off)
    u = {"sport": sport, "dport": dport, "len": max(length - 8, 0)}
    rec["udp"] = u
    return u
