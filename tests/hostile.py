"""Captures an attacker (or a broken client) could send a service: each builder writes a
pcap of `n` units of one hostile pattern (test helper for issue 11's tests)."""

from __future__ import annotations

import struct
from pathlib import Path

import hpack
from tcpconv import Capture, Conn

from pcaptool.http.http2 import PREFACE

SECRET = "s3cr3t-PLANTED-7f1c"  # planted credentials: no record may contain it
MAX_SEGMENT = 60_000  # payload per segment (IPv4 total length is 16 bits)


def h2_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">HBBBI", n >> 8, n & 0xFF, ftype, flags, sid) + payload


def send(c: Conn, from_client: bool, data: bytes) -> None:
    """`data` in segments of at most MAX_SEGMENT bytes."""
    for i in range(0, len(data), MAX_SEGMENT):
        (c.client if from_client else c.server)(data[i : i + MAX_SEGMENT])


def h2_conn(cap: Capture, port: int = 8080) -> Conn:
    c = Conn(cap, client=("10.0.0.1", 40000 + port % 20000), server=("10.0.0.9", port))
    c.handshake()
    c.client(PREFACE + h2_frame(4, 0, 0))
    c.server(h2_frame(4, 0, 0))
    return c


def h1_unterminated(path: Path, n: int) -> Path:
    """`n` connections (no handshake) that each send 7,000 header bytes and never end them."""
    cap = Capture()
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"a" * 7000
    for k in range(n):
        c = Conn(cap, client=(f"10.1.{k // 250}.{k % 250 + 1}", 40000), server=("10.0.0.9", 80))
        c.client(head)
    return cap.write(path)


def h1_huge_header_at_once(path: Path, n: int) -> Path:
    """One request whose header section of `n` bytes becomes deliverable at once: its
    segments arrive last-first, so reassembly releases them together."""
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"a" * n + b"\r\n\r\n"
    base = c.cseq
    offsets = list(range(0, len(data), MAX_SEGMENT))
    for off in reversed(offsets):
        c.raw(True, base + off, data[off : off + MAX_SEGMENT])
    c.cseq = base + len(data)
    c.server_ack()
    return cap.write(path)


def h2_continuation_flood(path: Path, n: int) -> Path:
    """A HEADERS frame without END_HEADERS followed by `n` CONTINUATION frames."""
    cap = Capture()
    c = h2_conn(cap)
    block = hpack.Encoder().encode([(":method", "GET"), (":path", "/"), (":scheme", "http")])
    data = h2_frame(1, 0, 1, block)
    data += b"".join(h2_frame(9, 0, 1, b"\x40\x01a\x01b") for _ in range(n))
    send(c, True, data)
    return cap.write(path)


def hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 section 5.1 integer with its first byte's high bits `first`."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def h2_table_growth(path: Path, n: int) -> Path:
    """The server allows a 4 GiB HPACK table; the client raises its table to that and
    sends `n` header blocks, each adding 4 KB of new entries (literals with incremental
    indexing, RFC 7541 section 6.2.1)."""
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    c.server(h2_frame(4, 0, 0, struct.pack(">HI", 1, 0xFFFFFFFF)))
    data = PREFACE + h2_frame(4, 0, 0)
    for k in range(n):
        block = hpack_int(0xFFFFFFFF, 5, 0x20) if k == 0 else b""  # table size update
        block += b"\x82\x84\x86"  # :method GET, :path /, :scheme http
        for j in range(4):
            name = f"x-{k}-{j}".encode()
            block += b"\x40" + hpack_int(len(name), 7, 0) + name + hpack_int(1000, 7, 0)
            block += b"v" * 1000
        data += h2_frame(1, 0x5, 2 * k + 1, block)
        if len(data) > MAX_SEGMENT:
            c.client(data)
            data = b""
    if data:
        c.client(data)
    return cap.write(path)


def h2_many_streams(path: Path, n: int) -> Path:
    """`n` requests, then `n` responses ending every stream in as few packets as fit."""
    cap = Capture()
    c = h2_conn(cap)
    enc = hpack.Encoder()
    req = b"".join(
        h2_frame(1, 0x5, 2 * k + 1, enc.encode([(":method", "GET"), (":path", f"/{k}")]))
        for k in range(n)
    )
    send(c, True, req)
    senc = hpack.Encoder()
    resp = b"".join(
        h2_frame(1, 0x5, 2 * k + 1, senc.encode([(":status", "200")])) for k in range(n)
    )
    send(c, False, resp)
    return cap.write(path)


def h1_many_connections(path: Path, n: int) -> Path:
    """`n` connections, each one request without an answer (the table fills)."""
    cap = Capture()
    for k in range(n):
        c = Conn(cap, client=(f"10.2.{k // 250}.{k % 250 + 1}", 40000), server=("10.0.0.9", 80))
        c.handshake()
        c.client(b"GET /" + str(k).encode() + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    return cap.write(path)


# name -> (builder, small size, large size): the memory test runs each at both sizes
HOSTILE = {
    "h1_unterminated": (h1_unterminated, 500, 4000),
    "h1_huge_header_at_once": (h1_huge_header_at_once, 100_000, 900_000),
    "h2_continuation_flood": (h2_continuation_flood, 5_000, 40_000),
    "h2_table_growth": (h2_table_growth, 500, 4_000),
    "h2_many_streams": (h2_many_streams, 2_000, 16_000),
    "h1_many_connections": (h1_many_connections, 2_000, 16_000),
}
