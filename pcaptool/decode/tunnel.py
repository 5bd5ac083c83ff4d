"""Encapsulations decoded through to the inner packet; each keeps its header in
rec["encap"] (with the outer IP/UDP headers it displaces), outermost first.

MPLS label stack (RFC 3032), PPPoE session (RFC 2516) and PPP (RFC 1661), GRE (RFC 2784,
RFC 2890, enhanced GRE of RFC 2637), VXLAN (RFC 7348), Geneve (RFC 8926). IP-in-IP needs
no module: the IP decoders move the outer header into rec["encap"] themselves.
"""

from __future__ import annotations

import struct

from pcaptool.decode import ETHERTYPE, PPP_PROTO, Step, Truncated, need, outer
from pcaptool.decode.link import ETH_IPV4, ETH_IPV6, ETH_TEB

U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
PPPOE = struct.Struct("!BBHH")
GRE = struct.Struct("!HH")
GENEVE = struct.Struct("!BBHI")
MAX_LABELS = 16


def mpls(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    labels = []
    while True:
        if len(labels) == MAX_LABELS:
            raise Truncated("mpls", f"MPLS label stack deeper than {MAX_LABELS}")
        need("mpls", "MPLS label", off, 4, end)
        (entry,) = U32.unpack_from(buf, off)
        labels.append(entry >> 12)
        off += 4
        if entry & 0x100:  # bottom of stack
            break
    outer(rec).append({"type": "mpls", "labels": labels})
    # No protocol field: the first nibble says IPv4 or IPv6 (as tshark's default).
    v = buf[off] >> 4 if off < end else 0
    if v == 4:
        return ETHERTYPE, ETH_IPV4, off, end
    if v == 6:
        return ETHERTYPE, ETH_IPV6, off, end
    return None


def pppoe(buf: bytes, off: int, end: int, rec: dict) -> Step:
    need("pppoe", "PPPoE header", off, 6, end)
    _vt, code, session, length = PPPOE.unpack_from(buf, off)
    # The length counts the PPP protocol field and payload; trailers past it are padding.
    pend = min(end, off + 6 + length)
    proto, poff = _ppp_proto("pppoe", buf, off + 6, pend)
    outer(rec).append({"type": "pppoe", "session": session, "code": code, "ppp_proto": proto})
    return PPP_PROTO, proto, poff, pend


def ppp(buf: bytes, off: int, end: int, rec: dict) -> Step:
    """PPP in HDLC-like framing (RFC 1662) as GRE carries it: address/control optional,
    protocol 1 byte when compressed (odd value) or 2."""
    if off + 2 <= end and buf[off] == 0xFF and buf[off + 1] == 0x03:
        off += 2
    proto, off = _ppp_proto("ppp", buf, off, end)
    outer(rec).append({"type": "ppp", "ppp_proto": proto})
    return PPP_PROTO, proto, off, end


def _ppp_proto(layer: str, buf: bytes, off: int, end: int) -> tuple[int, int]:
    """The PPP protocol field: 1 byte when compressed (RFC 1661 §6.5, an odd value), else 2."""
    need(layer, "PPP protocol", off, 1, end)
    if buf[off] & 1:
        return buf[off], off + 1
    need(layer, "PPP protocol", off, 2, end)
    return U16.unpack_from(buf, off)[0], off + 2


def gre(buf: bytes, off: int, end: int, rec: dict) -> Step:
    need("gre", "GRE header", off, 4, end)
    flags, proto = GRE.unpack_from(buf, off)
    version = flags & 7
    g: dict = {"type": "gre", "version": version, "proto": proto}
    off += 4
    if flags & 0x8000:  # checksum present (+ reserved)
        off += 4
    if flags & 0x2000:
        need("gre", "GRE key", off, 4, end)
        g["key"] = U32.unpack_from(buf, off)[0]
        off += 4
    if flags & 0x1000:
        need("gre", "GRE sequence number", off, 4, end)
        g["seq"] = U32.unpack_from(buf, off)[0]
        off += 4
    if version == 1 and flags & 0x0080:  # enhanced GRE acknowledgment
        off += 4
    need("gre", "GRE header", off, 0, end)
    outer(rec, "ip").append(g)
    return ETHERTYPE, proto, off, end


def vxlan(buf: bytes, off: int, end: int, rec: dict) -> Step:
    need("vxlan", "VXLAN header", off, 8, end)
    (word,) = U32.unpack_from(buf, off + 4)
    outer(rec, "ip", "udp").append({"type": "vxlan", "vni": word >> 8})
    return ETHERTYPE, ETH_TEB, off + 8, end


def geneve(buf: bytes, off: int, end: int, rec: dict) -> Step:
    need("geneve", "Geneve header", off, 8, end)
    verlen, flags, proto, word = GENEVE.unpack_from(buf, off)
    optlen = (verlen & 0x3F) * 4
    if verlen >> 6:
        raise Truncated("geneve", f"Geneve version {verlen >> 6} is not known")
    need("geneve", "Geneve options", off + 8, optlen, end)
    outer(rec, "ip", "udp").append(
        {"type": "geneve", "vni": word >> 8, "proto": proto, "options_len": optlen}
    )
    return ETHERTYPE, proto, off + 8 + optlen, end
