"""What HTTP analysis writes into records: `http`, `http2.frames`, Cloud Logging's
`httpRequest`, trace context, and the policies around them (header redaction, severity).

One `HttpRecords` per translation holds the options (`--project`, `--redact-header`);
the HTTP stream analyzers (`pcaptool.http.stream`) call it with parsed messages and the
record of the packet that completed them.
"""

from __future__ import annotations

import re

from pcaptool.http import tracectx
from pcaptool.record.envelope import format_latency, set_flow, timestamp, warn
from pcaptool.tcp.reassembly import Conn

REDACTED = "<redacted>"
# headers whose values are credentials: replaced in the records by default (--redact-header)
DEFAULT_REDACT = ("authorization", "proxy-authorization", "cookie", "set-cookie")
# query parameters whose values are credentials: always replaced in targets, URLs and
# messages (OAuth 2.0 RFC 6750 section 2.3, API keys, signed URLs of S3/GCS/Azure)
CREDENTIAL_PARAMS = (
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "key",
    "api_key",
    "apikey",
    "sig",
    "signature",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "code",
    "session",
    "sessionid",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
)
_QUERY_CREDENTIAL = re.compile(
    r"([?&;](?:" + "|".join(re.escape(p) for p in CREDENTIAL_PARAMS) + r")=)[^&;#\s]*",
    re.IGNORECASE,
)
# the same search without IGNORECASE, for ASCII text in lower case (several times faster)
_QUERY_CREDENTIAL_LOWER = re.compile(
    r"[?&;](?:" + "|".join(re.escape(p) for p in CREDENTIAL_PARAMS) + r")="
)
_USERINFO = re.compile(r"(//)[^/?#@\s]*@")
# body samples that look like credentials are withheld (forms always: logins are forms)
_CREDENTIAL_WORD = re.compile(
    r"pass(?:word|wd)?|secret|token|api[_-]?key|auth|credential|session|signature",
    re.IGNORECASE,
)
# what every match of _CREDENTIAL_WORD contains (in lower case): without one, no match
_CREDENTIAL_STEMS = ("pass", "secret", "token", "api", "auth", "credential", "session", "signature")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# headers whose values are URLs (their query strings and userinfo are redacted)
_URL_HEADERS = (":path", "referer", "location", "content-location")
_URL_SET = frozenset(_URL_HEADERS)


def redact_url(text: str) -> str:
    """`text` with URL userinfo and credential query parameters' values replaced."""
    if "=" in text:  # most URLs have none
        shown = _SHOWN.get(text)
        if shown is None:
            shown = _redact_url(text)
            if len(text) <= _SHOWN_TEXT:
                if len(_SHOWN) >= _SHOWN_SIZE:
                    _SHOWN.clear()
                _SHOWN[text] = shown
        return shown
    if "@" in text:
        text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    return text


# redact_url's recent answers for texts with a query: a request's target is shown on the
# request's record and again on its response's (bounded: cleared when full)
_SHOWN: dict[str, str] = {}
_SHOWN_SIZE = 256
_SHOWN_TEXT = 512  # longer texts are not kept


def _redact_url(text: str) -> str:
    if (
        _QUERY_CREDENTIAL_LOWER.search(text.lower()) is not None
        if text.isascii()
        else _QUERY_CREDENTIAL.search(text) is not None
    ):
        text = _QUERY_CREDENTIAL.sub(r"\1" + REDACTED, text)
    if "@" in text:
        text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    return text


def request_url(host: str, target: str) -> str:
    """redact_url(f"http://{host}{target}"): from the target's answer (which a request's
    record has asked for already) when the host can take no part in a match: not empty,
    no `=` for a query parameter, no `@` or `/` for userinfo, and a target that begins a
    path."""
    if target[:1] == "/" and host and "=" not in host and "@" not in host and "/" not in host:
        return f"http://{host}{redact_url(target)}"
    return redact_url(f"http://{host}{target}")


