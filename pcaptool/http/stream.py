"""HTTP/1.x and HTTP/2 as stream analyzers (`pcaptool.tcp.stream`).

`HttpFactory.sniff` looks at a connection's first bytes. A request or status line, the
HTTP/2 client preface or a run of HTTP/2 frames (a capture that starts mid-connection)
give an `HttpStream` of that kind at once. A ClientHello too large for its segment gives
a `TlsHelloStream` (`pcaptool.http.tlsstream`) that reads it from the stream. Anything
else gives an `HttpStream` that is still looking (`kind` "sniff"): each direction is
scanned by a `pcaptool.http.sniff.Sniffer` for where HTTP (or a ClientHello) starts, so a
keep-alive byte, a banner, a SOCKS handshake or junk first does not disable the
analysis; after `SNIFF_LIMIT` bytes in each direction without a find the connection
becomes bookkeeping only.

`HttpStream` feeds each direction's reassembled bytes to its parser (`http1.Http1Parser`
per direction, or one `http2.H2Connection`), hands the parsed messages to
`HttpRecords` and keeps the trace context that later records of the connection carry.
The HTTP/1 → HTTP/2 switch and CONNECT tunnels live in `pcaptool.http.switch`.
"""

from __future__ import annotations

from collections import deque

from pcaptool.decode.tls import looks_like_tls
from pcaptool.http import http1, http2
from pcaptool.http.budget import Budget
from pcaptool.http.records import HttpRecords
from pcaptool.http.sniff import Sniffer
from pcaptool.http.switch import switch
from pcaptool.http.tlsstream import TlsHelloStream, hello_needs_stream
from pcaptool.http.tracectx import trace_fields
from pcaptool.record.envelope import warn
from pcaptool.tcp.connections import OTHER
from pcaptool.tcp.reassembly import Conn

SNIFF_LIMIT = 64 * 1024  # bytes scanned per direction before a connection is given up
NOT_HTTP = (b"SSH-",)  # first bytes of protocols that never carry HTTP later
_KEPT = ("host", "user-agent", "referer")


class HttpFactory:
    """Sniffs connections for HTTP; one per translation."""

    def __init__(self, records: HttpRecords, body_sample: int = 128) -> None:
        self.records = records
        self.body_sample = body_sample
        self.budget = Budget()  # what HTTP analysis holds across the connections

    def sniff(self, conn: Conn, i: int, payload: bytes):
        kind = http1.looks_like_http(payload)
        if kind is None:
            if http2.looks_like_frames(payload):
                return HttpStream(self.records, "h2", self.body_sample, True, self.budget)
            if looks_like_tls(payload, 0, len(payload)):
                # a hello the packet holds whole is the per-packet decoder's
                return TlsHelloStream(self.records, i) if hello_needs_stream(payload) else None
            if payload.startswith(NOT_HTTP):
                return None
            return HttpStream(self.records, "sniff", self.body_sample, budget=self.budget)
        kind2 = "h2" if kind == "h2" else "http1"
        s = HttpStream(self.records, kind2, self.body_sample, budget=self.budget)
        s.start(i, kind)
        return s


