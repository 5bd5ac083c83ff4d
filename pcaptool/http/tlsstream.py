"""A stream analyzer that reads a TLS ClientHello from the reassembled client stream.

`pcaptool/decode/tls.py` decodes the TLS records that start in one packet, so a
ClientHello that does not fit its first segment (or is split over several records) is
only `handshake_truncated` there. `TlsHelloStream` takes such a connection, feeds the
client's bytes to `pcaptool.http.tlshello.HelloReader` and, on the packet that completes
the hello, fills that record's `tls` (`reassembled: true`, SNI, ALPN, versions, ECH,
GREASE). Then the connection is bookkeeping only: nothing else is read.
"""

from __future__ import annotations

from pcaptool.http.tlshello import HelloReader
from pcaptool.tcp.connections import OTHER
from pcaptool.tcp.reassembly import Conn


def hello_needs_stream(payload: bytes) -> bool:
    """A TLS handshake record starting a ClientHello that this payload does not hold
    whole (the per-packet decoder reads the ones it does)."""
    if len(payload) < 9 or payload[0] != 22 or payload[1] != 3 or payload[5] != 1:
        return False
    rec_len = int.from_bytes(payload[3:5], "big")
    hs_len = int.from_bytes(payload[6:9], "big")
    return 5 + rec_len > len(payload) or 4 + hs_len > rec_len


class TlsHelloStream:
    """Direction `client`'s ClientHello; `tunnel` links it to a CONNECT exchange."""

    __slots__ = ("records", "client", "reader", "tunnel")

    def __init__(self, records, client: int, tunnel: dict | None = None) -> None:
        self.records = records
        self.client = client
        self.reader = HelloReader()
        self.tunnel = tunnel

    def data(self, conn: Conn, i: int, data, gap: int, ts: int, num: int, rec: dict) -> None:
        if i != self.client:
            return
        if gap:
            self.reader.done = True
        hello = self.reader.feed(data) if data else None
        if hello is not None:
            t = rec.get("tls")
            if not isinstance(t, dict):
                t = rec["tls"] = {"records": []}
            t["handshake"] = "ClientHello"
            t["hello_records"] = hello.pop("records")
            t.update(hello)
            t["reassembled"] = True
            t.pop("handshake_truncated", None)
            if self.tunnel is not None:
                t["tunnel"] = self.tunnel
        if self.reader.done and self.tunnel is None and conn.app is self:
            conn.app = OTHER  # the hello is read: nothing more to do on this connection

    def half_close(self, conn: Conn, i: int, ts: int, num: int, rec: dict | None) -> None:
        return None

    def close(self) -> None:
        self.reader = HelloReader()
        self.reader.done = True

    def trace(self) -> dict | None:
        return None

    def summary(self) -> dict:
        return {}
