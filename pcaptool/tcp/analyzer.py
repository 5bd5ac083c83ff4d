"""The translator's TCP analysis: connections, reassembly and HTTP, behind one object.

`pcaptool.translate.serial.Translator` decodes each packet's layers and, for a TCP
segment, calls `HttpAnalyzer.on_tcp(rec, flow, direction, seg)` with a
`pcaptool.tcp.stream.Segment` (header values and payload, never the record's fields).
The analyzer runs a `ConnectionTracker` (`pcaptool.tcp.connections`) whose stream
factory is HTTP's (`pcaptool.http.stream`); what HTTP found lands in `rec` (`http`,
`http2`, `tcp.gap`, trace keys, `httpRequest`), and the connection records (`--flows`)
of connections that ended wait in `take_records()`. Which protocol a connection speaks
is decided by its first bytes, not by its ports; connections that are neither HTTP/1.x
nor HTTP/2 cost a few counters per packet.
"""

from __future__ import annotations

from pcaptool.http.records import DEFAULT_REDACT, HttpRecords, note
from pcaptool.http.stream import HttpFactory
from pcaptool.record.envelope import format_latency
from pcaptool.record.flow import Flow
from pcaptool.tcp.connections import ConnectionTracker
from pcaptool.tcp.dnsstream import DnsFactory
from pcaptool.tcp.reassembly import Limits
from pcaptool.tcp.stream import Segment, SegmentObserver

__all__ = ["DEFAULT_REDACT", "HttpAnalyzer", "format_latency"]


class HttpAnalyzer:
    """The `Analyzer` that `Translator` calls for every TCP packet."""

    def __init__(
        self,
        project: str | None = None,
        flows: bool = False,
        http: bool = True,
        limits: Limits | None = None,
        body_sample: int = 128,
        redact: frozenset[str] | set[str] | tuple[str, ...] = DEFAULT_REDACT,
        observers: tuple[SegmentObserver, ...] = (),
    ) -> None:
        self.records = HttpRecords(project, redact)
        self.dns_streams = DnsFactory()  # DNS over TCP port 53 (pcaptool/tcp/dnsstream.py)
        # HTTP/1.x, HTTP/2, TLS hellos (pcaptool/http/stream.py), with the budget it holds
        self.http_streams = HttpFactory(self.records, body_sample) if http else None
        factories = (self.dns_streams, *((self.http_streams,) if http else ()))
        self.flows = flows  # the translator writes UDP connection records too
        self.tracker = ConnectionTracker(factories, observers, flows, limits)
        self._pending: list[dict] = []
        self.last_ts = 0

    def on_tcp(self, rec: dict, flow: Flow, direction: int, seg: Segment) -> str | None:
        """Analyse one segment; return the text the packet's message ends with, if any."""
        self.last_ts = seg.ts
        try:
            out = self.tracker.segment(rec, flow.id, direction, seg, flow)
        except Exception as exc:  # a parser bug must not end the stream: report, go on
            self.tracker.abandon(flow.id)
            self.records.error(rec, ("internal", f"{type(exc).__name__}; analysis stops"))
            out = ()
        if self.records.ended:
            self._pending.extend(self._ended())
        if out:
            self._pending.extend(out)
        if "http" in rec or "http2" in rec or "tls" in rec:  # the layers `note` reads
            return note(rec)
        return None

    @property
    def pending(self) -> bool:
        """Connection records are waiting for `take_records()`."""
        return bool(self._pending)

    def take_records(self) -> list[dict]:
        """Connection records of connections that ended with the last packet."""
        if not self._pending:
            return []
        out = self._pending
        self._pending = []
        return out

    def sweep(self, ts_ns: int) -> list[dict]:
        """Connection records of connections idle as of `ts_ns` (parallel workers' tick)."""
        conns = self.tracker.tick(ts_ns)
        return self._ended() + conns

    def finish(self, last_ts: int | None = None) -> list[dict]:
        """End of input (as of `last_ts`, by default the last TCP packet's time): every
        connection ends; their records, with any still waiting."""
        if last_ts:
            self.last_ts = last_ts
        out = self.take_records()
        conns = self.tracker.finish(self.last_ts or None)
        return out + self._ended() + conns

    def _ended(self) -> list[dict]:
        """Records without a packet (HTTP/2 streams flushed at the end), with a message."""
        out = self.records.ended
        self.records.ended = []
        for r in out:
            r["message"] = f"end of input {note(r) or ''}".rstrip()
        return out

    def limits_warning(self) -> dict | None:
        """A log line's fields when reassembly limits were hit in this translation."""
        table = self.tracker.table
        if not (table.budget.cap_hits or table.evicted_full):
            return None
        return {
            "severity": "WARNING",
            "message": "TCP reassembly limits were hit: records carry tcp.gap reason memcap, "
            "or connections were evicted early; raise --tcp-flow-memory/--tcp-memory",
            "memcap_hits": table.budget.cap_hits,
            "connections_evicted": table.evicted_full,
        }
