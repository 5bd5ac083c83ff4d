"""Dispatch tables: which decoder reads the next layer, and the walk that follows them.

Each row is `key: (layer name, decoder)`; a decoder returns `(table, key, off, end)` for
the next layer or None (pcaptool/decode/__init__.py, which declares the tables). Adding a
protocol is a module and a row here: QUIC would be `443: ("quic", quic)` in UDP_PORT.
"""

from __future__ import annotations

from collections.abc import Callable

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
from pcaptool.decode import (
    ETHERTYPE,
    IP_PROTO,
    LINKTYPE,
    PPP_PROTO,
    TCP_PORT,
    UDP_PORT,
    PortTable,
    Table,
    Truncated,
    link,
    tunnel,
)
from pcaptool.decode.arp import arp
from pcaptool.decode.dns import dns_tcp, dns_udp
from pcaptool.decode.fastpath import eth_ipv4
from pcaptool.decode.icmp import icmpv4, icmpv6
from pcaptool.decode.ip import ipv4, ipv6
from pcaptool.decode.tcp import tcp
from pcaptool.decode.tls import looks_like_tls, tls
from pcaptool.decode.udp import udp

Row = tuple[str, Callable]

PROTO_ICMP, PROTO_IPIP, PROTO_TCP, PROTO_UDP = 1, 4, 6, 17
PROTO_IPV6, PROTO_GRE, PROTO_ICMPV6 = 41, 47, 58
PORT_VXLAN, PORT_GENEVE = 4789, 6081
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057
MAX_LAYERS = 24  # nested tunnels deeper than this are refused, not followed

LINKTYPE.update(
    {
        LINKTYPE_ETHERNET: ("l2", link.ethernet),
        LINKTYPE_LINUX_SLL: ("l2", link.sll),
        LINKTYPE_LINUX_SLL2: ("l2", link.sll2),
        LINKTYPE_NULL: ("l2", link.null),
        LINKTYPE_LOOP: ("l2", link.loop),
        LINKTYPE_RAW: ("l2", link.raw),
        link.LINKTYPE_RAW_BSD: ("l2", link.raw),
        link.LINKTYPE_RAW_OPENBSD: ("l2", link.raw),
        LINKTYPE_IPV4: ("l2", link.ipv4_only),
        LINKTYPE_IPV6: ("l2", link.ipv6_only),
    }
)
ETHERTYPE.update(
    {
        link.ETH_IPV4: ("ip", ipv4),
        link.ETH_IPV6: ("ip", ipv6),
        link.ETH_ARP: ("arp", arp),
        link.ETH_RARP: ("arp", arp),
        link.ETH_MPLS: ("mpls", tunnel.mpls),
        link.ETH_MPLS_MULTICAST: ("mpls", tunnel.mpls),
        link.ETH_PPPOE_SESSION: ("pppoe", tunnel.pppoe),
        link.ETH_PPP: ("ppp", tunnel.ppp),
        link.ETH_TEB: ("l2", link.ethernet),
    }
)
PPP_PROTO.update(
    {
        PPP_IPV4: ("ip", ipv4),
        PPP_IPV6: ("ip", ipv6),
    }
)
IP_PROTO.update(
    {
        PROTO_TCP: ("tcp", tcp),
        PROTO_UDP: ("udp", udp),
        PROTO_ICMP: ("icmp", icmpv4),
        PROTO_ICMPV6: ("icmp", icmpv6),
        PROTO_IPIP: ("ip", ipv4),
        PROTO_IPV6: ("ip", ipv6),
        PROTO_GRE: ("gre", tunnel.gre),
    }
)


DNS_TCP: Row = ("dns", dns_tcp)
DNS_UDP: Row = ("dns", dns_udp)
TCP_PORT.update({53: DNS_TCP, 5353: DNS_TCP, 5355: DNS_TCP})
TCP_PORT.sniffers.append((looks_like_tls, ("tls", tls)))
UDP_PORT.update(
    {
        53: DNS_UDP,
        5353: DNS_UDP,
        5355: DNS_UDP,
        PORT_VXLAN: ("vxlan", tunnel.vxlan),
        PORT_GENEVE: ("geneve", tunnel.geneve),
    }
)
# The names the rest of the package reads them by.
LINKTYPES, ETHERTYPES, PPP_PROTOS, IP_PROTOS = LINKTYPE, ETHERTYPE, PPP_PROTO, IP_PROTO
TCP_PORTS, UDP_PORTS = TCP_PORT, UDP_PORT
# What carries another packet inside: parallel.flow_of hands these to walk() so that a
# tunnelled connection is keyed by its inner addresses, as the translator keys it.
CARRIERS = frozenset(("l2", "ip", "mpls", "pppoe", "ppp", "gre", "vxlan", "geneve"))
TUNNEL_ETHERTYPES = frozenset(
    k for k, (layer, _) in ETHERTYPES.items() if layer in CARRIERS and layer != "ip"
)
TUNNEL_PROTOS = frozenset(k for k, (layer, _) in IP_PROTOS.items() if layer in CARRIERS)
TUNNEL_UDP_PORTS = frozenset(k for k, (layer, _) in UDP_PORTS.items() if layer in CARRIERS)
TABLES: dict[str, Table] = {
    t.name: t for t in (LINKTYPE, ETHERTYPE, PPP_PROTO, IP_PROTO, TCP_PORT, UDP_PORT)
}