class HttpRecords:
    """Builds the HTTP keys of records under one translation's options."""

    def __init__(self, project: str | None = None, redact=DEFAULT_REDACT) -> None:
        self.project = project
        self.redact = frozenset(h.lower() for h in redact)
        self.touched = self.redact | _URL_SET  # names whose values emit() may change
        self.ended: list[dict] = []  # records of end_record() waiting to go out

    def trace(self, headers: dict) -> dict | None:
        """Cloud Logging trace keys of a request's headers (traceparent, X-Cloud-Trace)."""
        return tracectx.trace_fields(headers, self.project) or None

    def emit(self, rec: dict, d: dict) -> None:
        """Add a message (request, response) to the record's `http`; a record that already
        has one keeps it and lists the next under `http.more`."""
        redact = self.redact
        touched = self.touched
        # HTTP/1 names are lower-cased by the parser; HTTP/2 ones come as the peer sent them
        lowered = d.get("version") != "HTTP/2"
        h = d.get("headers")
        if h and not (lowered and touched.isdisjoint(h)):
            d["headers"] = h = self._headers(h, redact)
        t = d.get("trailers")
        if t and not (lowered and touched.isdisjoint(t)):
            d["trailers"] = self._headers(t, redact)
        target = d.get("target")
        if target:
            d["target"] = redact_url(target)
        req = d.get("request")
        if req is not None and req.get("target"):
            req["target"] = redact_url(req["target"])
        sample = d.get("body_sample")
        if sample is not None and _credential_body(h or {}, sample):
            d["body_sample"] = REDACTED
        old = rec.get("http")
        if old is None:
            rec["http"] = d
        elif old.get("type") == "error":
            # errors reported before the message on this packet go with it
            errs = old.get("errors") or [old["error"]]
            d["errors"] = errs + d.get("errors", [])
            d.setdefault("error", errs[0])
            rest = old.get("more")
            rec["http"] = d
            if rest:
                d.setdefault("more", []).extend(rest)
        else:
            old.setdefault("more", []).append(d)

    @staticmethod
    def _headers(h: dict, redact: frozenset) -> dict:
        return {k: _value(k, v, redact) for k, v in h.items()}

    def error(self, rec: dict, e: tuple[str, str]) -> None:
        """An `http.error` `{code, detail}`: the first of the record is `error`, all of
        them are in `errors`; the record becomes WARNING."""
        detail = redact_url(e[1])
        low = detail.lower()
        if any(name in low for name in self.redact):
            detail = "(withheld: it names a redacted header)"
        err = {"code": e[0], "detail": detail}
        old = rec.get("http")
        if old is None:
            rec["http"] = {"type": "error", "error": err, "errors": [err]}
        elif "error" not in old:
            old["error"] = err
            old["errors"] = [err]
        else:
            old.setdefault("errors", [old["error"]]).append(err)
        warn(rec)

    def end_record(self, conn: Conn, ts: int) -> dict:
        """A record without a packet for what the end of the input flushes; it goes out
        with the connection records."""
        rec = {"timestamp": timestamp(ts), "severity": "WARNING", "message": ""}
        if conn.tag is not None:
            set_flow(rec, conn.tag, "tcp")
        self.ended.append(rec)
        return rec

    def frames(self, rec: dict, frames: list[dict]) -> None:
        """HTTP/2 frames of this packet under `http2.frames`, header values redacted."""
        redact = self.redact
        for f in frames:
            hl = f.get("headers")
            if hl:
                f["headers"] = [[n, _value(n, v, redact)] for n, v in hl]
        rec["http2"] = {"frames": frames}

    def http1_request(self, conn: Conn, i: int, rec: dict, m) -> None:
        """Cloud Logging's HttpRequest on the response record (LogEntry.httpRequest); a
        response whose request was not captured gets what is known."""
        req = m.request
        client, server = conn.endpoints[1 - i], conn.endpoints[i]
        if req is None:
            if "httpRequest" not in rec:
                rec["httpRequest"] = {
                    "requestMethod": None,
                    "requestUrl": f"http://{_host(server)}/",
                    "status": m.status,
                    "latency": "0s",
                    "protocol": m.version,
                    "remoteIp": client[0],
                    "serverIp": server[0],
                    "responseSize": str(m.header_size + m.body_size),
                }
            return
        target = req.target or ""
        if target.startswith(("http://", "https://")) or req.method == "CONNECT":
            url = redact_url(target)
        else:
            url = request_url(req.headers.get("host") or _host(server), target)
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
            h["referer"] = redact_url(ref)
        if "httpRequest" not in rec:
            rec["httpRequest"] = h
        if m.trace:
            rec.update(m.trace)

    def h2_request(self, conn: Conn, c: int, rec: dict, s, d: dict, ts: int) -> None:
        """HttpRequest of an HTTP/2 stream's response; `c` is the client's direction."""
        r = s.req
        if r is None or "httpRequest" in rec:
            return
        client, server = conn.endpoints[c], conn.endpoints[1 - c]
        scheme = r.get(":scheme") or "http"
        host = r.get(":authority") or r.get("host") or server[0]
        h = {
            "requestMethod": r.get(":method"),
            "requestUrl": redact_url(f"{scheme}://{host}{r.get(':path') or ''}"),
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


def _host(ep) -> str:
    return f"[{ep[0]}]" if ":" in ep[0] else ep[0]


def _value(name: str, value: str, redact: frozenset) -> str:
    low = name.lower()  # HTTP/2 names arrive as the peer wrote them
    if low in redact:
        return REDACTED
    if low in _URL_HEADERS:
        return redact_url(value)
    return value


def _credential_body(headers: dict, sample: str) -> bool:
    """A body sample that may hold a credential: a form (logins are forms), or any body
    naming a password, token, key, secret or session."""
    ctype = headers.get("content-type")
    if ctype is None:
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    ctype = ctype.lower()
    if ctype.startswith(_FORM_TYPES):
        return True
    if sample.isascii():  # the regular expression's cases, as plain substring tests
        low = sample.lower()
        for w in _CREDENTIAL_STEMS:
            if w in low:
                break
        else:
            return False
    return _CREDENTIAL_WORD.search(sample) is not None


def note(rec: dict) -> str | None:
    """The end of the packet's message: what HTTP it completed (`HTTP GET /x`,
    `HTTP/2 200 (GET /x) 0.0123s`) or which HTTP/2 frames it carried; None for a record
    with none of `http`, `http2` and `tls` (HttpAnalyzer.on_tcp calls it only for one
    that has one of them)."""
    if "http" in rec:
        h = rec["http"]
        if "more" not in h:
            return _message_note(h) or ""
        return "; ".join(filter(None, map(_message_note, (h, *h["more"]))))
    if "http2" in rec:
        frames = rec["http2"]["frames"]
        text = ", ".join(
            f"{f['type']}[{f['stream_id']}]" if f.get("stream_id") else f["type"]
            for f in frames[:6]
        )
        return f"HTTP/2 {text}{', …' if len(frames) > 6 else ''}"
    if "tls" in rec:
        t = rec["tls"]
        if t.get("reassembled"):
            return f"TLS ClientHello sni={t.get('sni')} alpn={','.join(t.get('alpn', ()))}"
    return None


_RESPONSES = ("response", "response_headers", "reset")


def _message_note(m: dict) -> str | None:
    """One message's part of the note (with its first error), or None."""
    t = m.get("type")
    v = m.get("version")
    if t == "request":
        s = f"{'HTTP/2' if v == 'HTTP/2' else 'HTTP'} {m.get('method')} {m.get('target')}"
    elif t in _RESPONSES:
        if v == "HTTP/0.9":  # a Simple-Response: no status line
            s = "HTTP/0.9 response"
        else:
            s = f"{'HTTP/2' if v == 'HTTP/2' else 'HTTP'} {m.get('status')}"
        if t == "response_headers":
            s += " headers"
        elif "incomplete" in m and m["incomplete"]:
            s += " incomplete"
        if "request" in m and (r := m["request"]):
            s += f" ({r.get('method')} {r.get('target')}) {format_latency(m['latency'])}"
        if "grpc_status" in m:
            s += f" grpc-status={m['grpc_status']}"
        if "reset" in m and m["reset"]:
            s += f" reset={m['reset']} by {m.get('reset_by')}"
    elif "error" in m:
        return f"HTTP error {m['error']['code']}"
    else:
        return None
    if "error" in m:
        return f"{s}; HTTP error {m['error']['code']}"
    return s
