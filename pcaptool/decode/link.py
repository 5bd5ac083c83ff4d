"""Link layers: Ethernet (802.1Q/QinQ), Linux cooked v1/v2, BSD loopback, raw IP.

Each decoder stores rec["l2"] and steps to the ETHERTYPE table. An Ethernet frame inside
a tunnel (VXLAN, Geneve, GRE bridging) is kept in rec["encap"]; rec["l2"] stays the
capture's own link layer. https://www.tcpdump.org/linktypes.html
"""

from __future__ import annotations

import struct

from pcaptool.capfile.reader import (
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)
from pcaptool.decode import ETHERTYPE, Step, need, outer

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_RARP = 0x8035
ETH_IPV6 = 0x86DD
ETH_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame follows (GRE, Geneve)
ETH_PPP = 0x880B  # PPP (enhanced GRE, RFC 2637)
ETH_MPLS = 0x8847
ETH_MPLS_MULTICAST = 0x8848
ETH_PPPOE_DISCOVERY = 0x8863
ETH_PPPOE_SESSION = 0x8864
LINKTYPE_RAW_BSD = 12  # DLT_RAW on most BSDs
LINKTYPE_RAW_OPENBSD = 14
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))

ETHERNET = struct.Struct("!6s6sH")
VLAN_TAG = struct.Struct("!HH")
SLL = struct.Struct("!HHH8sH")
SLL2 = struct.Struct("!HHIHBB8s")
U32_LE = struct.Struct("<I")
U32_BE = struct.Struct(">I")

# SLL packet types (linux/if_packet.h)
SLL_PKTTYPES = ("host", "broadcast", "multicast", "otherhost", "outgoing", "loopback", "fastroute")
# BSD address families seen in NULL/LOOP headers; IPv6 differs per BSD.
BSD_AF = {2: ETH_IPV4, 24: ETH_IPV6, 28: ETH_IPV6, 30: ETH_IPV6, 10: ETH_IPV6}


# `02:00:00:00:00:01` by its 6 bytes (a capture has few), bounded: emptied when full.
MAC_NAMES: dict[bytes, str] = {}
NAMES_LIMIT = 4096


def mac(b: bytes) -> str:
    s = MAC_NAMES.get(b)
    if s is None:
        if len(MAC_NAMES) >= NAMES_LIMIT:
            MAC_NAMES.clear()
        s = MAC_NAMES[b] = b.hex(":")
    return s


def ethertype_of_ip(buf: bytes, off: int) -> int:
    """For raw-IP link types: the version nibble says IPv4 or IPv6."""
    if off < len(buf):
        v = buf[off] >> 4
        if v == 4:
            return ETH_IPV4
        if v == 6:
            return ETH_IPV6
    return 0


def ethernet(buf: bytes, off: int, end: int, rec: dict) -> Step:
    if off + 14 > end:
        need("l2", "Ethernet header", off, 14, end)
    dst, src, etype = ETHERNET.unpack_from(buf, off)
    s = MAC_NAMES.get(src) or mac(src)
    d = MAC_NAMES.get(dst) or mac(dst)
    l2 = {"type": "ethernet", "src": s, "dst": d, "ethertype": 0}
    if "l2" in rec:  # the inner frame of a tunnel
        outer(rec, "ip", "udp").append(l2)
    else:
        rec["l2"] = l2
    off += 14
    if etype in VLAN_TPIDS:
        vlans = []
        while etype in VLAN_TPIDS:
            need("l2", "802.1Q tag", off, 4, end)
            tci, etype = VLAN_TAG.unpack_from(buf, off)
            vlans.append(tci & 0x0FFF)
            off += 4
        l2["vlan"] = vlans
    elif etype <= 1500:  # an 802.3 length: LLC follows, nothing we decode further
        l2["length"] = etype
        etype = 0
    l2["ethertype"] = etype
    return ETHERTYPE, etype, off, end


def sll(buf: bytes, off: int, end: int, rec: dict) -> Step:
    need("l2", "Linux cooked header", off, 16, end)
    pkttype, hatype, halen, addr, proto = SLL.unpack_from(buf, off)
    rec["l2"] = {
        "type": "sll",
        "pkttype": SLL_PKTTYPES[pkttype] if pkttype < 7 else str(pkttype),
        "hatype": hatype,
        "src": addr[: min(halen, 8)].hex(":"),
        "ethertype": proto,
    }
    return _sll_proto(proto, buf, off + 16, end)


def sll2(buf: bytes, off: int, end: int, rec: dict) -> Step:
    need("l2", "Linux cooked v2 header", off, 20, end)
    proto, _, ifindex, hatype, pkttype, halen, addr = SLL2.unpack_from(buf, off)
    rec["l2"] = {
        "type": "sll2",
        "pkttype": SLL_PKTTYPES[pkttype] if pkttype < 7 else str(pkttype),
        "hatype": hatype,
        "ifindex": ifindex,
        "src": addr[: min(halen, 8)].hex(":"),
        "ethertype": proto,
    }
    return _sll_proto(proto, buf, off + 20, end)


def _sll_proto(proto: int, buf: bytes, off: int, end: int) -> Step:
    if proto in VLAN_TPIDS:
        need("l2", "802.1Q tag", off, 4, end)
        _tci, proto = VLAN_TAG.unpack_from(buf, off)
        off += 4
    return ETHERTYPE, proto, off, end


def null(buf: bytes, off: int, end: int, rec: dict) -> Step:
    need("l2", "loopback header", off, 4, end)
    (family,) = U32_LE.unpack_from(buf, off)
    if family > 0xFFFF:  # written by a big-endian host
        (family,) = U32_BE.unpack_from(buf, off)
    etype = BSD_AF.get(family, 0)
    rec["l2"] = {"type": "null", "family": family, "ethertype": etype}
    return ETHERTYPE, etype, off + 4, end


def loop(buf: bytes, off: int, end: int, rec: dict) -> Step:
    need("l2", "loopback header", off, 4, end)
    (family,) = U32_BE.unpack_from(buf, off)
    etype = BSD_AF.get(family, 0)
    rec["l2"] = {"type": "loop", "family": family, "ethertype": etype}
    return ETHERTYPE, etype, off + 4, end


def raw(buf: bytes, off: int, end: int, rec: dict) -> Step:
    return ETHERTYPE, ethertype_of_ip(buf, off), off, end


def ipv4_only(buf: bytes, off: int, end: int, rec: dict) -> Step:
    return ETHERTYPE, ETH_IPV4, off, end


def ipv6_only(buf: bytes, off: int, end: int, rec: dict) -> Step:
    return ETHERTYPE, ETH_IPV6, off, end


# Where the network header starts for link types with a fixed-size header and no
# ethertype to read (parallel.flow_of's fast path; Ethernet is read there with its tags).
FIXED_OFFSETS = {
    LINKTYPE_LINUX_SLL: 16,
    LINKTYPE_LINUX_SLL2: 20,
    LINKTYPE_NULL: 4,
    LINKTYPE_LOOP: 4,
    LINKTYPE_RAW: 0,
    LINKTYPE_IPV4: 0,
    LINKTYPE_IPV6: 0,
    LINKTYPE_RAW_BSD: 0,
    LINKTYPE_RAW_OPENBSD: 0,
}
