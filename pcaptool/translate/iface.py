"""What this system says about a capture's interfaces: index and addresses (`pcap.iface`).

A plain pcap file names no interface, so `pcaptool translate --iface eth0` (the sidecar
passes the names its capture resolved) says which one it was; its index and addresses are
read from the live system, which is truthful where translate shares the capture's network
namespace (a Cloud Run sidecar shares the application's). Addresses come from libc's
getifaddrs(3), the source `ip addr` and Go's net.Interfaces read too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class LiveInterface:
    """One interface as the system knows it; `ifindex` None when it is not there."""

    name: str
    ifindex: int | None
    addresses: tuple[str, ...]  # CIDR, as `ip addr` shows them: 10.0.0.2/24, fe80::1/64

    def fields(self) -> dict:
        """The keys this adds to `pcap.iface` (docs/schema.md)."""
        return {"ifindex": self.ifindex, "addresses": self.addresses}


def live_interfaces(names: list[str]) -> list[LiveInterface]:
    """Each named interface with its index and addresses, in the order given."""
    addresses = _addresses()
    return [LiveInterface(n, _ifindex(n), tuple(addresses.get(n, ()))) for n in names]


def parse_names(value: str | None) -> list[str]:
    """`eth0,eth1` -> ["eth0", "eth1"]: the capture's interfaces in its interface order."""
    return [n.strip() for n in (value or "").split(",") if n.strip()]


def _ifindex(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:  # not on this system (or 'any', libpcap's pseudo-device)
        return None


class _Sockaddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 26)]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [
    ("next", ctypes.POINTER(_Ifaddrs)),
    ("name", ctypes.c_char_p),
    ("flags", ctypes.c_uint),
    ("addr", ctypes.POINTER(_Sockaddr)),
    ("netmask", ctypes.POINTER(_Sockaddr)),
    ("ifu", ctypes.POINTER(_Sockaddr)),
    ("data", ctypes.c_void_p),
]

# where the address bytes sit in sockaddr_in / sockaddr_in6 after sa_family (2 bytes)
_ADDR_AT = {socket.AF_INET: (2, 4), socket.AF_INET6: (6, 16)}


def _addresses() -> dict[str, list[str]]:
    """Interface name -> its IPv4 and IPv6 addresses with prefix length; {} if unknown."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return {}
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        return {}
    found: dict[str, list[str]] = {}
    try:
        node = head
        while node:
            ifa = node.contents
            node = ifa.next
            if not ifa.addr or ifa.addr.contents.family not in _ADDR_AT:
                continue
            family = ifa.addr.contents.family
            at, size = _ADDR_AT[family]
            addr = bytes(ifa.addr.contents.data[at : at + size])
            mask = bytes(ifa.netmask.contents.data[at : at + size]) if ifa.netmask else b""
            prefix = int.from_bytes(mask, "big").bit_count() if mask else size * 8
            ip = ipaddress.ip_address(addr)
            found.setdefault(ifa.name.decode(errors="replace"), []).append(f"{ip}/{prefix}")
    finally:
        libc.freeifaddrs(head)
    return found
