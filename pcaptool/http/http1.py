"""Incremental HTTP/1.0 and HTTP/1.1 parser for one direction of a reassembled TCP stream.

Fed the stream bytes as they become deliverable (`feed`), it returns the messages each call
completed. Message framing follows RFC 9112 section 6: Transfer-Encoding chunked wins over
Content-Length (and the conflict is reported), responses to HEAD and 1xx/204/304 carry no
body, a response without a length runs to the end of the connection. Requests queue in a
deque shared with the response parser of the other direction, so responses pair with
requests in order (keep-alive and pipelining) without help from trace headers.

A malformed message produces an error (`errors`, a list of (code, detail) the caller
drains) and the parser resynchronises on the next start line: the stream goes on.
"""

from __future__ import annotations

import re
from collections import deque

from pcaptool.http.budget import Budget
from pcaptool.http.h1message import Message

__all__ = ["Http1Parser", "Message", "looks_like_http"]

REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) +([^ \r\n]+) +(HTTP/\d\.\d)\r?\n")
STATUS_LINE = re.compile(rb"(HTTP/\d\.\d) +(\d{3})(?: ([^\r\n]*))?\r?\n")
# Where to resynchronise after garbage: a start line anywhere in the data.
SEEK_REQUEST = re.compile(rb"[A-Z][A-Z-]{2,15} [^ \r\n]+ HTTP/1\.[019]\r?\n")
SEEK_RESPONSE = re.compile(rb"HTTP/1\.[01] \d{3}[ \r\n]")
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
METHOD_PREFIXES = (
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PROPFIND ",
)

MAX_START_LINE = 8192
# A start line and header section may be this long (Apache's LimitRequestFieldSize and
# Node's first default, 8 KiB): the most one direction holds while waiting for the end of
# headers, whether the section arrives in one segment or in many.
HEADER_LIMIT = 8 * 1024
END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
MAX_GARBAGE = 64 * 1024
MAX_PENDING = 100  # requests awaiting a response per connection (pipelining depth)
MAX_HOLD = 64 * 1024  # client bytes held after CONNECT until the proxy answers

# parser states
START, HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS, BODY_EOF, SEEK, SWITCHED = range(10)


def ascii_int(text: str) -> int | None:
    """The value of a decimal number made of ASCII digits only (numbers on the wire are:
    `int()` would also take `²` or Arabic-Indic digits, or raise), else None."""
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


def chunked_last(te: str) -> bool:
    """Transfer-Encoding whose last coding is `chunked` (RFC 9112 section 6.3): a list
    item equal to it, not a name ending in it (`xchunked`)."""
    return te.rsplit(",", 1)[-1].strip().lower() == "chunked"


def drop_pending(pending: deque, budget: Budget) -> None:
    """Forget the requests waiting for responses (the connection ended)."""
    for m in pending:
        budget.held -= m.cost
    pending.clear()


def looks_like_http(data: bytes) -> str | None:
    """What the first bytes of a direction are: "request", "response", "h2" or None."""
    if data.startswith(METHOD_PREFIXES):
        return "h2" if data.startswith(b"PRI * HTTP/2") else "request"
    if data.startswith(b"HTTP/1."):
        return "response"
    if data.startswith(b"PRI * HTTP/2"):
        return "h2"
    if len(data) < 9 and any(m.startswith(data) for m in METHOD_PREFIXES):
        return "request"  # a request line cut after a few bytes ("GE", "POST")
    head = data[:1024]
    m = SEEK_REQUEST.search(head)
    if m is not None and b"\n" not in head[: m.start()]:
        return "request"  # a request line after a few bytes of garbage
    return None


