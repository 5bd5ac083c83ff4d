"""Body states of the HTTP/1.x parser: chunked bodies (chunk-size lines, chunk data, the
CRLF after it), trailers (RFC 9112 section 7) and a body that runs to the end of the
connection (a body of known length is `Http1Parser.feed`'s inline steady case). A mixin of
`pcaptool.http.http1.Http1Parser`, which provides `_error` and `_complete`."""

from __future__ import annotations

from pcaptool.http.h1grammar import CHUNK_DATA, CHUNK_END, CHUNK_SIZE, SEEK, TRAILERS


class BodyStates:
    """Parsing of message bodies: each step takes (data, pos, ts, base, done) and returns
    the new position, or -1 when more data is needed."""

    __slots__ = ()

    def _step_chunk_data(self, data: bytes, pos: int, ts: int, base: int, done: list) -> int:
        """Inside the data of one chunk."""
        take = min(self.remaining, len(data) - pos)
        self._body(data, pos, take)
        pos += take
        self.remaining -= take
        if self.remaining == 0:
            self.state = CHUNK_END
        return pos

    def _step_trailers(self, data: bytes, pos: int, ts: int, base: int, done: list) -> int:
        """One trailer line, or the empty line that ends the message."""
        n = len(data)
        eol = data.find(b"\n", pos)
        if eol < 0:
            if n - pos > self.header_limit:
                self._error("headers_too_large", "trailers")
                self._complete(ts, base + n, done)
                self.state = SEEK
                return -1
            self.buf = data[pos:]
            return -1
        line = data[pos:eol].rstrip(b"\r")
        pos = eol + 1
        if not line:
            self._complete(ts, base + pos, done)
        else:
            self._trailer(line, ts, base + pos, done)
        return pos

    def _step_body_eof(self, data: bytes, pos: int, ts: int, base: int, done: list) -> int:
        """Inside a body that runs to the end of the connection."""
        self._body(data, pos, len(data) - pos)
        return len(data)

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
