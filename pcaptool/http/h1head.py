"""Start lines and header sections of the HTTP/1.x parser (RFC 9112 sections 2-6):
finding the start line (and resynchronising on garbage), parsing the header block, and
deciding how the body is framed. A mixin of `pcaptool.http.http1.Http1Parser`, which
provides `_error`, `_complete` and `_unqueue`."""

from __future__ import annotations

from pcaptool.http.h1grammar import (
    BODY,
    BODY_EOF,
    CHUNK_SIZE,
    H2_PREFACE,
    HEAD,
    MAX_GARBAGE,
    MAX_START_LINE,
    REQUEST_LINE,
    SEEK,
    SEEK_REQUEST,
    SEEK_RESPONSE,
    SIMPLE_REQUEST,
    START,
    STATUS_LINE,
    SWITCHED,
    ascii_int,
    chunked_last,
)
from pcaptool.http.h1message import Message


class HeadStates:
    """Parsing at message boundaries and of header sections."""

    __slots__ = ()

    def _head_cut(self, data: bytes, pos: int) -> int:
        """A header section whose end is not in `data` (`Http1Parser.feed` looks for it):
        held for the next bytes, unless it is already too large. Returns -1."""
        n = len(data)
        if n - pos > self.header_limit or self.budget.over(n - pos):
            self._error("headers_too_large", f"{n - pos} bytes without end of headers")
            self.msg = None
            self.state = SEEK
            return -1
        self.buf = data[pos:]
        return -1

    def _start(self, data: bytes, pos: int, ts: int, done: list) -> int:
        """At a message boundary: find the start line. Returns the new position, or -1
        when more data is needed."""
        n = len(data)
        while pos < n and data[pos] in (13, 10):  # RFC 9112 2.2: ignore empty lines first
            pos += 1
        if pos >= n:
            return n
        if self.state == START:
            if self.is_request and data.startswith(b"PRI * HTTP/2", pos):
                if n - pos < len(H2_PREFACE) and H2_PREFACE.startswith(data[pos:]):
                    self.buf = data[pos:]
                    return -1
                self.state = SWITCHED
                self.switched = "h2"
                self.leftover = data[pos:]
                return n
            rx = REQUEST_LINE if self.is_request else STATUS_LINE
            m = rx.match(data, pos)
            if m is not None:
                self.state = HEAD
                return pos
            if self.is_request:
                m = SIMPLE_REQUEST.match(data, pos)
                if m is not None:
                    return self._simple_request(data, m, ts, done)
            elif self.pending and self.pending[0].version == "HTTP/0.9":
                return self._simple_response(pos, ts)
            eol = data.find(b"\n", pos)
            if eol < 0 and n - pos < MAX_START_LINE:
                self.buf = data[pos:]
                return -1
            self.state = SEEK
            if eol >= 0 and self._bad_line(data, pos, eol):
                pos = eol + 1
        # SEEK: look for a start line anywhere in what we have
        seek = SEEK_REQUEST if self.is_request else SEEK_RESPONSE
        m = seek.search(data, pos)
        if m is None:
            keep = min(n - pos, 32)  # a start line may straddle two segments
            self.garbage += n - pos - keep
            if self.garbage > MAX_GARBAGE:
                # reported, and the scan goes on: a later start line is still found
                self._error("not_http", f"{self.garbage} bytes without an HTTP/1.x start line")
                self.garbage = 0
            self.buf = data[n - keep :] if keep else b""
            return -1
        skipped = self.garbage + m.start() - pos
        self.garbage = 0
        self.skipped = skipped
        self.state = HEAD
        return m.start()

    def _simple_request(self, data: bytes, m, ts: int, done: list) -> int:
        """An HTTP/0.9 Simple-Request (RFC 1945 4.1): a GET with no version and no
        headers, complete at its line's end."""
        msg = Message(True, ts if self.start_ts is None else self.start_ts)
        self.start_ts = None
        msg.method, msg.target, msg.version = "GET", m.group(1).decode("latin-1"), "HTTP/0.9"
        msg.header_size = msg.cost = m.end() - m.start()
        self.budget.held += msg.cost
        self.msg = msg
        # `feed` counted all of `data` into the offset already
        self._complete(ts, self.offset - len(data) + m.end(), done)
        return m.end()

    def _simple_response(self, pos: int, ts: int) -> int:
        """The answer to an HTTP/0.9 request: no status line, the bytes up to the close
        are its body (RFC 1945 6)."""
        msg = Message(False, ts if self.start_ts is None else self.start_ts)
        self.start_ts = None
        msg.version = "HTTP/0.9"
        req = msg.request = self.pending.popleft()
        self.budget.held -= req.cost
        msg.trace = req.trace
        msg.cost = 0
        self.msg = msg
        self.state = BODY_EOF
        return pos

    def _bad_line(self, data: bytes, pos: int, eol: int) -> bool:
        """At a message boundary, a whole line that is not a start line: reported as
        `bad_start_line` at once, unless a start line follows junk on it (then the junk is
        a `garbage_prefix` of the message)."""
        seek = SEEK_REQUEST if self.is_request else SEEK_RESPONSE
        if seek.search(data, pos, eol + 1) is not None:
            return False
        self._error("bad_start_line", repr(bytes(data[pos:eol][:64]).rstrip(b"\r"))[2:-1])
        return True

    def _head(self, data: bytes, pos: int, end: int, ts: int, base: int, done: list) -> int:
        # one decode of the whole block, then str operations (latin-1 maps bytes 1:1)
        text = data[pos:end].decode("latin-1")
        lines = text.split("\r\n")
        bare_lf = text.count("\n") != len(lines) - 1
        if bare_lf:
            # RFC 9112 section 2.2: a bare LF ends a line too (never hides the next header)
            lines = [x[:-1] if x.endswith("\r") else x for x in text.split("\n")]
        first = lines[0]
        msg = Message(self.is_request, ts if self.start_ts is None else self.start_ts)
        self.start_ts = None
        msg.header_size = end - pos
        if self.skipped:
            msg.errors.append(("garbage_prefix", f"{self.skipped} bytes before the start line"))
            self.skipped = 0
        self.msg = msg
        if bare_lf:
            msg.errors.append(("bare_lf", "header lines end in LF without CR"))
        if self.is_request:
            parts = first.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[1]:
                m = REQUEST_LINE.match(first.encode("latin-1") + b"\n")
                if m is None:
                    self.msg = None
                    self._error("bad_start_line", repr(first[:64])[1:-1])
                    self.state = SEEK
                    return end
                parts = [g.decode("latin-1") for g in m.groups()]
            msg.method, msg.target, msg.version = parts
        else:
            parts = first.split(" ", 2)
            code = parts[1] if len(parts) > 1 else ""
            if not (parts[0].startswith("HTTP/") and code.isdigit() and code.isascii()):
                m = STATUS_LINE.match(first.encode("latin-1") + b"\n")
                if m is None:
                    self.msg = None
                    self._error("bad_start_line", repr(first[:64])[1:-1])
                    self.state = SEEK
                    return end
                parts = [g.decode("latin-1") if g is not None else "" for g in m.groups()]
            msg.version = parts[0]
            msg.status = int(parts[1])
            msg.reason = parts[2] if len(parts) > 2 else ""
        self._headers(msg.headers, lines)
        # ~100 bytes of Python per header beside its text: charged while the message lives
        msg.cost = msg.header_size + 100 * len(msg.headers)
        self.budget.held += msg.cost
        return self._framing(msg, end, ts, base, done)

    def _headers(self, headers: dict, lines: list[str]) -> None:
        repeated: dict[str, list[str]] | None = None  # made at the first repeat
        for line in lines[1:]:
            if not line:
                continue
            name, colon, value = line.partition(":")
            if not colon or not name or name[-1] in " \t" or name[0] in " \t":
                # the name only: a malformed line may carry a credential (Authorization :)
                self._error("bad_header", repr(name.strip()[:32])[1:-1] + ": (value not shown)")
                continue
            k = name.lower()
            v = value.strip()
            if k not in headers:
                headers[k] = v
                continue
            if repeated is None:
                repeated = {}
            more = repeated.get(k)
            if more is None:
                repeated[k] = [headers[k], v]
            else:
                more.append(v)
        if repeated:
            for k, vs in repeated.items():  # joined once: linear in the number of repeats
                headers[k] = ", ".join(vs)

    def _framing(self, msg: Message, end: int, ts: int, base: int, done: list) -> int:
        """RFC 9112 section 6.3: how long is the body?"""
        if not self.is_request and self._response_framing(msg, end, ts, base, done):
            return end
        h = msg.headers
        te = h.get("transfer-encoding")
        cl = h.get("content-length")
        if te is not None:
            if cl is not None:
                self._error("cl_te_conflict", f"Transfer-Encoding: {te} with Content-Length: {cl}")
            if chunked_last(te):
                msg.chunked = True
                self.state = CHUNK_SIZE
                return end
            if self.is_request:
                self._error("bad_transfer_encoding", te)
                self._complete(ts, base + end, done)
                self.state = SEEK
                return end
            self.state = BODY_EOF
            return end
        if cl is not None:
            if cl.isdigit() and cl.isascii():
                size = int(cl)
            else:  # a list of equal values is one value (RFC 9110 section 8.6)
                vals = {v.strip() for v in cl.split(",")}
                size = ascii_int(next(iter(vals))) if len(vals) == 1 else None
            if size is None:
                self._error("bad_content_length", repr(cl[:32])[1:-1])
                self._complete(ts, base + end, done)
                self.state = SEEK
                return end
            if size:
                self.remaining = size
                self.state = BODY
                return end
            self._complete(ts, base + end, done)
            return end
        if self.is_request:
            self._complete(ts, base + end, done)
            if msg.method == "CONNECT":
                self.state = SWITCHED
                self.switched = "tunnel"
            return end
        self.state = BODY_EOF
        return end

    def _response_framing(self, msg: Message, end: int, ts: int, base: int, done: list) -> bool:
        """A response: pair it with its request; True when it has no body to parse (it
        switched protocols, or is 1xx/204/304 or the answer to HEAD)."""
        h = msg.headers
        req = None
        status = msg.status
        pending = self.pending
        if self.after_gap and self.peer_acked >= 0:
            # a response was lost in a gap: requests the server had already received
            # before this response started were answered by the lost bytes
            while len(pending) > 1 and pending[1].end_offset <= self.peer_acked:
                self._unqueue()
        self.after_gap = False
        if pending:
            if 100 <= status < 200 and status != 101:
                req = pending[0]  # an interim response: the request waits for its final one
            else:
                req = pending.popleft()
                self.budget.held -= req.cost
            msg.request = req
            msg.trace = req.trace
        if status == 101 or (req is not None and req.method == "CONNECT" and status < 300):
            up = h.get("upgrade", "").lower()
            self.switched = "h2" if up == "h2c" else "tunnel"
            self.switch_msg = msg
            self.state = SWITCHED
            self._complete(ts, base + end, done, switching=True)
            return True
        if (
            100 <= status < 200
            or status in (204, 304)
            or (req is not None and req.method == "HEAD")
        ):
            self._complete(ts, base + end, done)
            return True
        return False
