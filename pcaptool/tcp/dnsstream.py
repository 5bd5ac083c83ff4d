"""DNS over TCP (RFC 1035 section 4.2.2, RFC 7766) from the reassembled stream.

Each direction is a run of messages, each after a 2-byte length: a segment may hold
several messages, a message may be split over segments. `DnsStream` reads them from the
bytes the connection tracker delivers in order, so retransmitted and out-of-order
segments count once, and writes the messages that complete with a packet into that
packet's record: the first as `dns` (replacing what the per-packet decoder read from the
segment's first bytes), the others in `dns.more`; a message that spanned segments has
`dns.reassembled`. Every complete message goes to the factory's `sink` (the translator's
DNS transactions, pcaptool/decode/dnstxn.py), so a response over TCP carries its query,
latency and rcode, and an unanswered query times out, as over UDP.

A segment whose first bytes the per-packet decoder read as a message but that the stream
places inside one loses that `dns`. After bytes are lost (a gap) the direction waits for a segment that starts like a
message (a plausible length and header) and reads on from there. A message that does not
parse is left out.
"""

from __future__ import annotations

from collections.abc import Callable

from pcaptool.decode import Truncated
from pcaptool.decode.dns import HEADER, OPCODES, message
from pcaptool.tcp.reassembly import Conn

DNS_PORT = 53
# (rec, src, sport, dst, dport, ts, dns object): one complete message of the stream
Sink = Callable[[dict, str, int, str, int, int, dict], object]


class DnsFactory:
    """Takes the connections to or from TCP port 53; one per translation."""

    def __init__(self) -> None:
        self.sink: Sink | None = None  # set by the translator: its DNS transactions

    def sniff(self, conn: Conn, i: int, payload: bytes) -> DnsStream | None:
        ends = conn.endpoints
        if ends is None or DNS_PORT not in (ends[0][1], ends[1][1]):
            return None
        return DnsStream(self)


def starts_message(data: bytes) -> bool:
    """Do these bytes look like the start of a length-prefixed DNS message?"""
    if len(data) < 14:
        return False
    size = int.from_bytes(data[:2], "big")
    if size < 12:
        return False
    _qid, flags, qdcount, *_ = HEADER.unpack_from(data, 2)
    return (flags >> 11) & 0xF in OPCODES and not flags & 0x40 and qdcount <= 1


class DnsStream:
    """The DNS messages of one TCP connection, per direction."""

    __slots__ = ("factory", "bufs", "lost", "messages")

    def __init__(self, factory: DnsFactory) -> None:
        self.factory = factory
        self.bufs = (bytearray(), bytearray())  # bytes of a message not yet complete
        self.lost = [False, False]  # after a gap: until a segment starts a message
        self.messages = 0

    def data(
        self, conn: Conn, i: int, data: bytes | None, gap: int, ts: int, num: int, rec: dict
    ) -> None:
        buf = self.bufs[i]
        if gap:
            buf.clear()
            self.lost[i] = True
        if not data:
            return
        if self.lost[i]:
            if not starts_message(data):
                return
            self.lost[i] = False
        held = len(buf)
        buf += data
        found = []
        pos = 0
        while len(buf) - pos >= 2:
            size = int.from_bytes(buf[pos : pos + 2], "big")
            if len(buf) - pos - 2 < size:
                break
            d = _decode(bytes(buf[pos + 2 : pos + 2 + size]))
            if d is not None:
                if pos < held:
                    d["reassembled"] = True
                found.append(d)
            pos += 2 + size
        del buf[:pos]
        if "pcap" not in rec:  # no packet's record: the end of the input
            return
        if found:
            self._write(conn, i, found, ts, rec)
        elif "dns" in rec and (held or not rec["dns"].get("incomplete")):
            del rec["dns"]  # the segment only looked like a message start: it is inside one

    def _write(self, conn: Conn, i: int, found: list[dict], ts: int, rec: dict) -> None:
        self.messages += len(found)
        first = found[0]
        if len(found) > 1:
            first["more"] = found[1:]
        rec["dns"] = first
        sink = self.factory.sink
        if sink is not None and conn.endpoints is not None:
            (src, sport), (dst, dport) = conn.endpoints[i], conn.endpoints[1 - i]
            for d in found:
                sink(rec, src, sport, dst, dport, ts, d)

    def half_close(self, conn: Conn, i: int, ts: int, num: int, rec: dict | None) -> None:
        self.bufs[i].clear()  # a message cut by the close never completes

    def close(self) -> None:
        for b in self.bufs:
            b.clear()

    def trace(self) -> dict | None:
        return None

    def summary(self) -> dict:
        return {"service": "dns", "dns_messages": self.messages}


def _decode(payload: bytes) -> dict | None:
    scratch: dict = {}
    try:
        return message(payload, scratch, cut=False)
    except Truncated:
        return None
