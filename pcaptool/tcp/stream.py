"""The stream interface: how reassembled TCP bytes reach application analyzers.

The shape follows gopacket's `tcpassembly.StreamFactory` and Zeek's protocol analyzers:
the connection tracker (`pcaptool.tcp.connections.ConnectionTracker`) owns the
connections and their reassembly; analyzers never see packets' decoded layers or read
fields back out of the output record. Three kinds of plug-in:

- A `StreamFactory` is offered the first payload of a connection (`sniff`). It returns
  a `StreamAnalyzer` for that connection, or None to decline; factories are asked in
  order and the first one that accepts owns the connection. When all decline the
  connection is bookkeeping only (counters, no data held). Sniffing is by content, not
  port, so HTTP on any port is found. A TLS-from-stream analyzer is a factory whose
  `sniff` accepts a TLS record header and whose analyzer parses handshakes across
  segments.
- A `StreamAnalyzer` gets each direction's bytes in order (`data`, with `gap` > 0 when
  bytes were lost before them), a half-close (`half_close`) and the end of the
  connection (`close`). Direction `i` is 0 for the originator's bytes, 1 for the
  responder's. It writes its findings into `rec`, the record of the packet that made the
  bytes deliverable (None, or a scratch dict for `data`, when the connection ends
  without a packet: timeout, eviction, end of input), and `trace()` gives the keys copied onto every later record of the
  connection. `summary()` adds keys to the connection record (`--flows`).
- A `SegmentObserver` sees every TCP segment of every connection, before reassembly,
  with the connection and its direction: the place for TCP expert analysis (zero
  windows, retransmission and duplicate-ACK notes, RTT). It may add keys to `rec` and
  to the connection record through `summary(conn)`.

A `Segment` is the TCP header values and payload of one packet as the translator decoded
them; `flags` are the header's bits (`pcaptool.tcp.reassembly.SYN`, …).
"""

from __future__ import annotations

from typing import Protocol

from pcaptool.tcp.reassembly import Conn


class Segment:
    """One TCP segment handed to the tracker: addresses, header values, payload, and
    `missing`, the payload bytes the capture's snap length cut off."""

    __slots__ = (
        "src",
        "sport",
        "dst",
        "dport",
        "seq",
        "ack",
        "flags",
        "window",
        "payload",
        "missing",
        "ts",
        "num",
    )

    def __init__(
        self,
        src: str,
        sport: int,
        dst: str,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes,
        ts: int,
        num: int = 0,
        window: int = 0,
        missing: int = 0,
    ) -> None:
        self.src = src
        self.sport = sport
        self.dst = dst
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.missing = missing
        self.ts = ts
        self.num = num


class StreamAnalyzer(Protocol):
    """The application analysis of one connection, fed its reassembled bytes."""

    def data(
        self, conn: Conn, i: int, data: bytes | None, gap: int, ts: int, num: int, rec: dict
    ) -> None:
        """Bytes of direction `i` that became deliverable at capture time `ts` (packet
        `num`); `gap` bytes were skipped before them (`data` may then be None)."""

    def half_close(self, conn: Conn, i: int, ts: int, num: int, rec: dict | None) -> None:
        """Direction `i` ended (FIN, or the connection ended): flush what it holds."""

    def close(self) -> None:
        """The connection ended: release every buffer."""

    def trace(self) -> dict | None:
        """Keys (trace context) to copy onto the connection's later records."""

    def summary(self) -> dict:
        """Keys for the connection record's `conn` object (`service`, counters)."""


class StreamFactory(Protocol):
    def sniff(self, conn: Conn, i: int, payload: bytes) -> StreamAnalyzer | None:
        """The analyzer for a connection whose first payload, in direction `i`, is
        `payload`; None to decline."""


class SegmentObserver(Protocol):
    def segment(self, conn: Conn, i: int, seg: Segment, rec: dict) -> None: ...

    def summary(self, conn: Conn) -> dict: ...
