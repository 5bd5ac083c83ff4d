"""Build a BPF filter expression from the reference sidecar's simple settings.

The settings and their defaults are those of the Cloud Run tcpdump sidecar (`PCAP_L3_PROTOS`,
`PCAP_L4_PROTOS`, `PCAP_IPV4`, `PCAP_IPV6`, `PCAP_HOSTS`, `PCAP_PORTS`, `PCAP_TCP_FLAGS`):
each setting makes one clause and the clauses are AND-ed, in that order; `PCAP_IPV4`,
`PCAP_IPV6` and the addresses `PCAP_HOSTS` resolves to share one clause (any of them).
Added here: exclusions (`and not (...)`) and periodic re-resolution of the host names.

Unlike the reference, every value is validated and then re-printed from its parsed form
(an address from `ipaddress`, a port from `int`), so nothing a user typed is ever pasted into
the expression; a value that does not parse is refused with a `UsageError`. Output is
deterministic: items are deduplicated and sorted (addresses numerically, IPv4 first).

TCP flags: libpcap's `tcp[tcpflags]` only matches IPv4 (`ip6 and tcp[13] ...` "rejects all
packets"), so IPv6 gets its own test on the fixed header: next header is TCP (`ip6[6] = 6`)
and the flags byte is at 40 + 13. An IPv6 packet with extension headers before TCP is not
matched by the flags clause (BPF has no loop to walk the header chain).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pcaptool.errors import PcapToolError, UsageError
from pcaptool.sidecar import selfport

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Values that mean "no restriction" (reference: strings.EqualFold(..., "ALL"/"ANY")).
_UNRESTRICTED = {"", "all", "any"}
_DISABLED = {"", "disabled", "all", "any"}

# PCAP_L3_PROTOS / PCAP_L4_PROTOS aliases the reference accepts, plus icmp/icmp6 here.
L3_ALIASES = {
    "ip": "ip",
    "ip4": "ip",
    "ipv4": "ip",
    "4": "ip",
    "0x04": "ip",
    "ip6": "ip6",
    "ipv6": "ip6",
    "41": "ip6",
    "0x29": "ip6",
    # ARP has no transport layer: asked for, it is captured beside the IP clauses.
    "arp": "arp",
    "0x0806": "arp",
}
L3_ORDER = ("ip", "ip6", "arp")
L4_ALIASES = {
    "tcp": "tcp",
    "6": "tcp",
    "0x06": "tcp",
    "udp": "udp",
    "17": "udp",
    "0x11": "udp",
    "icmp": "icmp",
    "1": "icmp",
    "0x01": "icmp",
    "icmp6": "icmp6",
    "icmpv6": "icmp6",
    "58": "icmp6",
    "0x3a": "icmp6",
}
L4_ORDER = ("tcp", "udp", "icmp", "icmp6")

# TCP flag name -> (bit, libpcap constant), in header bit order (RFC 9293 section 3.1).
TCP_FLAGS = {
    "fin": (0x01, "tcp-fin"),
    "syn": (0x02, "tcp-syn"),
    "rst": (0x04, "tcp-rst"),
    "psh": (0x08, "tcp-push"),
    "ack": (0x10, "tcp-ack"),
    "urg": (0x20, "tcp-urg"),
    "ece": (0x40, "tcp-ece"),
    "cwr": (0x80, "tcp-cwr"),
}
_TCP_FLAG_ALIASES = {"push": "psh"}

# RFC 1123 host name labels; the last label may not be all digits (RFC 3696 section 2).
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

Resolver = Callable[[str], set[IPAddress]]


def _items(setting: str, raw: str | None) -> list[str]:
    """Split a comma-separated setting; empty items are skipped like the reference does."""
    return [item.strip() for item in (raw or "").split(",") if item.strip()]


def _only_keyword(setting: str, items: list[str], keywords: set[str]) -> bool:
    """True when the setting is one of `keywords` (no restriction); mixing is refused."""
    words = [i for i in items if i.lower() in keywords]
    if not words:
        return not items
    if len(items) > len(words):
        raise UsageError(f"{setting}: '{words[0]}' cannot be combined with other values")
    return True


def is_dns_name(name: str) -> bool:
    """A syntactically valid DNS host name (letters, digits, hyphens; 253 characters at most)."""
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def parse_l3(raw: str | None) -> list[str]:
    items = _items("PCAP_L3_PROTOS", raw)
    if _only_keyword("PCAP_L3_PROTOS", items, _UNRESTRICTED | {"ip or ip6"}):
        return ["ip", "ip6"]  # the seed README's default; arp only when named
    found = set()
    for item in items:
        proto = L3_ALIASES.get(item.lower())
        if proto is None:
            raise UsageError(
                f"PCAP_L3_PROTOS: unknown network protocol {item!r} (use ipv4, ipv6, arp or ALL)"
            )
        found.add(proto)
    return [p for p in L3_ORDER if p in found]


def parse_l4(raw: str | None) -> list[str]:
    items = _items("PCAP_L4_PROTOS", raw)
    if _only_keyword("PCAP_L4_PROTOS", items, _UNRESTRICTED | {"tcp or udp"}):
        return ["tcp", "udp"]
    found = set()
    for item in items:
        proto = L4_ALIASES.get(item.lower())
        if proto is None:
            raise UsageError(
                f"PCAP_L4_PROTOS: unknown transport protocol {item!r} "
                "(use tcp, udp, icmp, icmp6 or ALL)"
            )
        found.add(proto)
    return [p for p in L4_ORDER if p in found]


def parse_networks(
    setting: str, raw: str | None, version: int
) -> tuple[list[IPAddress], list[IPNetwork]]:
    """Addresses and CIDR networks of one IP version; DISABLED/ALL/ANY mean none."""
    items = _items(setting, raw)
    if _only_keyword(setting, items, _DISABLED):
        return [], []
    addrs: list[IPAddress] = []
    nets: list[IPNetwork] = []
    for item in items:
        try:
            if "/" in item:
                # Host bits are cleared (10.0.0.1/8 -> 10.0.0.0/8): libpcap refuses them.
                net = ipaddress.ip_network(item, strict=False)
                if net.prefixlen == net.max_prefixlen:
                    addrs.append(net.network_address)
                else:
                    nets.append(net)
                found = net.version
            else:
                addr = ipaddress.ip_address(item)
                addrs.append(addr)
                found = addr.version
        except ValueError:
            raise UsageError(
                f"{setting}: {item!r} is not an IPv{version} address or CIDR network"
            ) from None
        if found != version:
            raise UsageError(f"{setting}: {item!r} is not an IPv{version} address or network")
    return addrs, nets


def parse_hosts(setting: str, raw: str | None) -> list[str]:
    """Host names (validated DNS names) or IP literals; ALL/ANY mean no restriction."""
    items = _items(setting, raw)
    if _only_keyword(setting, items, _UNRESTRICTED):
        return []
    hosts = []
    for item in items:
        try:
            hosts.append(str(ipaddress.ip_address(item)))
            continue
        except ValueError:
            pass
        if not is_dns_name(item):
            raise UsageError(f"{setting}: {item!r} is not a valid host name")
        hosts.append(item.lower().rstrip("."))
    return sorted(set(hosts))


def parse_ports(setting: str, raw: str | None) -> list[tuple[int, int]]:
    """Ports 1-65535 or ranges `LOW-HIGH`, as sorted (low, high) pairs; ALL/ANY mean none."""
    items = _items(setting, raw)
    if _only_keyword(setting, items, _UNRESTRICTED):
        return []
    ports = set()
    for item in items:
        low, sep, high = item.partition("-")
        try:
            if not low.isdigit() or (sep and not high.isdigit()):
                raise ValueError
            lo, hi = int(low), int(high) if sep else int(low)
        except ValueError:
            raise UsageError(f"{setting}: {item!r} is not a port number or range") from None
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or hi < lo:
            raise UsageError(f"{setting}: {item!r} is out of range (ports are 1-65535)")
        ports.add((lo, hi))
    return sorted(ports)


def parse_tcp_flags(raw: str | None) -> list[str]:
    items = _items("PCAP_TCP_FLAGS", raw)
    if _only_keyword("PCAP_TCP_FLAGS", items, _UNRESTRICTED):
        return []
    found = set()
    for item in items:
        name = _TCP_FLAG_ALIASES.get(item.lower(), item.lower())
        if name not in TCP_FLAGS:
            raise UsageError(
                f"PCAP_TCP_FLAGS: {item!r} is not a TCP flag (use {', '.join(TCP_FLAGS)})"
            )
        found.add(name)
    return [f for f in TCP_FLAGS if f in found]


def _addr_key(a: IPAddress | IPNetwork) -> tuple[int, int, int]:
    if isinstance(a, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return (a.version, int(a.network_address), a.prefixlen)
    return (a.version, int(a), 0)


# Bounds that keep libpcap's compile quick and the program under the kernel's limit.
# libpcap's code generator and optimiser are superlinear in the number of tests: 1,000
# separate `port N` take minutes and compile to more than BPF_MAXINSNS instructions
# anyway (about 5 per port, 4 per address), so longer lists are refused up front.
BPF_MAXINSNS = 4096  # linux/bpf_common.h: the most a classic BPF socket filter may hold
MAX_PORT_TERMS = 128  # ports or ranges after merging neighbours, per setting
MAX_ADDRESS_TERMS = 1024  # addresses or networks after merging, per clause
BALANCE_OVER = 16  # longer `or` lists are nested in balanced parentheses


def _any_of(terms: list[str]) -> str:
    """`a or b or c`; a long list as a balanced tree, which libpcap compiles in n log n
    instead of n² (a flat chain is backpatched once per term)."""
    if len(terms) <= BALANCE_OVER:
        return " or ".join(terms)
    mid = len(terms) // 2
    return f"({_any_of(terms[:mid])}) or ({_any_of(terms[mid:])})"


def merge_networks(addrs: Iterable[IPAddress], nets: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Addresses and networks as the fewest networks covering exactly the same addresses
    (an address inside a network goes, neighbours join: 10.0.0.0 + 10.0.0.1 = 10.0.0.0/31)."""
    merged: list[IPNetwork] = []
    for version in (4, 6):
        items = [ipaddress.ip_network(a) for a in addrs if a.version == version]
        items += [n for n in nets if n.version == version]
        merged += ipaddress.collapse_addresses(items)
    return merged


