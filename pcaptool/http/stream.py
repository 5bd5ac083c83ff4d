"""HTTP/1.x and HTTP/2 as stream analyzers (`pcaptool.tcp.stream`).

`HttpFactory.sniff` decides from a connection's first bytes whether it speaks HTTP/1.x
(a request or status line), HTTP/2 with prior knowledge (the client preface) or HTTP/2
frames (a capture that starts mid-connection), and returns an `HttpStream` for it; any
other first bytes are declined. `HttpStream` feeds each direction's reassembled bytes to
its parser (`http1.Http1Parser` per direction, or one `http2.H2Connection`), hands the
parsed messages to `HttpRecords` and keeps the trace context that later records of the
connection carry. The HTTP/1 → HTTP/2 switch (`Upgrade: h2c`, prior knowledge after
HTTP/1 bytes) lives in `pcaptool.http.switch`.
"""

from __future__ import annotations

from collections import deque

from pcaptool.http import http1, http2
from pcaptool.http.budget import Budget
from pcaptool.http.records import HttpRecords
from pcaptool.http.switch import switch
from pcaptool.record.envelope import warn
from pcaptool.tcp.reassembly import Conn

_KEPT = ("host", "user-agent", "referer")


class HttpFactory:
    """Sniffs connections for HTTP; one per translation."""

    def __init__(self, records: HttpRecords, body_sample: int = 128) -> None:
        self.records = records
        self.body_sample = body_sample
        self.budget = Budget()  # what HTTP analysis holds across the connections

    def sniff(self, conn: Conn, i: int, payload: bytes) -> HttpStream | None:
        kind = http1.looks_like_http(payload)
        if kind is None:
            if http2.looks_like_frames(payload):
                return HttpStream(self.records, "h2", self.budget)
            return None
        if kind == "h2":
            s = HttpStream(self.records, "h2", self.budget)
            s.h2.expect_preface(i)
            return s
        s = HttpStream(self.records, "http1", self.budget)
        is_req = kind == "request"
        s.parsers[i] = http1.Http1Parser(is_req, s.pending, self.body_sample, budget=self.budget)
        s.parsers[1 - i] = http1.Http1Parser(
            not is_req, s.pending, self.body_sample, budget=self.budget
        )
        return s


class HttpStream:
    """The HTTP analysis of one connection."""

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
    )

    def __init__(self, records: HttpRecords, kind: str, budget: Budget | None = None) -> None:
        self.records = records
        self.budget = budget if budget is not None else Budget()
        self.kind = kind  # "http1" | "h2"
        self.parsers: list = [None, None]  # per direction index (0 = originator)
        self.pending: deque = deque()  # requests waiting for their responses
        self.h2 = http2.H2Connection(self.budget) if kind == "h2" else None
        self.last_trace = None
        self.requests = 0
        self.errors = 0

    # -- the StreamAnalyzer interface -------------------------------------------------

    def data(self, conn: Conn, i: int, data, gap: int, ts: int, num: int, rec: dict) -> None:
        if self.kind == "http1":
            p = self.parsers[i]
            msgs = p.gap(gap, ts) if gap else []
            if data:
                if p.is_request:
                    self.parsers[1 - i].peer_acked = p.offset + len(data)
                msgs += p.feed(data, ts)
            self.http1_out(conn, i, p, msgs, num, rec)
            if p.switched is not None:
                switch(self, conn, i, p, ts, num, rec)
        elif self.kind == "h2":
            if gap:
                # HTTP/2 framing cannot resynchronise after lost bytes: stop here
                self.h2.dirs[i].broken = True
                self.error(rec, ("gap", f"{gap} bytes lost; HTTP/2 analysis stops"))
            if data:
                self.h2_feed(conn, i, data, ts, num, rec)

    def half_close(self, conn: Conn, i: int, ts: int, num: int, rec: dict | None) -> None:
        if self.kind == "http1":
            p = self.parsers[i]
            if p is not None:
                msgs = p.finish(ts)
                if rec is not None:
                    self.http1_out(conn, i, p, msgs, num, rec)

    def close(self) -> None:
        for p in self.parsers:
            if p is not None:
                p.close()
        self.parsers = [None, None]
        if self.h2 is not None:
            self.h2.release()
        self.h2 = None
        http1.drop_pending(self.pending, self.budget)

    def trace(self) -> dict | None:
        return self.last_trace

    def summary(self) -> dict:
        c: dict = {"service": "http2" if self.kind == "h2" else "http"}
        c["http_requests"] = self.requests
        if self.errors:
            c["http_errors"] = self.errors
        return c

    # -- parsers' output to records ---------------------------------------------------

    def error(self, rec: dict, e) -> None:
        self.errors += 1
        self.records.error(rec, e)

    def http1_out(self, conn: Conn, i: int, p, msgs, num: int, rec: dict) -> None:
        records = self.records
        cur = None
        for m in msgs:
            if m.is_request:
                if m.trace is None:
                    m.trace = records.trace(m.headers) or False
                m.first_num = num
                self.requests += 1
            if cur is None and m.trace:
                cur = m.trace
            records.emit(rec, m.as_dict())
            if m.is_request:  # waiting for its response: keep what pairing and httpRequest use
                m.headers = {k: v for k, v in m.headers.items() if k in _KEPT}
            else:
                records.http1_request(conn, i, rec, m)
            if m.errors:
                self.errors += 1
                warn(rec)
        m = p.msg  # message still being parsed: its trace from the headers on
        if m is not None:
            if m.is_request:
                if m.trace is None:
                    m.trace = records.trace(m.headers) or False
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
        h2c: http2.H2Connection = self.h2
        records = self.records
        frames, msgs = h2c.feed(i, data, ts)
        cur = None
        for s, d in msgs:
            if d["type"] == "request":
                s.trace = records.trace(s.req or {})
                s.first_num = num
                self.requests += 1
            else:
                records.h2_request(conn, i, rec, s, d, ts)
            if cur is None and s.trace:
                cur = s.trace
            records.emit(rec, d)
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
