"""Name lookups of the sidecar's own connections, sent from `PCAP_SELF_PORTS`.

libc's resolver sends each query from a UDP port of its own choosing, which no capture
filter can tell from the application's. The sidecar's connections (sidecar/selfport.py)
resolve their host names here instead: an IP literal is itself, `/etc/hosts` answers
first (as nsswitch's usual `files dns`), then DNS through dnspython with the servers,
search list and `ndots` of `/etc/resolv.conf`, each query sent from a UDP port of the
reserved range (a truncated answer is asked again over TCP from the same port). The
capture filter leaves out `udp port 53` from the range and all TCP of the range, so these
lookups are never captured, and no application DNS is hidden (its resolver uses the
kernel's ephemeral ports, below the range). Answers are cached for their TTL. Without a
usable `/etc/resolv.conf` the system resolver is used (its queries are then captured).
"""

from __future__ import annotations

import ipaddress
import random
import socket
import threading

HOSTS = "/etc/hosts"
LIFETIME = 5.0  # seconds for one name, every server and retry included
_ATTEMPTS = 3  # source ports tried when one is taken
_lock = threading.Lock()
_resolver = None  # dns.resolver.Resolver, or False when resolv.conf is unusable

Sockaddr = tuple


def hosts_lookup(name: str, path: str = HOSTS) -> list[str]:
    """The addresses `path` (hosts(5) syntax) gives `name`, in file order."""
    want = name.rstrip(".").lower()
    found: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and want in (n.lower() for n in fields[1:]):
            found.append(fields[0])
    return found


def _system_resolver():
    global _resolver
    with _lock:
        if _resolver is None:
            import dns.resolver

            try:
                _resolver = dns.resolver.Resolver()
                _resolver.cache = dns.resolver.LRUCache(512)
            except (dns.resolver.NoResolverConfiguration, OSError):
                _resolver = False
        return _resolver


def dns_lookup(name: str, ports: tuple[int, int], resolver=None) -> list[str] | None:
    """A then AAAA answers for `name`, each query from a UDP port of `ports`.

    [] when the name has no address; None when DNS cannot be asked (no resolv.conf)."""
    import dns.exception
    import dns.resolver

    resolver = resolver or _system_resolver()
    if not resolver:
        return None
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        for attempt in range(_ATTEMPTS):
            try:
                answer = resolver.resolve(
                    name,
                    rdtype,
                    source_port=random.randint(*ports),
                    lifetime=LIFETIME,
                    search=True,
                )
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                break
            except dns.resolver.NoNameservers:  # every server failed (or the port was taken)
                if attempt == _ATTEMPTS - 1:
                    raise socket.gaierror(
                        socket.EAI_AGAIN, f"{name}: no DNS server answered"
                    ) from None
                continue
            except dns.exception.Timeout:
                raise socket.gaierror(socket.EAI_AGAIN, f"{name}: DNS timed out") from None
            found += [r.address for r in answer]
            break
    return found


def getaddrinfo(host: str, port: int, ports: tuple[int, int]) -> list[tuple[int, Sockaddr]]:
    """(family, sockaddr) for a TCP connection to host:port, looked up from `ports`."""
    try:
        addrs = [str(ipaddress.ip_address(host.split("%")[0]))]
        if "%" in host:  # a scoped literal: the system knows the zone
            addrs = None
    except ValueError:
        addrs = hosts_lookup(host) or dns_lookup(host, ports)
    if addrs is None:
        return [
            (family, sockaddr)
            for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        ]
    if not addrs:
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: Name or service not known")
    out = []
    for addr in addrs:
        ip = ipaddress.ip_address(addr)
        if ip.version == 6:
            out.append((socket.AF_INET6, (addr, port, 0, 0)))
        else:
            out.append((socket.AF_INET, (addr, port)))
    return out
