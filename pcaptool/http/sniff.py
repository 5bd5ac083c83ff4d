"""Where HTTP starts in a byte stream: protocol detection that re-synchronises.

A connection's first bytes may be a 1-byte keep-alive, a banner, junk, or the middle of a
message (the capture started late, or segments were lost). Instead of deciding once from
the first payload, each direction is scanned (`Sniffer.feed`) for the first thing that
starts HTTP: a request line, a status line, the HTTP/2 client preface, a run of plausible
HTTP/2 frames, or a TLS ClientHello record. What was skipped before it is counted so the
caller can report it. Memory is bounded: only the last 32 bytes (the start of a start
line cut by a segment boundary) are kept between calls.

`find_h2_frame` is the HTTP/2 half: after a gap it finds the next plausible frame header
as tshark does (length within the max frame size, known type, flags and stream id fit the
type, client-initiated streams odd), confirmed by the frame header that follows it.
"""

from __future__ import annotations

import re
import struct

FRAME_HEADER = struct.Struct(">HBBBI")
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_MAX_FRAME = 16384
# a request line, a status line or the HTTP/2 preface, anywhere in the data
START = re.compile(
    rb"(?P<h2>PRI \* HTTP/2\.0\r\n)"
    rb"|(?P<request>[A-Z][A-Z-]{2,15} [^ \r\n]{1,8192} HTTP/1\.[019]\r?\n)"
    rb"|(?P<response>HTTP/1\.[019] \d{3}[ \r\n])"
)
TLS_HELLO = re.compile(rb"\x16\x03[\x00-\x04].{2}\x01", re.DOTALL)
CARRY = 32  # bytes kept after a failed scan: a start line may straddle two segments
# type -> (stream id must be 0, must not be 0, exact payload length or None)
_RULES = {
    0: (False, True, None),  # DATA
    1: (False, True, None),  # HEADERS
    2: (False, True, 5),  # PRIORITY
    3: (False, True, 4),  # RST_STREAM
    4: (True, False, None),  # SETTINGS (length % 6 == 0, checked below)
    5: (False, True, None),  # PUSH_PROMISE
    6: (True, False, 8),  # PING
    7: (True, False, None),  # GOAWAY (length >= 8)
    8: (False, False, 4),  # WINDOW_UPDATE
    9: (False, True, None),  # CONTINUATION
}
_FLAGS = {0: 0x09, 1: 0x2D, 2: 0, 3: 0, 4: 0x01, 5: 0x0C, 6: 0x01, 7: 0, 8: 0, 9: 0x04}


def frame_end(data: bytes, pos: int, max_len: int = DEFAULT_MAX_FRAME, client: bool = False) -> int:
    """The end of the frame whose header starts at data[pos] when the header is
    plausible, else -1. `client`: the frame comes from the client (its HEADERS and DATA
    are on odd stream ids)."""
    hi, lo, ftype, flags, sid = FRAME_HEADER.unpack_from(data, pos)
    length = (hi << 8) | lo
    rule = _RULES.get(ftype)
    if rule is None or length > max_len or sid & 0x80000000 or flags & ~_FLAGS[ftype]:
        return -1
    zero, nonzero, exact = rule
    if (zero and sid) or (nonzero and not sid) or (exact is not None and length != exact):
        return -1
    if ftype == 4 and (length % 6 or (flags and length)):
        return -1
    if ftype == 7 and length < 8:
        return -1
    if client and ftype in (0, 1, 9) and not sid & 1:
        return -1
    return pos + 9 + length


def find_h2_frame(
    data: bytes, pos: int = 0, max_len: int = DEFAULT_MAX_FRAME, client: bool = False
) -> int:
    """The offset of the first plausible frame header at or after `pos` whose frame ends
    at the end of the data, or is followed by another plausible header (or by too few
    bytes to tell); -1 when none is found."""
    n = len(data)
    for p in range(pos, n - 8):
        end = frame_end(data, p, max_len, client)
        if end < 0:
            continue
        if end + 9 > n or frame_end(data, end, max_len, client) >= 0:
            return p
    return -1


def looks_like_frames(data: bytes, max_len: int = 1 << 20) -> bool:
    """Mid-connection capture without the preface: do these bytes start with a run of
    plausible HTTP/2 frames that ends exactly at the end of the data?"""
    pos = 0
    n = len(data)
    frames = 0
    while pos + 9 <= n:
        pos = frame_end(data, pos, max_len)
        if pos < 0:
            return False
        frames += 1
    return frames > 0 and pos == n


class Found:
    """What a sniffer found: `kind` ("request", "response", "h2", "h2frames", "tls"),
    `skipped` bytes before it, and `data`: the stream from the find on."""

    __slots__ = ("kind", "skipped", "data")

    def __init__(self, kind: str, skipped: int, data: bytes) -> None:
        self.kind = kind
        self.skipped = skipped
        self.data = data


class Sniffer:
    """One direction of a connection whose protocol is not known yet."""

    __slots__ = ("buf", "skipped", "frames")

    def __init__(self, frames: bool = True) -> None:
        self.buf = b""
        self.skipped = 0  # bytes passed over so far
        self.frames = frames  # also accept a run of HTTP/2 frames (mid-connection)

    def feed(self, data: bytes) -> Found | None:
        """The next bytes of the direction; a `Found` once HTTP (or TLS) starts."""
        if self.buf:
            data = self.buf + data
            self.buf = b""
        found = self._scan(data)
        if found is not None:
            return found
        keep = min(len(data), CARRY)
        self.skipped += len(data) - keep
        self.buf = data[len(data) - keep :]
        return None

    def gap(self, size: int) -> None:
        """Bytes were lost: what was carried over no longer joins what follows."""
        self.skipped += size + len(self.buf)
        self.buf = b""

    def pending(self) -> int:
        """Bytes skipped or held so far (reported when the direction ends undecided)."""
        return self.skipped + len(self.buf)

    def _scan(self, data: bytes) -> Found | None:
        if self.frames and looks_like_frames(data):
            return Found("h2frames", self.skipped, data)
        m = START.search(data)
        end = m.start() if m is not None else len(data)
        t = TLS_HELLO.search(data, 0, end + 6)
        if t is not None and t.start() < end:
            return Found("tls", self.skipped + t.start(), data[t.start() :])
        if m is None:
            return None
        kind = m.lastgroup
        if kind == "request":
            end += _known_method_start(data, end)
        return Found("h2" if kind == "h2" else kind, self.skipped + end, data[end:])


KNOWN_METHODS = (b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT")


def _known_method_start(data: bytes, start: int) -> int:
    """A method token that is not a known method but ends with one ("PGET": the port
    byte of a SOCKS request before "GET") starts at the known method."""
    sp = data.find(b" ", start)
    token = data[start:sp]
    if token in KNOWN_METHODS:
        return 0
    for m in KNOWN_METHODS:
        if token.endswith(m):
            return len(token) - len(m)
    return 0