def address_clause(
    addrs: Iterable[IPAddress], nets: Iterable[IPNetwork], setting: str = "PCAP_IPV4/PCAP_IPV6"
) -> str:
    """`host A or host B or net N`, hosts first; addresses inside a listed network dropped."""
    merged = merge_networks(addrs, nets)
    if len(merged) > MAX_ADDRESS_TERMS:
        raise UsageError(
            f"{setting}: {len(merged)} separate addresses/networks (after merging) are more "
            f"than the {MAX_ADDRESS_TERMS} a capture filter can test within BPF's "
            f"{BPF_MAXINSNS}-instruction limit: give CIDR networks instead"
        )
    hosts = [n for n in merged if n.prefixlen == n.max_prefixlen]
    networks = sorted((n for n in merged if n.prefixlen != n.max_prefixlen), key=_addr_key)
    hosts.sort(key=_addr_key)
    return _any_of([f"host {n.network_address}" for n in hosts] + [f"net {n}" for n in networks])


def merge_ports(ports: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with overlapping and touching ones joined (80, 81-90, 91 = 80-91)."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ports):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def ports_clause(ports: Iterable[tuple[int, int]], setting: str = "PCAP_PORTS") -> str:
    merged = merge_ports(ports)
    if len(merged) > MAX_PORT_TERMS:
        raise UsageError(
            f"{setting}: {len(merged)} separate ports/ranges (after merging neighbours) are "
            f"more than the {MAX_PORT_TERMS} a capture filter can test within BPF's "
            f"{BPF_MAXINSNS}-instruction limit: give ranges (LOW-HIGH) instead"
        )
    return _any_of([f"port {lo}" if lo == hi else f"portrange {lo}-{hi}" for lo, hi in merged])


def tcp_flags_clause(flags: list[str]) -> str:
    """Any of the flags set, on IPv4 (`tcp[tcpflags]`) or IPv6 without extension headers."""
    if not flags:
        return ""
    mask = 0
    for f in flags:
        mask |= TCP_FLAGS[f][0]
    names = "|".join(TCP_FLAGS[f][1] for f in flags)
    return f"(tcp[tcpflags] & ({names}) != 0) or (ip6[6] = 6 and ip6[53] & 0x{mask:02x} != 0)"


def resolve_host(name: str, self_ports: selfport.PortRange | None = None) -> set[IPAddress]:
    """A and AAAA answers for a host name (an IP literal resolves to itself); with
    `self_ports`, DNS is asked from that range (sidecar/selfdns.py: never captured)."""
    try:
        return {ipaddress.ip_address(name)}
    except ValueError:
        pass
    try:
        if self_ports is not None:
            from pcaptool.sidecar import selfdns

            addrs = [sa[0] for _, sa in selfdns.getaddrinfo(name, 0, self_ports)]
        else:
            addrs = [i[4][0] for i in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)]
    except (socket.gaierror, UnicodeError) as exc:
        raise PcapToolError(f"cannot resolve host {name!r}: {exc}") from None
    # Scoped IPv6 answers (fe80::1%eth0) lose their zone: BPF matches bare addresses.
    return {ipaddress.ip_address(a.split("%")[0]) for a in addrs}