class HttpStream:
    """The HTTP analysis of one connection (or of a CONNECT tunnel inside one)."""

    __slots__ = (
        "records",
        "budget",
        "kind",
        "parsers",
        "pending",
        "h2",
        "last_trace",
        "requests",
        "errors",
        "body_sample",
        "sniffers",
        "tunnel",
        "inner",
        "hello",
        "closed",
    )

    def __init__(
        self,
        records: HttpRecords,
        kind: str,
        body_sample: int = 128,
        mid: bool = False,
        budget: Budget | None = None,
    ) -> None:
        self.records = records
        self.budget = budget if budget is not None else Budget()
        self.kind = kind  # "http1" | "h2" | "sniff" | "tunnel" | "done"
        self.body_sample = body_sample
        self.parsers: list = [None, None]  # per direction index (0 = originator)
        self.pending: deque = deque()  # requests waiting for their responses
        self.h2 = http2.H2Connection(self.budget, mid) if kind == "h2" else None
        self.sniffers = [Sniffer(), Sniffer()] if kind == "sniff" else None
        self.tunnel: dict | None = None  # {num, target} of the CONNECT this stream is inside
        self.inner: HttpStream | None = None  # the tunnel's analysis, after CONNECT + 2xx
        self.hello = None  # TlsHelloStream of a ClientHello found by the sniffer
        self.last_trace = None
        self.requests = 0
        self.errors = 0
        self.closed = [False, False]

    def start(self, i: int, kind: str) -> None:
        """Direction `i` starts with `kind` ("request", "response", "h2", "h2frames")."""
        if kind in ("h2", "h2frames"):
            self.kind = "h2"
            self.h2 = http2.H2Connection(self.budget, mid=kind == "h2frames")
            if kind == "h2":
                self.h2.expect_preface(i)
            return
        self.kind = "http1"
        is_req = kind == "request"
        b = self.budget
        self.parsers[i] = http1.Http1Parser(is_req, self.pending, self.body_sample, budget=b)
        self.parsers[1 - i] = http1.Http1Parser(
            not is_req, self.pending, self.body_sample, budget=b
        )

    # -- the StreamAnalyzer interface -------------------------------------------------

    def data(self, conn: Conn, i: int, data, gap: int, ts: int, num: int, rec: dict) -> None:
        kind = self.kind
        if kind == "http1":
            p = self.parsers[i]
            msgs = p.gap(gap, ts) if gap else None
            if data:
                if p.is_request:
                    self.parsers[1 - i].peer_acked = p.offset + len(data)
                more = p.feed(data, ts)
                msgs = msgs + more if msgs else more
            elif msgs is None:
                msgs = []
            m = p.msg
            if msgs or p.errors or m is None or m.is_request:
                self.http1_out(conn, i, p, msgs, num, rec)
            else:  # more of a response's body: nothing to report, its trace goes on
                self.last_trace = m.trace or None
            if p.switched is not None:
                switch(self, conn, i, p, ts, num, rec)
            elif msgs and not p.is_request:
                for m in msgs:
                    r = m.request
                    if r is not None and r.method == "CONNECT" and m.status >= 200:
                        self._refused_connect(conn, i, ts, num, rec)
        elif kind == "h2":
            if gap:
                self.h2_out(conn, i, self.h2.gap(i, gap, ts), (), ts, num, rec)
            if data:
                self.h2_feed(conn, i, data, ts, num, rec)
        elif kind == "tunnel":
            self.inner.data(conn, i, data, gap, ts, num, rec)
        elif kind == "sniff":
            self._sniff(conn, i, data, gap, ts, num, rec)
        elif kind == "tls" and i == self.hello.client:
            self.hello.data(conn, i, data, gap, ts, num, rec)

    def half_close(self, conn: Conn, i: int, ts: int, num: int, rec: dict | None) -> None:
        self.closed[i] = True
        if self.kind == "tunnel":
            self.inner.half_close(conn, i, ts, num, rec)
            return
        if self.kind == "http1":
            p = self.parsers[i]
            if p is not None:
                msgs = p.finish(ts)
                if rec is not None:
                    self.http1_out(conn, i, p, msgs, num, rec)
        if self.kind == "h2" and all(self.closed):
            # both directions ended: streams still open are flushed with what is known
            msgs = self.h2.finish(ts)
            if msgs:
                out = rec if rec is not None else self.records.end_record(conn, ts)
                self.h2_out(conn, -1, msgs, (), ts, num, out)

    def close(self) -> None:
        for p in self.parsers:
            if p is not None:
                p.close()
        self.parsers = [None, None]
        if self.h2 is not None:
            self.h2.release()
        self.h2 = None
        self.sniffers = None
        http1.drop_pending(self.pending, self.budget)
        if self.inner is not None:
            self.inner.close()

    def trace(self) -> dict | None:
        if self.inner is not None:
            return self.inner.last_trace or self.last_trace
        return self.last_trace

    def summary(self) -> dict:
        kind = self.inner.kind if self.inner is not None else self.kind
        c: dict = {"service": "http2" if kind == "h2" else "http"}
        c["http_requests"] = self.requests + (self.inner.requests if self.inner else 0)
        errors = self.errors + (self.inner.errors if self.inner else 0)
        if errors:
            c["http_errors"] = errors
        return c

    def _refused_connect(self, conn: Conn, i: int, ts: int, num: int, rec: dict) -> None:
        """A final non-2xx answer to CONNECT: the client goes on speaking HTTP."""
        other = self.parsers[1 - i]
        self.http1_out(conn, 1 - i, other, other.resume(ts), num, rec)

    # -- finding where HTTP starts --------------------------------------------------------

    def _sniff(self, conn: Conn, i: int, data, gap: int, ts: int, num: int, rec: dict) -> None:
        sn = self.sniffers[i]
        if gap:
            sn.gap(gap)
        found = sn.feed(data) if data else None
        if found is None:
            other = self.sniffers[1 - i]
            if sn.pending() > SNIFF_LIMIT and (other.pending() > SNIFF_LIMIT or self.closed[1 - i]):
                self.kind = "done"
                if self.tunnel is None:
                    conn.app = OTHER  # nothing HTTP in the first 64 KiB each way: give up
            return
        if found.skipped:
            self.error(rec, ("garbage_prefix", f"{found.skipped} bytes before HTTP"))
        self.sniffers = None
        if found.kind == "tls":
            self.kind = "tls"
            self.hello = TlsHelloStream(self.records, i, self.tunnel)
            self.hello.data(conn, i, found.data, 0, ts, num, rec)
            if self.hello.reader.done and self.tunnel is None:
                conn.app = OTHER
            return
        self.start(i, found.kind)
        self.data(conn, i, found.data, 0, ts, num, rec)

    # -- parsers' output to records ---------------------------------------------------

    def emit(self, rec: dict, d: dict) -> None:
        if self.tunnel is not None:
            d["tunnel"] = self.tunnel
        self.records.emit(rec, d)

    def error(self, rec: dict, e) -> None:
        self.errors += 1
        self.records.error(rec, e)

    def http1_out(self, conn: Conn, i: int, p, msgs, num: int, rec: dict) -> None:
        records = self.records
        cur = None
        for m in msgs:
            is_req = m.is_request
            if is_req:
                if m.trace is None:
                    m.trace = trace_fields(m.headers, records.project) or False
                m.first_num = num
                self.requests += 1
            if cur is None and m.trace:
                cur = m.trace
            d = m.as_dict()
            if self.tunnel is not None:
                d["tunnel"] = self.tunnel
            records.emit(rec, d)
            if is_req:  # waiting for its response: keep what pairing and httpRequest use
                h = m.headers
                m.headers = {k: h[k] for k in _KEPT if k in h}
            else:
                records.http1_request(conn, i, rec, m)
            if m.errors:
                self.errors += 1
                warn(rec)
        m = p.msg  # message still being parsed: its trace from the headers on
        if m is not None:
            if m.is_request:
                if m.trace is None:
                    m.trace = trace_fields(m.headers, records.project) or False
                if cur is None:
                    cur = m.trace
            elif cur is None:
                cur = m.trace
        if msgs or m is not None:
            self.last_trace = cur or None
        elif p.is_request and p.buf and p.state != http1.SWITCHED:
            self.last_trace = None  # a new request has begun; its trace is not known yet
        if p.errors:
            for e in p.errors:
                self.error(rec, e)
            p.errors.clear()

    def h2_feed(self, conn: Conn, i: int, data: bytes, ts: int, num: int, rec: dict) -> None:
        frames, msgs = self.h2.feed(i, data, ts)
        self.h2_out(conn, i, msgs, frames, ts, num, rec)

    def h2_out(self, conn: Conn, i: int, msgs, frames, ts: int, num: int, rec: dict) -> None:
        """The messages and frames of direction `i` (-1: of no packet, at the end)."""
        h2c: http2.H2Connection = self.h2
        records = self.records
        cur = None
        for s, d in msgs:
            t = d["type"]
            if t == "dns":  # a DNS-over-HTTPS body (http/doh.py): the packet's DNS
                rec.setdefault("dns", d["dns"])
                continue
            if t == "request":
                s.trace = records.trace(s.req or {})
                s.first_num = num
                self.requests += 1
            elif t == "response":
                c = h2c.client if h2c.client >= 0 else (1 - i if i >= 0 else 0)
                records.h2_request(conn, c, rec, s, d, ts)
            if cur is None and s.trace:
                cur = s.trace
            self.emit(rec, d)
        if frames:
            records.frames(rec, frames)
            if cur is None:
                streams = h2c.streams
                for f in frames:
                    s = streams.get(f.get("stream_id") or 0)
                    if s is not None and s.trace:
                        cur = s.trace
                        break
        if cur is not None:
            self.last_trace = cur
        if h2c.errors:
            for e in h2c.errors:
                self.error(rec, e)
            h2c.errors.clear()
