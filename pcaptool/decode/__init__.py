"""Packet decoders: one module per protocol, joined by the dispatch tables of `table.py`.

Every decoder has the same shape::

    def decode(buf: bytes, off: int, end: int, rec: dict) -> Step | None

It reads its protocol at `buf[off:end]`, stores a JSON-ready dict under its key in `rec`,
and returns the next step, `(table, key, off, end)`: the dispatch table that says what
comes next (`ETHERTYPE`, `IP_PROTO`, `TCP_PORT`, `UDP_PORT`, ...), the key to
look up in it (an ethertype, a protocol number, a port: the destination port unless only the source port has a row) and where the
next layer lies. `None` means nothing further is decoded. A header cut short raises
`Truncated`, after storing whatever it could read (a TCP header cut to 4 bytes still
stores its ports); the translator turns it into an `error` object on the record and the
stream goes on.

Adding a protocol is adding a module with such a function and a row in `table.py`.
"""

from __future__ import annotations

from collections.abc import Callable


class Table(dict):
    """A dispatch table, key -> (layer name, decoder). The tables are declared here so
    that decoders can name them; their rows are in pcaptool/decode/table.py."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class PortTable(Table):
    """Application decoders by port. A transport decoder looks up its destination port,
    then its source port (`key`); when neither has a row, `sniff` tries content tests
    (a protocol recognised on any port)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sniffers: list[tuple[Callable, tuple[str, Callable]]] = []

    def sniff(self, buf: bytes, off: int, end: int):
        for test, row in self.sniffers:
            if test(buf, off, end):
                return row
        return None


LINKTYPE = Table("linktype")
ETHERTYPE = Table("ethertype")
PPP_PROTO = Table("ppp_proto")
IP_PROTO = Table("ip_proto")
TCP_PORT = PortTable("tcp_port")
UDP_PORT = PortTable("udp_port")
# Not a dispatch table: the step an IP decoder returns for a whole fragment; the walk
# stops there and the translator's reassembler (pcaptool/decode/ipfrag.py) goes on.
IP_FRAGMENT = Table("ip_fragment")

Step = tuple[Table, object, int, int]


class Truncated(Exception):
    """A header is shorter than its protocol needs (or malformed)."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(reason)
        self.layer = layer
        self.reason = reason


def need(layer: str, what: str, off: int, size: int, end: int) -> None:
    """Raise Truncated unless `size` bytes of `what` fit between `off` and `end`."""
    if off + size > end:
        raise Truncated(layer, f"{what} cut short: {max(end - off, 0)} of {size} bytes")


def outer(rec: dict, *keys: str) -> list:
    """Move the layers under `keys` (those present) into `rec["encap"]`, outermost first.

    Called by a tunnel before the inner packet's layers reuse the same keys: the record's
    `l2` stays the capture's link layer, `ip`/`tcp`/`udp` describe the innermost packet,
    and `encap` lists what lies between, in wire order, each with its `type`.
    """
    encap = rec.get("encap")
    if encap is None:
        encap = rec["encap"] = []
    for key in keys:
        layer = rec.pop(key, None)
        if layer is not None:
            kind = f"ipv{layer['version']}" if key == "ip" else key
            encap.append({"type": kind, **layer})
    return encap