def walk(buf: bytes, linktype: int, rec: dict) -> tuple[str, Table | None, object, int, int]:
    """Decode `buf` layer by layer into `rec`: (the last layer decoded, the table and
    key that had no decoder, or None and None when the last decoder ended the walk, and
    the offset and end of the bytes not decoded).

    The commonest packets (untagged Ethernet, IPv4 without options and not a later
    fragment, TCP or UDP) take `fastpath.eth_ipv4`, which fills `rec` exactly as the
    three decoders would (tests/test_decode_fastpath.py checks it); the rest, and what
    follows the transport header, go through the tables."""
    if linktype == LINKTYPE_ETHERNET:
        fast = eth_ipv4(buf, rec)
        if fast is not None:
            layer, table, key, off, end = fast
            if table is None:
                return fast
            row = table.get(key)
            if row is None:
                for test, sniffed in table.sniffers:  # PortTable.sniff, in line
                    if test(buf, off, end):
                        row = sniffed
                        break
                else:
                    return fast
            return walk_on(buf, row, off, end, rec, MAX_LAYERS - 3)
    return walk_tables(buf, linktype, rec)


def walk_tables(buf: bytes, linktype: int, rec: dict) -> tuple[str, Table | None, object, int, int]:
    """`walk` through the dispatch tables only, from the link layer (no fast path)."""
    row = LINKTYPE.get(linktype)
    if row is None:
        raise Truncated("l2", f"link type {linktype} is not decoded")
    return walk_on(buf, row, 0, len(buf), rec)


def walk_on(buf: bytes, row: Row, off: int, end: int, rec: dict, layers: int = MAX_LAYERS):
    """`walk` from the layer `row` reads at `buf[off:end]` (after the fast path, or a
    reassembled IP payload), following the tables for at most `layers` layers."""
    for _ in range(layers):
        layer, decode = row
        step = decode(buf, off, end, rec)
        if step is None:
            return layer, None, None, off, end
        table, key, off, end = step
        row = table.get(key)
        if row is None:
            if type(table) is PortTable:
                row = table.sniff(buf, off, end)
            if row is None:
                return layer, table, key, off, end
    raise Truncated("encap", f"more than {MAX_LAYERS} nested layers")


def endpoints(rec: dict) -> tuple[int, str, str, int | None, int | None] | None:
    """(proto, src, dst, sport, dport) of the innermost IP packet; ICMP's type and code
    stand for ports (as Community ID does), other protocols and fragments have none. A
    tunnel whose inner packet is not IP gives its outer IP header's (and UDP's)."""
    ip = rec.get("ip")
    if ip is None:
        return _outer_endpoints(rec.get("encap") or ())
    l4 = rec.get("tcp") or rec.get("udp")
    if l4 is not None:
        return ip["proto"], ip["src"], ip["dst"], l4["sport"], l4["dport"]
    icmp = rec.get("icmp")
    if icmp is not None:
        return ip["proto"], ip["src"], ip["dst"], icmp["type"], icmp["code"]
    return ip["proto"], ip["src"], ip["dst"], None, None


def _outer_endpoints(encap) -> tuple[int, str, str, int | None, int | None] | None:
    for i in range(len(encap) - 1, -1, -1):
        ip = encap[i]
        if ip["type"] in ("ipv4", "ipv6"):
            udp = encap[i + 1] if i + 1 < len(encap) and encap[i + 1]["type"] == "udp" else None
            if udp is not None:
                return ip["proto"], ip["src"], ip["dst"], udp["sport"], udp["dport"]
            return ip["proto"], ip["src"], ip["dst"], None, None
    return None
