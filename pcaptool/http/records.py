"""What HTTP analysis writes into records: `http`, `http2.frames`, Cloud Logging's
`httpRequest`, trace context, and the policies around them (header redaction, severity).

One `HttpRecords` per translation holds the options (`--project`, `--redact-header`);
the HTTP stream analyzers (`pcaptool.http.stream`) call it with parsed messages and the
record of the packet that completed them.
"""

from __future__ import annotations

from pcaptool.http import tracectx
from pcaptool.record.envelope import format_latency, warn
from pcaptool.tcp.reassembly import Conn

REDACTED = "<redacted>"
# headers whose values are credentials: replaced in the records by default (--redact-header)
DEFAULT_REDACT = ("authorization", "proxy-authorization", "cookie", "set-cookie")


class HttpRecords:
    """Builds the HTTP keys of records under one translation's options."""

    def __init__(self, project: str | None = None, redact=frozenset()) -> None:
        self.project = project
        self.redact = frozenset(h.lower() for h in redact)

    def trace(self, headers: dict) -> dict | None:
        """Cloud Logging trace keys of a request's headers (traceparent, X-Cloud-Trace)."""
        return tracectx.trace_fields(headers, self.project) or None

    def emit(self, rec: dict, d: dict) -> None:
        """Add a message (request, response) to the record's `http`; a record that already
        has one keeps it and lists the next under `http.more`."""
        redact = self.redact
        if redact:
            for key in ("headers", "trailers"):
                h = d.get(key)
                if h and not redact.isdisjoint(h):
                    d[key] = {k: REDACTED if k in redact else v for k, v in h.items()}
        old = rec.get("http")
        if old is None:
            rec["http"] = d
        elif old.get("type") == "error" and "error" not in d:
            d["error"] = old["error"]
            rec["http"] = d
        else:
            old.setdefault("more", []).append(d)

    def error(self, rec: dict, e: tuple[str, str]) -> None:
        """An `http.error` `{code, detail}` (the first of the record is kept); WARNING."""
        err = {"code": e[0], "detail": e[1]}
        old = rec.get("http")
        if old is None:
            rec["http"] = {"type": "error", "error": err}
        elif "error" not in old:
            old["error"] = err
        warn(rec)

    def frames(self, rec: dict, frames: list[dict]) -> None:
        """HTTP/2 frames of this packet under `http2.frames`, header values redacted."""
        if self.redact:
            redact = self.redact
            for f in frames:
                hl = f.get("headers")
                if hl:
                    f["headers"] = [[n, REDACTED if n in redact else v] for n, v in hl]
        rec["http2"] = {"frames": frames}

    def http1_request(self, conn: Conn, i: int, rec: dict, m) -> None:
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

    def h2_request(self, conn: Conn, i: int, rec: dict, s, d: dict, ts: int) -> None:
        """HttpRequest of an HTTP/2 stream's response."""
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


def note(rec: dict) -> str | None:
    """The end of the packet's message: what HTTP it completed (`HTTP GET /x`,
    `HTTP/2 200 (GET /x) 0.0123s`) or which HTTP/2 frames it carried."""
    h = rec.get("http")
    if h is not None:
        return _http_note(h)
    h2 = rec.get("http2")
    if h2 is not None:
        frames = h2["frames"]
        text = ", ".join(
            f"{f['type']}[{f['stream_id']}]" if f.get("stream_id") else f["type"]
            for f in frames[:6]
        )
        return f"HTTP/2 {text}{', …' if len(frames) > 6 else ''}"
    return None


def _http_note(h: dict) -> str:
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
