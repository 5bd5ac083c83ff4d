"""The sidecar's own connections leave from a reserved local port range (`PCAP_SELF_PORTS`).

Uploads of finished parts to Cloud Storage and metadata-server lookups go out through the
interface being captured; captured, each upload lands in the next part, which is then as
large as the one just uploaded (TLS does not compress), and part sizes grow rotation after
rotation. So every TCP connection pcaptool opens binds a local port from `PCAP_SELF_PORTS`
(the sidecar's default `61000-61099`, above Linux's default ephemeral range 32768-60999 so
the kernel never hands those ports to the application), and the capture filter always
ends in `and not (tcp portrange LO-HI or (udp portrange LO-HI and udp port 53))`
(``pcaptool.sidecar.bpf``): the host names of those connections are looked up from the
range too (``pcaptool.sidecar.selfdns``).

Unset (or `DISABLED`) nothing is bound and nothing excluded: plain `pcaptool upload` or
`capture` outside the sidecar behave as before.

- ``create_connection()``: like ``socket.create_connection`` from a port of the range (the
  name looked up by ``selfdns`` from a UDP port of the range); a
  port in use (`EADDRINUSE`, or `EADDRNOTAVAIL` for a 4-tuple still in TIME_WAIT) moves on
  to the next one, starting at a random offset.
- ``mount(session)``: a requests Session (google-cloud-storage, google-auth) binds so, its
  connections to an HTTP(S) proxy (`HTTPS_PROXY`) included.
- ``HTTPHandler``: the same for urllib.request (the metadata client).
- ``health_clause()``: the sidecar's health port (`PCAP_HC_PORT`) as seen on the wire:
  packets whose *local* end is that port, i.e. to or from one of this network namespace's
  own addresses on it. The port is the sidecar's listener, so such traffic is ours; an
  application's connection to a remote server on the same port number is kept.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import os
import random
import socket
import urllib.request

from pcaptool.errors import UsageError

ENV = "PCAP_SELF_PORTS"
SIDECAR_DEFAULT = "61000-61099"
MIN_PORT = 1024  # below this binding needs privileges and collides with services
_RETRY = {errno.EADDRINUSE, errno.EADDRNOTAVAIL}

PortRange = tuple[int, int]


def parse(raw: str | None, setting: str = ENV) -> PortRange | None:
    """`LO-HI` (or one port) as (lo, hi); empty or DISABLED is None (no reserved range)."""
    text = (raw or "").strip()
    if text.upper() in ("", "DISABLED"):
        return None
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise UsageError(f"{setting}: {text!r} is not a port range LOW-HIGH (e.g. 61000-61099)")
    lo, hi = int(low), int(high) if sep else int(low)
    if not (MIN_PORT <= lo <= hi <= 65535):
        raise UsageError(
            f"{setting}: {text!r} must be LOW-HIGH with {MIN_PORT} <= LOW <= HIGH <= 65535"
        )
    return lo, hi


def configured(env: dict[str, str] | None = None) -> PortRange | None:
    """The range `PCAP_SELF_PORTS` names in the environment, or None."""
    return parse((os.environ if env is None else env).get(ENV))


def ephemeral_overlap(ports: PortRange, path: str = "/proc/sys/net/ipv4/ip_local_port_range"):
    """The kernel's ephemeral range when it overlaps `ports` (the app could get them)."""
    try:
        with open(path) as f:
            lo, hi = (int(v) for v in f.read().split()[:2])
    except (OSError, ValueError):
        return None
    return (lo, hi) if lo <= ports[1] and ports[0] <= hi else None


def _bind_any(family: int, ports: PortRange, connect_to) -> socket.socket:
    """A socket of `family` bound to a free port of the range and connected."""
    lo, hi = ports
    count = hi - lo + 1
    start = random.randrange(count)
    last: OSError | None = None
    for i in range(count):
        port = lo + (start + i) % count
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            connect_to(sock)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in _RETRY:
                raise
            last = exc
    raise OSError(errno.EADDRINUSE, f"all {count} ports of {ENV}={lo}-{hi} are in use ({last})")


