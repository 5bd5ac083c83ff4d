"""ARP and RARP over Ethernet/IPv4 (RFC 826, RFC 903)."""

from __future__ import annotations

import struct

from pcaptool.decode import Step, need
from pcaptool.decode.ip import ipv4_addr

ARP = struct.Struct("!HHBBH")
OPS = {
    1: "request",
    2: "reply",
    3: "rarp-request",
    4: "rarp-reply",
    8: "inarp-request",
    9: "inarp-reply",
}


def arp(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    need("arp", "ARP header", off, 8, end)
    htype, ptype, hlen, plen, op = ARP.unpack_from(buf, off)
    a = rec["arp"] = {"op": op, "op_name": OPS.get(op, str(op)), "htype": htype, "ptype": ptype}
    p = off + 8
    if hlen == 6 and plen == 4:
        need("arp", "ARP addresses", p, 20, end)
        a["sender_mac"] = buf[p : p + 6].hex(":")
        a["sender_ip"] = ipv4_addr(buf[p + 6 : p + 10])
        a["target_mac"] = buf[p + 10 : p + 16].hex(":")
        a["target_ip"] = ipv4_addr(buf[p + 16 : p + 20])
    return None
