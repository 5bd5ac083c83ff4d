"""One HTTP/2 stream (a request and its response) and the `http` objects it produces.

A stream reports, in order: its request when the request HEADERS are decoded; its response
headers when the first final response HEADERS arrive (`type: response_headers`, so a
stream still open at the end of the capture is seen); a reset by either side (`type:
reset`, with who reset and the code: an event on the stream, never its response); and its
response when the server ends the stream (END_STREAM, or the server's RST_STREAM), or,
when the input ends first, with `incomplete: true` and what is known.
"""

from __future__ import annotations


class Stream:
    """One HTTP/2 stream: a request and its response."""

    __slots__ = (
        "sid",
        "req",
        "resp",
        "trailers",
        "first_ts",
        "req_end_ts",
        "req_bytes",
        "resp_bytes",
        "trace",
        "reset",
        "reset_by",
        "req_size",
        "resp_size",
        "first_num",
        "unknown",
        "held",
        "doh",
    )

    def __init__(self, sid: int, ts: int) -> None:
        self.sid = sid
        self.req: dict[str, str] | None = None
        self.resp: dict[str, str] | None = None
        self.trailers: dict[str, str] | None = None
        self.first_ts = ts
        self.req_end_ts = None
        self.req_bytes = 0
        self.resp_bytes = 0
        self.trace = None
        self.reset: str | None = None  # RST_STREAM error code name
        self.reset_by: str | None = None  # "client" or "server"
        self.req_size = 0  # header block + DATA payload bytes, for httpRequest sizes
        self.resp_size = 0
        self.first_num = 0
        self.unknown = 0  # header fields that referred to unknown HPACK entries
        self.held = 0  # header block bytes kept (charged to the connection's budget)
        # the DNS-over-HTTPS bodies being reassembled, request's then response's (doh.py)
        self.doh: list[bytearray | None] = [None, None]

    def request_dict(self) -> dict:
        r = self.req or {}
        d = {
            "type": "request",
            "version": "HTTP/2",
            "stream_id": self.sid,
            "method": r.get(":method"),
            "target": r.get(":path"),
            "host": r.get(":authority") or r.get("host"),
            "scheme": r.get(":scheme"),
            "headers": r,
        }
        if self.unknown:
            d["hpack_unknown"] = self.unknown
        return d

    def _request_ref(self, d: dict, ts: int) -> None:
        r = self.req
        if r is not None:
            d["request"] = {
                "method": r.get(":method"),
                "target": r.get(":path"),
                "host": r.get(":authority") or r.get("host"),
            }
            if self.first_num:
                d["request"]["num"] = self.first_num
            d["latency"] = ts - self.first_ts

    def status(self) -> int | None:
        status = (self.resp or {}).get(":status")
        return _ascii_int(status)

    def headers_dict(self, ts: int) -> dict:
        """The response HEADERS, reported when they arrive."""
        d = {
            "type": "response_headers",
            "version": "HTTP/2",
            "stream_id": self.sid,
            "status": self.status(),
            "headers": self.resp or {},
        }
        self._request_ref(d, ts)
        g = (self.resp or {}).get("grpc-status")
        if g is not None:
            n = _ascii_int(g)
            d["grpc_status"] = n if n is not None else g
        return d

    def reset_dict(self, ts: int) -> dict:
        """A RST_STREAM: who reset the stream and why."""
        d = {
            "type": "reset",
            "version": "HTTP/2",
            "stream_id": self.sid,
            "status": self.status(),
            "reset": self.reset,
            "reset_by": self.reset_by,
        }
        self._request_ref(d, ts)
        return d

    def response_dict(self, ts: int, incomplete: bool = False) -> dict:
        resp = self.resp or {}
        d = {
            "type": "response",
            "version": "HTTP/2",
            "stream_id": self.sid,
            "status": self.status(),
            "headers": resp,
            "body_size": self.resp_bytes,
        }
        self._request_ref(d, ts)
        t = self.trailers
        if t:
            d["trailers"] = t
        g = (t or {}).get("grpc-status") or resp.get("grpc-status")
        if g is not None:
            n = _ascii_int(g)
            d["grpc_status"] = n if n is not None else g
            msg = (t or {}).get("grpc-message") or resp.get("grpc-message")
            if msg is not None:
                d["grpc_message"] = msg
        if self.reset:
            d["reset"] = self.reset
            d["reset_by"] = self.reset_by
        if self.unknown:
            d["hpack_unknown"] = self.unknown
        if incomplete:
            d["incomplete"] = True
            d["request_body_size"] = self.req_bytes
        return d


def _ascii_int(text: str | None) -> int | None:
    """The number in `text` when it is ASCII digits only ("²" is a digit to str.isdigit)."""
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None
