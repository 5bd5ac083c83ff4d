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

from collections import deque

from pcaptool.http.budget import Budget
from pcaptool.http.h1body import BodyStates
from pcaptool.http.h1grammar import (  # noqa: F401 (re-exported: the grammar's old home)
    BODY,
    BODY_EOF,
    CHUNK_DATA,
    CHUNK_END,
    CHUNK_SIZE,
    END_OF_HEADERS,
    H2_PREFACE,
    HEAD,
    HEADER_LIMIT,
    MAX_GARBAGE,
    MAX_HOLD,
    MAX_PENDING,
    MAX_START_LINE,
    METHOD_PREFIXES,
    REQUEST_LINE,
    SEEK,
    SEEK_REQUEST,
    SEEK_RESPONSE,
    START,
    STATUS_LINE,
    SWITCHED,
    TRAILERS,
    ascii_int,
    chunked_last,
    drop_pending,
    looks_like_http,
)
from pcaptool.http.h1head import HeadStates
from pcaptool.http.h1message import Message

__all__ = ["Http1Parser", "Message", "drop_pending", "looks_like_http"]


class Http1Parser(HeadStates, BodyStates):
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
            if st == BODY:  # the steady case, inline: a body of known length goes on
                msg = self.msg
                rem = self.remaining
                take = n - pos
                if take > rem:
                    take = rem
                msg.body_size += take
                room = self.sample_limit - len(msg.sample)
                if room > 0:
                    msg.sample += data[pos : pos + (room if room < take else take)]
                pos += take
                self.remaining = rem - take
                if take == rem:
                    self._complete(ts, base + pos, done)
                continue
            if st in (START, SEEK):
                if self.start_ts is None:
                    self.start_ts = ts
                pos = self._start(data, pos, ts, done)
                if pos < 0:
                    break
                if pos >= n or self.state != HEAD:
                    continue
                st = HEAD  # a start line: its header section follows at once
            if st == HEAD:
                found = END_OF_HEADERS.search(data, pos, pos + self.header_limit + 4)
                if found is not None:
                    pos = self._head(data, pos, found.end(), ts, base, done)
                else:
                    pos = self._head_cut(data, pos)
            else:
                pos = self._step(data, pos, ts, base, done)
            if pos < 0:
                break
        held = len(self.buf)
        if held:  # buffered bytes are counted again when they come back through `data`
            self.offset -= held
            self.budget.held += held
        return done

    def _step(self, data: bytes, pos: int, ts: int, base: int, done: list) -> int:
        """One step of the state machine from `pos` in a state other than BODY, START,
        SEEK and HEAD (`feed` handles those): the new position, or -1 when the rest of
        `data` is buffered, consumed or handed over."""
        st = self.state
        if st == CHUNK_SIZE:
            return self._chunk_size(data, pos, ts, base, done)
        if st == CHUNK_DATA:
            return self._step_chunk_data(data, pos, ts, base, done)
        if st == CHUNK_END:
            return self._chunk_end(data, pos, ts, base, done)
        if st == TRAILERS:
            return self._step_trailers(data, pos, ts, base, done)
        if st == BODY_EOF:
            return self._step_body_eof(data, pos, ts, base, done)
        self.leftover = data[pos:]  # SWITCHED
        return -1

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