class Http1Parser:
    """One direction. `is_request` picks request or response parsing; `pending` is the
    queue of requests awaiting responses, shared by both directions of a connection."""

    __slots__ = (
        "is_request",
        "pending",
        "state",
        "buf",
        "msg",
        "remaining",
        "sample_limit",
        "header_limit",
        "errors",
        "switched",
        "leftover",
        "offset",
        "after_gap",
        "peer_acked",
        "garbage",
        "skipped",
        "switch_msg",
        "start_ts",
        "budget",
    )

    def __init__(
        self,
        is_request: bool,
        pending: deque | None = None,
        sample_limit: int = 128,
        header_limit: int = HEADER_LIMIT,
        budget: Budget | None = None,
    ) -> None:
        self.is_request = is_request
        self.pending = pending if pending is not None else deque()
        self.state = START
        self.buf = b""
        self.msg: Message | None = None  # the message being parsed
        self.remaining = 0
        self.sample_limit = sample_limit
        self.header_limit = header_limit
        self.errors: list[tuple[str, str]] = []
        self.switched: str | None = None  # "h2" or "tunnel" once the protocol changed
        self.leftover = b""  # bytes after the switch point (for the next protocol)
        self.offset = 0  # stream position (bytes fed + bytes lost in gaps)
        self.after_gap = False
        self.peer_acked = -1  # the other direction's stream position the peer ACKed
        self.garbage = 0
        self.skipped = 0  # garbage before the start line of the message being parsed
        self.switch_msg: Message | None = None  # the message that switched protocols
        self.start_ts: int | None = None  # when the first byte of the next message came
        self.budget = budget if budget is not None else Budget()

    def feed(self, data: bytes, ts: int) -> list[Message]:
        """Parse the next bytes of the stream; return the messages they completed."""
        if self.state == SWITCHED:
            if self.switched == "tunnel" and self.is_request and len(self.leftover) < MAX_HOLD:
                self.leftover += data  # after CONNECT: held until the proxy answers
            return []
        done: list[Message] = []
        if self.buf:
            data = self.buf + data
            self.release()
        pos = 0
        n = len(data)
        base = self.offset  # stream offset of data[0]
        self.offset += n
        while pos < n:
            st = self.state
            if st == BODY:
                take = min(self.remaining, n - pos)
                self._body(data, pos, take)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self._complete(ts, base + pos, done)
            elif st in (START, SEEK):
                if self.start_ts is None:
                    self.start_ts = ts
                pos = self._start(data, pos, ts, done)
                if pos < 0:
                    break
            elif st == HEAD:
                found = END_OF_HEADERS.search(data, pos, pos + self.header_limit + 4)
                if found is None:
                    if n - pos > self.header_limit or self.budget.over(n - pos):
                        self._error("headers_too_large", f"{n - pos} bytes without end of headers")
                        self.msg = None
                        self.state = SEEK
                        pos = n
                        break
                    self.buf = data[pos:]
                    break
                pos = self._head(data, pos, found.end(), ts, base, done)
            elif st == CHUNK_SIZE:
                pos = self._chunk_size(data, pos, ts, base, done)
                if pos < 0:
                    break
            elif st == CHUNK_DATA:
                take = min(self.remaining, n - pos)
                self._body(data, pos, take)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = CHUNK_END
            elif st == CHUNK_END:
                pos = self._chunk_end(data, pos, ts, base, done)
                if pos < 0:
                    break
            elif st == TRAILERS:
                eol = data.find(b"\n", pos)
                if eol < 0:
                    if n - pos > self.header_limit:
                        self._error("headers_too_large", "trailers")
                        self._complete(ts, base + n, done)
                        self.state = SEEK
                        pos = n
                        break
                    self.buf = data[pos:]
                    break
                line = data[pos:eol].rstrip(b"\r")
                pos = eol + 1
                if not line:
                    self._complete(ts, base + pos, done)
                else:
                    self._trailer(line, ts, base + pos, done)
            elif st == BODY_EOF:
                self._body(data, pos, n - pos)
                pos = n
            else:  # SWITCHED
                self.leftover = data[pos:]
                break
        # buffered bytes are counted again when they come back through `data`
        self.offset -= len(self.buf)
        self.budget.held += len(self.buf)
        return done

    def resume(self, ts: int) -> list[Message]:
        """The proxy refused a CONNECT: the client's bytes held since are HTTP again."""
        if self.state != SWITCHED or self.switched != "tunnel":
            return []
        data, self.leftover = self.leftover, b""
        self.state = START
        self.switched = None
        return self.feed(data, ts) if data else []

    def _unqueue(self) -> Message:
        m = self.pending.popleft()
        self.budget.held -= m.cost
        return m

    def release(self) -> None:
        """Drop the bytes held for the next call (end of stream, gap, connection gone)."""
        self.budget.held -= len(self.buf)
        self.buf = b""

    def close(self) -> None:
        """The connection is gone: give back everything this direction holds."""
        self.release()
        if self.msg is not None:
            self.budget.held -= self.msg.cost
            self.msg = None

    def gap(self, size: int, ts: int) -> list[Message]:
        """`size` bytes of the stream were lost: skip them if they fall inside a body of
        known length, otherwise give up the current message and resynchronise."""
        done: list[Message] = []
        self.offset += size + len(self.buf)
        st = self.state
        self.after_gap = True
        if st in (BODY, CHUNK_DATA) and size <= self.remaining and not self.buf:
            self.remaining -= size
            self.msg.body_size += size
            self.msg.gap += size
            if self.remaining == 0:
                if st == BODY:
                    self._complete(ts, self.offset, done)
                else:
                    self.state = CHUNK_END
            return done
        if st == BODY_EOF:
            self.msg.body_size += size
            self.msg.gap += size
            return done
        if st == HEAD and self.buf:
            self._cut_head(size, ts, done)
            self.state = SEEK
            return done
        self.release()
        if st == SWITCHED:
            return done
        if self.msg is not None:
            self.msg.gap += size
            self.msg.errors.append(("gap", f"{size} bytes lost in the capture"))
            self._complete(ts, self.offset, done)
        self.state = SEEK
        return done

    def _cut_head(self, size: int, ts: int, done: list) -> None:
        """A gap inside a header block: the message keeps the lines before the cut."""
        data = self.buf
        self.release()
        eol = data.rfind(b"\n")
        if eol < 0:
            return  # not even the start line was captured
        head = data[: eol + 1] + (b"\r\n" if data[eol - 1 : eol] == b"\r" else b"\n")
        before = len(done)
        self.offset -= size
        self._head(head, 0, len(head), ts, self.offset - len(data), done)
        self.offset += size
        msg = self.msg if self.msg is not None else (done[-1] if len(done) > before else None)
        if msg is None:
            return
        msg.errors.append(("gap", f"{size} bytes lost in the headers"))
        if self.msg is not None:
            self._complete(ts, self.offset, done)

    def finish(self, ts: int) -> list[Message]:
        """End of the stream (FIN/RST/eviction): a body running to the close completes; a
        message cut short is returned with an `incomplete` error."""
        done: list[Message] = []
        if self.state == BODY_EOF:
            self._complete(ts, self.offset, done)
        elif self.msg is not None and self.state not in (START, SEEK, SWITCHED):
            self.msg.errors.append(("incomplete", "stream ended inside the message"))
            self._complete(ts, self.offset, done)
        elif self.state == HEAD and self.buf:
            self._error("incomplete", "stream ended inside the headers")
        elif self.garbage or (self.state == SEEK and self.buf):
            lost = self.garbage + len(self.buf)
            self._error("not_http", f"{lost} bytes that are not HTTP/1.x")
            self.garbage = 0
        self.state = START
        self.release()
        return done

    # -- internals --------------------------------------------------------------------

    def _error(self, code: str, detail: str) -> None:
        """An error goes with the message being parsed, or stands alone when none is."""
        if self.msg is not None:
            self.msg.errors.append((code, detail))
        else:
            self.errors.append((code, detail))

    def _body(self, data: bytes, pos: int, take: int) -> None:
        msg = self.msg
        msg.body_size += take
        room = self.sample_limit - len(msg.sample)
        if room > 0 and take:
            msg.sample += data[pos : pos + min(room, take)]

    def _chunk_size(self, data: bytes, pos: int, ts: int, base: int, done: list) -> int:
        """A chunk-size line: the new position, or -1 when more data is needed."""
        n = len(data)
        eol = data.find(b"\n", pos)
        if eol < 0:
            if n - pos > 1024:
                self._bad_chunk(data[pos : pos + 32], ts, base + pos, done)
                return -1
            self.buf = data[pos:]
            return -1
        line = data[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
            if not line or line[:1] in (b"-", b"+") or b"_" in line or b"x" in line.lower():
                raise ValueError
        except ValueError:
            self._bad_chunk(line[:32], ts, base + pos, done)
            return eol + 1
        pos = eol + 1
        if size == 0:
            self.state = TRAILERS
        else:
            self.remaining = size
            self.state = CHUNK_DATA
        return pos

    def _chunk_end(self, data: bytes, pos: int, ts: int, base: int, done: list) -> int:
        """The CRLF after a chunk's data."""
        n = len(data)
        if n - pos < 2 and data[pos : pos + 1] == b"\r":
            self.buf = data[pos:]
            return -1
        if data.startswith(b"\r\n", pos):
            pos += 2
        elif data.startswith(b"\n", pos):
            pos += 1
        else:
            self._bad_chunk(data[pos : pos + 16], ts, base + pos, done)
            return pos
        self.state = CHUNK_SIZE
        return pos

    def _trailer(self, line: bytes, ts: int, off: int, done: list) -> None:
        msg = self.msg
        msg.header_size += len(line) + 2
        if msg.header_size > self.header_limit:  # trailers count in the header limit
            self._error("headers_too_large", "trailers")
            self._complete(ts, off, done)
            self.state = SEEK
            return
        name, _, value = line.partition(b":")
        msg.headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        msg.cost += len(line) + 100
        self.budget.held += len(line) + 100

    def _bad_chunk(self, what: bytes, ts: int, off: int, done: list) -> None:
        self._error("bad_chunk_size", repr(bytes(what))[2:-1])
        self._complete(ts, off, done)
        self.state = SEEK

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
        lines = text.split("\n")
        if text.count("\r\n") != len(lines) - 1:
            # RFC 9112 section 2.2: a bare LF ends a line too (never hides the next header)
            lines = [x[:-1] if x.endswith("\r") else x for x in lines]
            bare_lf = True
        else:
            lines = [x[:-1] for x in lines[:-1]] + lines[-1:]
            bare_lf = False
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
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or ascii_int(parts[1]) is None:
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
        repeated: dict[str, list[str]] = {}
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
            if k in headers:
                more = repeated.get(k)
                if more is None:
                    repeated[k] = [headers[k], v]
                else:
                    more.append(v)
            else:
                headers[k] = v
        for k, vs in repeated.items():  # joined once: linear in the number of repeats
            headers[k] = ", ".join(vs)

    def _framing(self, msg: Message, end: int, ts: int, base: int, done: list) -> int:
        """RFC 9112 section 6.3: how long is the body?"""
        h = msg.headers
        te = h.get("transfer-encoding")
        cl = h.get("content-length")
        req = None
        if not self.is_request:
            status = msg.status
            pending = self.pending
            if self.after_gap and self.peer_acked >= 0:
                # a response was lost in a gap: requests the server had already received
                # before this response started were answered by the lost bytes
                while len(pending) > 1 and pending[1].end_offset <= self.peer_acked:
                    self._unqueue()
            self.after_gap = False
            if pending:
                req = pending[0] if 100 <= status < 200 and status != 101 else self._unqueue()
                msg.request = req
                msg.trace = req.trace
            if status == 101 or (req is not None and req.method == "CONNECT" and status < 300):
                up = h.get("upgrade", "").lower()
                self.switched = "h2" if up == "h2c" else "tunnel"
                self.switch_msg = msg
                self.state = SWITCHED
                self._complete(ts, base + end, done, switching=True)
                return end
            if (
                100 <= status < 200
                or status in (204, 304)
                or (req is not None and req.method == "HEAD")
            ):
                self._complete(ts, base + end, done)
                return end
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

    def _complete(self, ts: int, off: int, done: list, switching: bool = False) -> None:
        msg = self.msg
        self.msg = None
        if not switching:
            self.state = START
        if msg is None:
            return
        msg.end_ts = ts
        msg.end_offset = off
        if not self.is_request:
            self.budget.held -= msg.cost
        else:
            self.pending.append(msg)  # still charged while it waits for its response
            while len(self.pending) > 1 and (
                len(self.pending) > MAX_PENDING or self.budget.over()
            ):  # never answered: keep the queue bounded
                self._unqueue()
        done.append(msg)
