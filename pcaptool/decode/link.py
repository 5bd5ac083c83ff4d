"""Link layers: Ethernet (802.1Q/QinQ), Linux cooked v1/v2, BSD loopback, raw IP.

Each decoder returns (ethertype, offset of the network header); the l2 dict goes into
rec["l2"]. https://www.tcpdump.org/linktypes.html
"""

from __future__ import annotations

import struct

from pcaptool.capfile.reader import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)
from pcaptool.decode import need

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_RARP = 0x8035
ETH_IPV6 = 0x86DD
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


def mac(b: bytes) -> str:
    return b.hex(":")


def ethertype_of_ip(buf: bytes, off: int) -> int:
    """For raw-IP link types: the version nibble says IPv4 or IPv6."""
    if off < len(buf):
        v = buf[off] >> 4
        if v == 4:
            return ETH_IPV4
        if v == 6:
            return ETH_IPV6
    return 0


def ethernet(buf: bytes, rec: dict) -> tuple[int, int]:
    end = len(buf)
    need("l2", "Ethernet header", 0, 14, end)
    dst, src, etype = ETHERNET.unpack_from(buf, 0)
    l2 = {"type": "ethernet", "src": src.hex(":"), "dst": dst.hex(":"), "ethertype": 0}
    rec["l2"] = l2
    off = 14
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
    return etype, off


def sll(buf: bytes, rec: dict) -> tuple[int, int]:
    need("l2", "Linux cooked header", 0, 16, len(buf))
    pkttype, hatype, halen, addr, proto = SLL.unpack_from(buf, 0)
    rec["l2"] = {
        "type": "sll",
        "pkttype": SLL_PKTTYPES[pkttype] if pkttype < 7 else str(pkttype),
        "hatype": hatype,
        "src": addr[: min(halen, 8)].hex(":"),
        "ethertype": proto,
    }
    return _sll_proto(proto, buf, 16)


def sll2(buf: bytes, rec: dict) -> tuple[int, int]:
    need("l2", "Linux cooked v2 header", 0, 20, len(buf))
    proto, _, ifindex, hatype, pkttype, halen, addr = SLL2.unpack_from(buf, 0)
    rec["l2"] = {
        "type": "sll2",
        "pkttype": SLL_PKTTYPES[pkttype] if pkttype < 7 else str(pkttype),
        "hatype": hatype,
        "ifindex": ifindex,
        "src": addr[: min(halen, 8)].hex(":"),
        "ethertype": proto,
    }
    return _sll_proto(proto, buf, 20)


def _sll_proto(proto: int, buf: bytes, off: int) -> tuple[int, int]:
    if proto in VLAN_TPIDS:
        need("l2", "802.1Q tag", off, 4, len(buf))
        _tci, proto = VLAN_TAG.unpack_from(buf, off)
        return proto, off + 4
    return proto, off


def null(buf: bytes, rec: dict) -> tuple[int, int]:
    need("l2", "loopback header", 0, 4, len(buf))
    (family,) = U32_LE.unpack_from(buf, 0)
    if family > 0xFFFF:  # written by a big-endian host
        (family,) = U32_BE.unpack_from(buf, 0)
    etype = BSD_AF.get(family, 0)
    rec["l2"] = {"type": "null", "family": family, "ethertype": etype}
    return etype, 4


def loop(buf: bytes, rec: dict) -> tuple[int, int]:
    need("l2", "loopback header", 0, 4, len(buf))
    (family,) = U32_BE.unpack_from(buf, 0)
    etype = BSD_AF.get(family, 0)
    rec["l2"] = {"type": "loop", "family": family, "ethertype": etype}
    return etype, 4


def raw(buf: bytes, rec: dict) -> tuple[int, int]:
    return ethertype_of_ip(buf, 0), 0


def ipv4_only(buf: bytes, rec: dict) -> tuple[int, int]:
    return ETH_IPV4, 0


def ipv6_only(buf: bytes, rec: dict) -> tuple[int, int]:
    return ETH_IPV6, 0


DECODERS = {
    LINKTYPE_ETHERNET: ethernet,
    LINKTYPE_LINUX_SLL: sll,
    LINKTYPE_LINUX_SLL2: sll2,
    LINKTYPE_NULL: null,
    LINKTYPE_LOOP: loop,
    LINKTYPE_RAW: raw,
    12: raw,  # LINKTYPE_RAW on some BSDs (DLT_RAW = 12/14)
    14: raw,
    LINKTYPE_IPV4: ipv4_only,
    LINKTYPE_IPV6: ipv6_only,
}