def create_connection(
    address: tuple[str, int], timeout: float | None = None, ports: PortRange | None = None
) -> socket.socket:
    """A TCP connection to `address` from a local port of `ports` (plain when None)."""
    if ports is None:
        return socket.create_connection(address, timeout)
    from pcaptool.sidecar import selfdns

    host, port = address
    error: OSError | None = None
    for family, sockaddr in selfdns.getaddrinfo(host, port, ports):  # looked up from the range

        def connect_to(sock: socket.socket, sockaddr=sockaddr) -> None:
            if timeout is not None:
                sock.settimeout(timeout)
            sock.connect(sockaddr)

        try:
            return _bind_any(family, ports, connect_to)
        except OSError as exc:
            error = exc
    raise error or OSError(f"getaddrinfo returned nothing for {host}")


# ------------------------------------------------------------------ urllib.request


class _BoundHTTPConnection(http.client.HTTPConnection):
    self_ports: PortRange | None = None

    def connect(self) -> None:
        self.sock = create_connection((self.host, self.port), self.timeout, self.self_ports)


class HTTPHandler(urllib.request.HTTPHandler):
    """urllib.request's http:// handler, connecting from the reserved range."""

    def __init__(self, ports: PortRange | None) -> None:
        super().__init__()
        self.connection_class = type(
            "SelfPortHTTPConnection", (_BoundHTTPConnection,), {"self_ports": ports}
        )

    def http_open(self, req):
        return self.do_open(self.connection_class, req)


# ------------------------------------------------------------------ requests / urllib3


def _pool_classes(ports: PortRange) -> dict[str, type]:
    from urllib3 import connectionpool
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    class Bound:
        def _new_conn(self) -> socket.socket:  # urllib3's own, with the reserved source port
            try:
                return create_connection((self._dns_host, self.port), self.timeout, ports)
            except socket.gaierror as e:
                raise NameResolutionError(self.host, self, e) from e
            except TimeoutError as e:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from e
            except OSError as e:
                raise NewConnectionError(self, f"Failed to establish a connection: {e}") from e

    http_conn = type("SelfPortHTTPConnection", (Bound, HTTPConnection), {})
    https_conn = type("SelfPortHTTPSConnection", (Bound, HTTPSConnection), {})
    return {
        "http": type("Pool", (connectionpool.HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("Pool", (connectionpool.HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


def mount(session, ports: PortRange | None = None):
    """Make a requests Session connect from `ports` (default: `PCAP_SELF_PORTS`)."""
    ports = configured() if ports is None else ports
    if ports is None:
        return session
    from requests.adapters import HTTPAdapter

    classes = _pool_classes(ports)

    class SelfPortAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = classes

        def proxy_manager_for(self, proxy, **proxy_kwargs):
            # HTTPS_PROXY/HTTP_PROXY: the connection to the proxy leaves from the range too
            # (CONNECT tunnels and plain forwarding alike; SOCKS proxies are not bound).
            manager = super().proxy_manager_for(proxy, **proxy_kwargs)
            if not proxy.lower().startswith("socks"):
                manager.pool_classes_by_scheme = classes
            return manager

    adapter = SelfPortAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


# ------------------------------------------------------------------ the health port


def local_networks(fib: str = "/proc/net/fib_trie", inet6: str = "/proc/net/if_inet6") -> list[str]:
    """This network namespace's own addresses (`host LOCAL` routes, IPv6 interface
    addresses) as BPF networks: `10.0.0.5/32`, `127.0.0.0/8`, `fd00::2/128`."""
    nets: list[str] = []
    try:
        with open(fib) as f:
            addr = None
            for line in f:
                text = line.strip()
                if text.startswith("|-- "):
                    addr = text[4:]
                elif addr and text.endswith(" host LOCAL") and text.startswith("/"):
                    nets.append(f"{addr}{text.split()[0]}")
    except OSError:
        pass
    try:
        with open(inet6) as f:
            for line in f:
                raw = line.split()[0]
                nets.append(f"{ipaddress.IPv6Address(int(raw, 16))}/128")
    except (OSError, ValueError, IndexError):
        pass
    out: list[str] = []
    for version in (4, 6):
        mine = [ipaddress.ip_network(n) for n in nets if ipaddress.ip_network(n).version == version]
        out += [str(n) for n in ipaddress.collapse_addresses(mine)]
    return out


def health_clause(port: int, nets: list[str]) -> str:
    """BPF for packets whose local end is `port` on one of `nets` (see the module doc)."""
    if not nets:
        return ""

    def side(d: str) -> str:
        hosts = " or ".join(
            f"{d} host {n.split('/')[0]}" if n.endswith(("/32", "/128")) else f"{d} net {n}"
            for n in nets
        )
        return f"(tcp {d} port {port} and ({hosts}))"

    return f"{side('src')} or {side('dst')}"