@dataclass
class FilterSettings:
    """The raw settings, as given on the command line or in `PCAP_*` variables."""

    raw_filter: str | None = None
    l3_protos: str | None = "ipv4,ipv6"
    l4_protos: str | None = "tcp,udp"
    ipv4: str | None = "DISABLED"
    ipv6: str | None = "DISABLED"
    hosts: str | None = "ALL"
    ports: str | None = "ALL"
    tcp_flags: str | None = "ANY"
    exclude_hosts: str | None = None
    exclude_ports: str | None = None
    exclude_ipv4: str | None = None
    exclude_ipv6: str | None = None
    self_ports: str | None = None  # PCAP_SELF_PORTS: pcaptool's own connections (selfport)
    health_port: int | None = None  # PCAP_HC_PORT: the sidecar's own listener (selfport)


class FilterBuilder:
    """Validated settings; `build()` resolves host names and returns the expression.

    `refresh()` re-resolves and returns the new expression only when an answer changed,
    which is what `capture --resolve-every` applies to the live handles.
    """

    def __init__(
        self,
        settings: FilterSettings,
        resolver: Resolver = resolve_host,
        local_networks=selfport.local_networks,
    ) -> None:
        s = settings
        self.resolver = resolver
        raw = (s.raw_filter or "").strip()
        self.raw_filter = None if raw.upper() in ("", "DISABLED") else raw
        self.l3 = parse_l3(s.l3_protos)
        self.l4 = parse_l4(s.l4_protos)
        v4a, v4n = parse_networks("PCAP_IPV4", s.ipv4, 4)
        v6a, v6n = parse_networks("PCAP_IPV6", s.ipv6, 6)
        self.addrs, self.nets = v4a + v6a, v4n + v6n
        self.hosts = parse_hosts("PCAP_HOSTS", s.hosts)
        self.ports = parse_ports("PCAP_PORTS", s.ports)
        self.flags = parse_tcp_flags(s.tcp_flags)
        xa4, xn4 = parse_networks("--exclude-ipv4", s.exclude_ipv4, 4)
        xa6, xn6 = parse_networks("--exclude-ipv6", s.exclude_ipv6, 6)
        self.x_addrs, self.x_nets = xa4 + xa6, xn4 + xn6
        self.x_hosts = parse_hosts("--exclude-hosts", s.exclude_hosts)
        self.x_ports = parse_ports("--exclude-ports", s.exclude_ports)
        self.self_ports = selfport.parse(s.self_ports)
        if resolver is resolve_host and self.self_ports:  # lookups during capture: not captured
            self.resolver = functools.partial(resolve_host, self_ports=self.self_ports)
        self.health_port = s.health_port
        self.local_nets = local_networks() if s.health_port else []
        self.resolved: dict[str, frozenset[IPAddress]] = {}
        self.expression: str | None = None

    @property
    def host_names(self) -> list[str]:
        """Every name to resolve (simple filter and exclusions); empty when raw."""
        names = set(self.x_hosts)
        if not self.raw_filter:
            names.update(self.hosts)
        return sorted(names)

    def resolve(self) -> dict[str, frozenset[IPAddress]]:
        return {name: frozenset(self.resolver(name)) for name in self.host_names}

    def render(self, resolved: dict[str, frozenset[IPAddress]]) -> str:
        """The expression for a given set of answers (pure: no lookups)."""
        clauses: list[str] = []
        if self.raw_filter:
            clauses.append(self.raw_filter)
        else:
            host_addrs = [a for h in self.hosts for a in resolved[h]]
            l3 = [p for p in self.l3 if p != "arp"]
            clauses += [
                " or ".join(l3),
                " or ".join(self.l4),
                address_clause(
                    self.addrs + host_addrs, self.nets, "PCAP_IPV4/PCAP_IPV6/PCAP_HOSTS"
                ),
                ports_clause(self.ports, "PCAP_PORTS"),
                tcp_flags_clause(self.flags),
            ]
        expr = " and ".join(f"({c})" for c in clauses if c)
        if not self.raw_filter and "arp" in self.l3:
            expr = f"(arp or ({expr}))" if l3 else "(arp)"
        x_addrs = self.x_addrs + [a for h in self.x_hosts for a in resolved[h]]
        excluded = [
            address_clause(x_addrs, self.x_nets, "--exclude-ipv4/--exclude-ipv6/--exclude-hosts"),
            ports_clause(self.x_ports, "--exclude-ports"),
        ]
        if self.self_ports:  # pcaptool's own uploads, whatever the user's filter is
            # ... and their DNS lookups (sidecar/selfdns.py): UDP to or from port 53 only
            excluded.append(
                "tcp portrange {0}-{1} or (udp portrange {0}-{1} and udp port 53)".format(
                    *self.self_ports
                )
            )
        if self.health_port:  # the health probes to the sidecar's own listener
            excluded.append(selfport.health_clause(self.health_port, self.local_nets))
        for clause in excluded:
            if clause:
                expr = f"{expr} and not ({clause})" if expr else f"not ({clause})"
        return expr

    def build(self) -> str:
        self.resolved = self.resolve()
        self.expression = self.render(self.resolved)
        return self.expression

    def refresh(self) -> str | None:
        """Re-resolve the host names; the new expression if any answer changed, else None."""
        if not self.host_names:
            return None
        resolved = self.resolve()
        if resolved == self.resolved:
            return None
        self.resolved = resolved
        expression = self.render(resolved)
        if expression == self.expression:
            return None
        self.expression = expression
        return expression


def compile_check(expression: str, linktype: int = 1, snaplen: int = 65536) -> None:
    """Compile with libpcap (no device needed); a bad expression is a one-line UsageError."""
    import pcapy

    try:
        program = pcapy.compile(linktype, snaplen, expression, 1, 0xFFFFFFFF)
    except pcapy.PcapError as exc:
        if len(expression) > 200:
            expression = expression[:200] + "…"
        raise UsageError(f"invalid filter expression {expression!r}: {exc}") from None
    size = len(program.get_bpf())
    if size > BPF_MAXINSNS:
        raise UsageError(
            f"the capture filter (PCAP_FILTER or the simple filter settings) compiles to {size} "
            f"BPF instructions, beyond the kernel's limit of {BPF_MAXINSNS}: make it shorter"
        )
