"""The HTTP/1.x grammar the parser of `pcaptool.http.http1` works with: start-line and
resynchronisation patterns, limits, parser states, and small helpers on header values."""

from __future__ import annotations

import re
from collections import deque

from pcaptool.http.budget import Budget

REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) +([^ \r\n]+) +(HTTP/\d\.\d)\r?\n")
# RFC 1945 4.1: HTTP/0.9's Simple-Request, `GET target` and no version; its answer is a
# Simple-Response, the body alone until the connection closes.
SIMPLE_REQUEST = re.compile(rb"GET +([^ \r\n]+)\r?\n")
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
# The end of a header section: where a match of `\r?\n\r?\n` ends (only `end()` is used).
# Starting at the LF lets the search skip from LF to LF instead of trying every byte.
END_OF_HEADERS = re.compile(rb"\n\r?\n")
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
