"""Application-layer analysis of TCP segments: reassembly, HTTP/1.x, HTTP/2, trace context,
Cloud Logging `httpRequest`, and connection records.

`translate` builds one record (a dict) per packet and, for a TCP segment, calls
`TcpAnalyzer.segment(...)` with the flow key, the direction and the TCP header values; the
analyzer adds its keys to that record (`http`, `http2`, `tcp.gap`, the
`logging.googleapis.com/trace*` keys, `httpRequest`) and returns the connection records
(`--flows`) that ended with this packet. Which protocol a connection speaks is decided by
its first bytes, not by its ports, so HTTP on any port is found; connections that are
neither HTTP/1.x nor HTTP/2 cost a few counters per packet.
"""

from __future__ import annotations

from collections import deque

from pcaptool.http import http1, http2, tracectx
from pcaptool.tcp.reassembly import ACK, FIN, RST, SYN, Conn, FlowTable, Limits

OTHER = "other"  # app state of connections we do not parse
_NONE: tuple = ()
_REDACTED = "<redacted>"
# headers whose values are credentials: replaced in the records by default (--redact-header)
DEFAULT_REDACT = ("authorization", "proxy-authorization", "cookie", "set-cookie")


def format_latency(ns: int) -> str:
    """Cloud Logging's Duration: seconds with up to nine decimals and an "s" suffix."""
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{sign}{ns // 1_000_000_000}{'.' + frac if frac else ''}s"


class App:
    """What the analyzer keeps for one HTTP connection."""

    __slots__ = ("kind", "parsers", "pending", "h2", "last_trace", "requests", "errors")

    def __init__(self) -> None:
        self.kind = None  # "http1" | "h2"
        self.parsers: list = [None, None]  # per direction index (0 = originator)
        self.pending: deque = deque()
        self.h2: http2.H2Connection | None = None
        self.last_trace = None
        self.requests = 0
        self.errors = 0


class TcpAnalyzer:
    """Per-translation state: the flow table and the options of the analysis."""

    def __init__(
        self,
        project: str | None = None,
        flows: bool = False,
        http: bool = True,
        limits: Limits | None = None,
        body_sample: int = 128,
        redact: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self.project = project
        self.flows = flows
        self.http = http
        self.table = FlowTable(limits)
        self.body_sample = body_sample
        self.redact = frozenset(h.lower() for h in redact)

    # -- entry points -----------------------------------------------------------------

    def segment(
        self,
        rec: dict,
        key,
        direction: int,
        src: str,
        sport: int,
        dst: str,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes,
        ts: int,
        num: int,
        tag=None,
        missing: int = 0,
    ) -> list[dict]:
        """Analyze one TCP segment; add keys to `rec`; return connection records that ended
        (evicted connections first), usually the shared empty tuple."""
        out: list | tuple = _NONE
        table = self.table
        if ts // 1_000_000_000 > table._tick and table.due(ts):
            expired = table.expired(ts)
            if expired:
                out = []
                for c in expired:
                    self._close(c, ts, out, "timeout")
        conns = table.conns
        conn = conns.pop(key, None)
        if conn is None or (conn.closed and flags & SYN and not flags & ACK):
            if conn is not None:
                conns[key] = conn  # port reuse: let the table retire the closed one
            conn, evicted = table.get(key, direction, flags, ts, num)
            if evicted:
                out = list(out)
                for c in evicted:
                    self._close(c, ts, out, "evicted")
        else:
            conns[key] = conn  # most recently active last
            conn.last_ts = ts
            conn.last_num = num
        i = 0 if direction == conn.orig else 1
        if conn.endpoints is None:
            conn.tag = tag
            conn.endpoints = (
                ((src, sport), (dst, dport)) if i == 0 else ((dst, dport), (src, sport))
            )
        n = len(payload)
        conn.packets[i] += 1
        app = conn.app
        if conn.closed:  # late ACKs of a finished connection still belong to its trace
            conn.bytes[i] += n
            if app.__class__ is App and app.last_trace:
                rec.update(app.last_trace)
            return out
        if flags & 0x07 == 0 and app.__class__ is App:
            # the common case: no SYN/FIN/RST in a connection we parse
            if n:
                conn.bytes[i] += n
                hs = conn.streams[i]
                other = conn.streams[1 - i]
                if other.held and flags & ACK:
                    data = other.peer_ack(ack)
                    if data is not None or other.gap:
                        self._deliver(conn, 1 - i, data, other.gap, ts, rec, num)
                data = hs.segment(seq, payload)
                if data is not None or hs.gap:
                    self._deliver(conn, i, data, hs.gap, ts, rec, num)
                if missing:
                    self._cut_short(conn, i, seq + n, missing, ts, rec, num)
            else:
                other = conn.streams[1 - i]
                if other.held and flags & ACK:
                    data = other.peer_ack(ack)
                    if data is not None or other.gap:
                        self._deliver(conn, 1 - i, data, other.gap, ts, rec, num)
            tr = app.last_trace
            if tr:
                rec.update(tr)
            return out
        conn.bytes[i] += n
        hs = conn.streams[i]
        if flags & SYN:
            if flags & ACK:
                conn.synack = True
            else:
                conn.syn = True
            hs.syn(seq)
        if app is OTHER or not self.http:
            if n:
                hs.seen(seq, n)
        else:
            other = conn.streams[1 - i]
            if flags & ACK and other.held:
                data = other.peer_ack(ack)
                if data is not None or other.gap:
                    self._deliver(conn, 1 - i, data, other.gap, ts, rec, num)
            if n:
                if app is None:
                    app = self._classify(conn, i, payload)
                if app is OTHER:
                    hs.seen(seq, n)
                else:
                    data = hs.segment(seq, payload)
                    if data is not None or hs.gap:
                        self._deliver(conn, i, data, hs.gap, ts, rec, num)
                    if missing:
                        self._cut_short(conn, i, seq + n, missing, ts, rec, num)
            app = conn.app
            if app.__class__ is App:
                tr = app.last_trace
                if tr:
                    rec.update(tr)
        if flags & FIN:
            conn.fins[i] = True
        if flags & RST and conn.rst < 0:
            conn.rst = i
        if conn.rst >= 0 or (conn.fins[0] and conn.fins[1]):
            out = list(out)
            self._close(conn, ts, out, "closed", rec, num)
            conn.closed = True
        elif flags & FIN and conn.app.__class__ is App:
            # a half-close ends that direction's stream: a body read to the close completes
            self._finish_dir(conn, i, ts, rec, num)
        return out

    def finish(self, ts: int | None = None) -> list[dict]:
        """End of input: every connection still open ends (oldest activity first)."""
        out: list[dict] = []
        for c in self.table.drain():
            self._close(c, ts if ts is not None else c.last_ts, out, "end")
        return out

    def tick(self, ts: int) -> list[dict]:
        """Expire idle connections as of `ts` without a packet (parallel workers)."""
        out: list[dict] = []
        if self.table.due(ts):
            for c in self.table.expired(ts):
                self._close(c, ts, out, "timeout")
        return out

    # -- internals --------------------------------------------------------------------

    def _cut_short(self, conn: Conn, i: int, end_seq: int, missing: int, ts, rec, num) -> None:
        hs = conn.streams[i]
        data = hs.cut_short(end_seq, missing)
        if hs.gap:
            self._deliver(conn, i, data, hs.gap, ts, rec, num)

    def _classify(self, conn: Conn, i: int, payload: bytes):
        kind = http1.looks_like_http(payload)
        if kind is None:
            if http2.looks_like_frames(payload):
                app = App()
                app.kind = "h2"
                app.h2 = http2.H2Connection()
                conn.app = app
                return app
            conn.app = OTHER
            return OTHER
        app = App()
        if kind == "h2":
            app.kind = "h2"
            app.h2 = http2.H2Connection()
            app.h2.expect_preface(i)
        else:
            app.kind = "http1"
            is_req = kind == "request"
            app.parsers[i] = http1.Http1Parser(is_req, app.pending, self.body_sample)
            app.parsers[1 - i] = http1.Http1Parser(not is_req, app.pending, self.body_sample)
        conn.app = app
        return app

    def _deliver(self, conn: Conn, i: int, data, gap: int, ts: int, rec: dict, num: int) -> None:
        app: App = conn.app
        if gap:
            tcp = rec.get("tcp")
            if not isinstance(tcp, dict):
                tcp = rec["tcp"] = {}
            tcp["gap"] = {"bytes": gap, "reason": conn.streams[i].gap_reason}
        if app.kind == "http1":
            p = app.parsers[i]
            msgs = p.gap(gap, ts) if gap else []
            if data:
                if p.is_request:
                    other = app.parsers[1 - i]
                    other.peer_acked = p.offset + len(data)
                msgs += p.feed(data, ts)
            self._http1_out(conn, app, i, p, msgs, rec, num)
            if p.switched is not None:
                self._switch(conn, app, i, p, ts, rec, num)
        elif app.kind == "h2":
            if gap:
                # HTTP/2 framing cannot resynchronise after lost bytes: stop here
                app.h2.dirs[i].broken = True
                self._add_error(rec, app, ("gap", f"{gap} bytes lost; HTTP/2 analysis stops"))
            if data:
                self._h2_feed(conn, app, i, data, ts, rec, num)

    def _http1_out(self, conn, app, i, p, msgs, rec, num) -> None:
        cur = None
        for m in msgs:
            if m.is_request:
                if m.trace is None:
                    m.trace = tracectx.trace_fields(m.headers, self.project) or False
                m.first_num = num
                app.requests += 1
            if cur is None and m.trace:
                cur = m.trace
            self._emit(rec, m.as_dict())
            if not m.is_request:
                self._http_request(conn, i, rec, m)
            if m.errors:
                app.errors += 1
                rec["severity"] = (
                    "WARNING" if rec.get("severity") in (None, "DEFAULT") else rec["severity"]
                )
        m = p.msg  # message still being parsed: its trace from the headers on
        if m is not None:
            if m.is_request:
                if m.trace is None:
                    m.trace = tracectx.trace_fields(m.headers, self.project) or False
                if cur is None:
                    cur = m.trace
            elif cur is None:
                cur = m.trace
        if msgs or m is not None:
            app.last_trace = cur or None
        elif p.is_request and p.buf and p.state != http1.SWITCHED:
            app.last_trace = None  # a new request has begun; its trace is not known yet
        if p.errors:
            for e in p.errors:
                self._add_error(rec, app, e)
            p.errors.clear()

    def _switch(self, conn, app, i, p, ts, rec, num) -> None:
        how = p.switched
        other = app.parsers[1 - i]
        if how == "h2":
            h2c = app.h2 or http2.H2Connection()
            app.h2 = h2c
            if p.is_request:  # the client sent the preface
                if h2c.client < 0:
                    h2c.expect_preface(i)
                    if not other.switched:  # prior knowledge: no Upgrade before
                        other.state = http1.SWITCHED
                        other.switched = "h2"
            else:  # 101 Switching Protocols to h2c: the upgraded request is stream 1
                sm = p.switch_msg
                req = sm.request if sm is not None else None
                hdrs = {}
                if req is not None:
                    hdrs = {
                        ":method": req.method,
                        ":path": req.target,
                        ":authority": req.host or "",
                        ":scheme": "http",
                    }
                trace = (req.trace or None) if req is not None else None
                h2c.upgraded(1 - i, hdrs, req.first_ts if req is not None else ts, trace)
            app.kind = "h2"
            left = p.leftover
            p.leftover = b""
            if left:
                self._h2_feed(conn, app, i, left, ts, rec, num)
        elif how == "tunnel":
            if other is not None and other.switched is None and not p.is_request:
                other.state = http1.SWITCHED
                other.switched = "tunnel"
            p.leftover = b""
        else:  # not_http
            p.leftover = b""

    def _h2_feed(self, conn, app, i, data, ts, rec, num) -> None:
        h2c: http2.H2Connection = app.h2
        frames, msgs = h2c.feed(i, data, ts)
        cur = None
        for s, d in msgs:
            if d["type"] == "request":
                s.trace = tracectx.trace_fields(s.req or {}, self.project) or None
                s.first_num = num
                app.requests += 1
            else:
                self._h2_request(conn, i, rec, s, d, ts)
            if cur is None and s.trace:
                cur = s.trace
            self._emit(rec, d)
        if frames:
            if self.redact:
                for f in frames:
                    hl = f.get("headers")
                    if hl:
                        f["headers"] = [[n, _REDACTED if n in self.redact else v] for n, v in hl]
            rec["http2"] = {"frames": frames}
            if cur is None:
                streams = h2c.streams
                for f in frames:
                    s = streams.get(f.get("stream_id") or 0)
                    if s is not None and s.trace:
                        cur = s.trace
                        break
        if cur is not None:
            app.last_trace = cur
        if h2c.errors:
            for e in h2c.errors:
                self._add_error(rec, app, e)
            h2c.errors.clear()

    def _emit(self, rec: dict, d: dict) -> None:
        redact = self.redact
        if redact:
            for key in ("headers", "trailers"):
                h = d.get(key)
                if h and not redact.isdisjoint(h):
                    d[key] = {k: _REDACTED if k in redact else v for k, v in h.items()}
        old = rec.get("http")
        if old is None:
            rec["http"] = d
        elif old.get("type") == "error" and "error" not in d:
            d["error"] = old["error"]
            rec["http"] = d
        else:
            old.setdefault("more", []).append(d)

    def _add_error(self, rec: dict, app: App, e) -> None:
        app.errors += 1
        err = {"code": e[0], "detail": e[1]}
        old = rec.get("http")
        if old is None:
            rec["http"] = {"type": "error", "error": err}
        elif "error" not in old:
            old["error"] = err
        if rec.get("severity") in (None, "DEFAULT"):
            rec["severity"] = "WARNING"

    def _http_request(self, conn: Conn, i: int, rec: dict, m) -> None:
        """Cloud Logging's HttpRequest on the response record (LogEntry.httpRequest)."""
        req = m.request
        if req is None:
            return
        client, server = conn.endpoints[1 - i], conn.endpoints[i]
        target = req.target or ""
        if target.startswith(("http://", "https://")) or req.method == "CONNECT":
            url = target
        else:
            url = f"http://{req.host or server[0]}{target}"
        h = {
            "requestMethod": req.method,
            "requestUrl": url,
            "status": m.status,
            "latency": format_latency(m.end_ts - req.first_ts),
            "protocol": req.version,
            "remoteIp": client[0],
            "serverIp": server[0],
            "requestSize": str(req.header_size + req.body_size),
            "responseSize": str(m.header_size + m.body_size),
        }
        ua = req.headers.get("user-agent")
        if ua is not None:
            h["userAgent"] = ua
        ref = req.headers.get("referer")
        if ref is not None:
            h["referer"] = ref
        if "httpRequest" not in rec:
            rec["httpRequest"] = h
        if m.trace:
            rec.update(m.trace)

    def _h2_request(self, conn: Conn, i: int, rec: dict, s: http2.Stream, d: dict, ts: int) -> None:
        r = s.req
        if r is None or "httpRequest" in rec:
            return
        client, server = conn.endpoints[1 - i], conn.endpoints[i]
        scheme = r.get(":scheme") or "http"
        host = r.get(":authority") or r.get("host") or server[0]
        h = {
            "requestMethod": r.get(":method"),
            "requestUrl": f"{scheme}://{host}{r.get(':path') or ''}",
            "status": d.get("status"),
            "latency": format_latency(ts - s.first_ts),
            "protocol": "HTTP/2",
            "remoteIp": client[0],
            "serverIp": server[0],
            "requestSize": str(s.req_size),
            "responseSize": str(s.resp_size),
        }
        ua = r.get("user-agent")
        if ua is not None:
            h["userAgent"] = ua
        rec["httpRequest"] = h
        if s.trace:
            rec.update(s.trace)

    def _finish_dir(self, conn: Conn, i: int, ts: int, rec, num) -> None:
        app = conn.app
        hs = conn.streams[i]
        data = hs.flush()
        if data is not None or hs.gap:
            self._deliver(conn, i, data, hs.gap, ts, rec if rec is not None else {}, num)
        if app.kind == "http1":
            p = app.parsers[i]
            if p is not None:
                msgs = p.finish(ts)
                if rec is not None:
                    self._http1_out(conn, app, i, p, msgs, rec, num)

    def _close(self, conn: Conn, ts: int, out: list, why: str, rec=None, num=0) -> None:
        app = conn.app
        if not conn.closed and isinstance(app, App):
            for i in (0, 1):
                self._finish_dir(conn, i, ts, rec, num)
        conn.streams[0].drop()
        conn.streams[1].drop()
        if self.flows and not conn.closed:
            out.append(self._flow_record(conn, ts, why))
        conn.app = OTHER if app is None else app
        if isinstance(app, App):
            app.parsers = [None, None]
            app.h2 = None
            app.pending.clear()

    def _flow_record(self, conn: Conn, ts: int, why: str) -> dict:
        (oip, oport), (rip, rport) = conn.endpoints or (("", 0), ("", 0))
        app = conn.app
        service = app.kind if isinstance(app, App) else None
        o, r = conn.streams
        state = conn.state()
        dur = conn.last_ts - conn.first_ts
        c = {
            "proto": "tcp",
            "state": state,
            "end": why,
            "duration": dur,
            "first_num": conn.first_num,
            "last_num": conn.last_num,
            "orig": {
                "ip": oip,
                "port": oport,
                "packets": conn.packets[0],
                "bytes": conn.bytes[0],
                "retransmissions": o.retransmissions,
                "gaps": o.gaps,
            },
            "resp": {
                "ip": rip,
                "port": rport,
                "packets": conn.packets[1],
                "bytes": conn.bytes[1],
                "retransmissions": r.retransmissions,
                "gaps": r.gaps,
            },
        }
        if service:
            c["service"] = "http2" if service == "h2" else "http"
            c["http_requests"] = app.requests
            if app.errors:
                c["http_errors"] = app.errors
        fmt = f"[{oip}]:{oport}" if ":" in oip else f"{oip}:{oport}"
        fmt2 = f"[{rip}]:{rport}" if ":" in rip else f"{rip}:{rport}"
        total = conn.packets[0] + conn.packets[1]
        return {
            "conn": c,
            "_ts": conn.last_ts,
            "_flow": conn.tag,
            "message": (
                f"conn TCP {fmt} > {fmt2} {state} {format_latency(dur)} "
                f"{total} pkts {conn.bytes[0]}/{conn.bytes[1]} bytes"
            ),
        }


_LETTERS = {"S": SYN, "F": FIN, "R": RST, "P": 0x08, "U": 0x20, "E": 0x40, "W": 0x80, ".": ACK}
_FLAG_BITS: dict[str, int] = {}


def _bits(letters: str) -> int:
    b = _FLAG_BITS.get(letters)
    if b is None:
        b = _FLAG_BITS[letters] = sum(_LETTERS.get(c, 0) for c in letters)
    return b


class HttpAnalyzer(TcpAnalyzer):
    """The `Analyzer` that `pcaptool.translate.serial.Translator` calls for every TCP packet."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self._pending: list[dict] = []
        self._last_ts = 0

    def on_tcp(self, rec, flow, src, sport, dst, dport, seg, payload, ts_ns) -> None:
        direction = 0 if src < dst or (src == dst and sport < dport) else 1
        self._last_ts = ts_ns
        pcap = rec.get("pcap")
        num = pcap["num"] if pcap is not None else 0
        missing = 0
        if pcap is not None and pcap["truncated"]:
            # the snaplen cut the payload: the IP length says how much is missing
            ip = rec.get("ip")
            if ip is not None:
                real = ip["len"] - ip.get("hdr_len", 40) - seg["hdr_len"]
                missing = max(real - len(payload), 0)
        out = self.segment(
            rec,
            flow.id,
            direction,
            src,
            sport,
            dst,
            dport,
            seg["seq"],
            seg["ack"],
            _bits(seg["flags_str"]),
            payload,
            ts_ns,
            num,
            flow,
            missing,
        )
        if out:
            self._pending.extend(out)
        h = rec.get("http")
        if h is not None:
            return _note(h)
        h2 = rec.get("http2")
        if h2 is not None:
            frames = h2["frames"]
            text = ", ".join(
                f"{f['type']}[{f['stream_id']}]" if f.get("stream_id") else f["type"]
                for f in frames[:6]
            )
            return f"HTTP/2 {text}{', …' if len(frames) > 6 else ''}"
        return None

    def take_records(self) -> list[dict]:
        if not self._pending:
            return []
        out = [conn_record(r) for r in self._pending]
        self._pending = []
        return out

    def sweep(self, ts_ns: int) -> list[dict]:
        """Connection records of connections idle as of `ts_ns` (parallel workers' tick)."""
        return [conn_record(r) for r in self.tick(ts_ns)]

    def finish(self) -> list[dict]:
        out = [conn_record(r) for r in self._pending]
        self._pending = []
        table = self.table
        if table.budget.cap_hits or table.evicted_full:
            from pcaptool.log import log

            log(
                "WARNING",
                "TCP reassembly limits were hit: records carry tcp.gap reason memcap, "
                "or connections were evicted early; raise --tcp-flow-memory/--tcp-memory",
                memcap_hits=table.budget.cap_hits,
                connections_evicted=table.evicted_full,
            )
        out += [conn_record(r) for r in super().finish(self._last_ts or None)]
        return out


def _note(h: dict) -> str:
    """`HTTP GET /x`, `HTTP/2 200 (GET /x) 12.3ms`: what the packet completed."""
    parts = []
    for m in [h, *h.get("more", ())]:
        t = m.get("type")
        proto = "HTTP/2" if m.get("version") == "HTTP/2" else "HTTP"
        if t == "request":
            parts.append(f"{proto} {m.get('method')} {m.get('target')}")
        elif t == "response":
            r = m.get("request")
            s = f"{proto} {m.get('status')}"
            if r:
                s += f" ({r.get('method')} {r.get('target')}) {format_latency(m['latency'])}"
            if "grpc_status" in m:
                s += f" grpc-status={m['grpc_status']}"
            if m.get("reset"):
                s += f" reset={m['reset']}"
            parts.append(s)
        if "error" in m:
            parts.append(f"HTTP error {m['error']['code']}")
    return "; ".join(parts)


def conn_record(r: dict) -> dict:
    """A connection summary as a Cloud Logging record (like Zeek's conn.log line)."""
    ts = r.pop("_ts")
    flow = r.pop("_flow", None)
    sec, nanos = divmod(ts, 1_000_000_000)
    rec = {
        "timestamp": {"seconds": sec, "nanos": nanos},
        "severity": "INFO",
        "message": r["message"],
        "conn": r["conn"],
    }
    if flow is not None:
        rec["flow"] = {"id": flow.id, "community_id": flow.community_id}
        rec["logging.googleapis.com/labels"] = {"flow": flow.id, "proto": "tcp"}
        rec["logging.googleapis.com/operation"] = {
            "id": flow.id,
            "producer": "github.com/pcaptool",
            "last": True,
        }
    return rec
