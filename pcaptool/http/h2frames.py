"""HTTP/2 frame vocabulary (RFC 9113 sections 4, 6 and 7) for `pcaptool.http.http2`: the
frame header layout, frame type and flag numbers, error and setting names, the bounds the
decoder keeps to, the per-direction decoding state, and the decoders of the payloads of
frames that carry no stream state (PING, GOAWAY, WINDOW_UPDATE, PRIORITY)."""

from __future__ import annotations

import struct

from pcaptool.http.hpack_tolerant import TolerantDecoder
from pcaptool.http.sniff import DEFAULT_MAX_FRAME

FRAME_HEADER = struct.Struct(">HBBBI")  # 24-bit length as 16+8 bits, type, flags, stream id
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

FRAME_TYPES = (
    "DATA",
    "HEADERS",
    "PRIORITY",
    "RST_STREAM",
    "SETTINGS",
    "PUSH_PROMISE",
    "PING",
    "GOAWAY",
    "WINDOW_UPDATE",
    "CONTINUATION",
)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONT = (
    range(10)
)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# RFC 9113 section 7
ERROR_CODES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
SETTING_NAMES = {
    0x1: "HEADER_TABLE_SIZE",
    0x2: "ENABLE_PUSH",
    0x3: "MAX_CONCURRENT_STREAMS",
    0x4: "INITIAL_WINDOW_SIZE",
    0x5: "MAX_FRAME_SIZE",
    0x6: "MAX_HEADER_LIST_SIZE",
    0x8: "ENABLE_CONNECT_PROTOCOL",
    0x9: "NO_RFC7540_PRIORITIES",
}
# non-DATA frames larger than this are reported, not kept: a header block fragment over
# MAX_HEADER_BLOCK is refused anyway, and other frames are a few bytes (SETTINGS, PING, …)
MAX_BUFFERED_FRAME = 64 * 1024 + 300
MAX_STREAMS = (
    256  # open streams kept per connection (SETTINGS_MAX_CONCURRENT_STREAMS is usually 100-250)
)
MAX_FRAMES_PER_RECORD = 64
# A header block (HEADERS/PUSH_PROMISE and its CONTINUATIONs) past this is given up, and
# the direction with it (its HPACK table is then unknown): a CONTINUATION flood costs
# 64 KiB, not memory that grows with it (CVE-2024-27316 class; servers use 64 KiB too).
MAX_HEADER_BLOCK = 64 * 1024
# The dynamic table size we honour, whatever SETTINGS_HEADER_TABLE_SIZE a peer announces
# (RFC 7541 section 4.2 lets the encoder use up to it): 64 KiB, 16 times the default.
MAX_TABLE_SIZE = 64 * 1024


def ascii_int(text: str | None) -> int | None:
    """A number of ASCII digits only (`int()` takes `²²²` or raises on it), else None."""
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


def error_name(code: int) -> str:
    return ERROR_CODES.get(code, f"0x{code:x}")


class Direction:
    """Frame decoding state of one direction."""

    __slots__ = (
        "buf",
        "decoder",
        "preface",
        "skip",
        "skip_frame",
        "block",
        "block_size",
        "block_frame",
        "resync",
        "broken",
        "skipped",
        "max_frame",
        "table_size",
        "started",
    )

    def __init__(self) -> None:
        self.buf = b""
        self.decoder: TolerantDecoder | None = None
        self.preface = False  # True while the client preface is still expected
        self.skip = 0  # DATA payload bytes still to pass over
        self.skip_frame: dict | None = None
        self.block: list[bytes] = []  # header block fragments awaiting CONTINUATION
        self.block_size = 0
        self.block_frame: dict | None = None
        self.resync = False  # after a gap: looking for the next plausible frame header
        self.broken = False  # a bound was hit (memory cap, header block): analysis stops
        self.skipped = 0  # bytes passed over while re-synchronising
        self.max_frame = DEFAULT_MAX_FRAME  # the peer's SETTINGS_MAX_FRAME_SIZE
        self.table_size = 4096
        self.started = False


def ping_fields(data: bytes, start: int, end: int, f: dict) -> None:
    f["opaque"] = data[start:end].hex()


def goaway_fields(data: bytes, start: int, end: int, f: dict) -> None:
    """A GOAWAY payload of at least 8 bytes: last stream, error code, debug data."""
    last, code = struct.unpack_from(">II", data, start)
    f["last_stream_id"] = last & 0x7FFFFFFF
    f["error"] = error_name(code)
    if end - start > 8:
        f["debug"] = data[start + 8 : min(end, start + 136)].decode("utf-8", "replace")


def window_update_fields(data: bytes, start: int, end: int, f: dict) -> None:
    if end - start >= 4:
        f["increment"] = int.from_bytes(data[start : start + 4]) & 0x7FFFFFFF


def priority_fields(data: bytes, start: int, end: int, f: dict) -> None:
    if end - start >= 5:
        dep = int.from_bytes(data[start : start + 4])
        f["dependency"] = dep & 0x7FFFFFFF
        f["exclusive"] = bool(dep >> 31)
        f["weight"] = data[start + 4] + 1
