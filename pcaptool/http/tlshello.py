"""The TLS ClientHello read from the reassembled stream (RFC 8446 section 4.1.2).

`pcaptool/decode/tls.py` reads the records that start in one packet; a ClientHello larger
than a segment (post-quantum key shares make them 1.5-2 KB) or split over several TLS
records (RFC 8446 section 5.1 allows a handshake message to span records) is cut there.
`HelloReader` is fed the client direction's bytes in order, joins the handshake fragments
of consecutive handshake records, and parses the ClientHello once it is whole:

- `sni` (server_name, RFC 6066), `alpn` (RFC 7301), `supported_versions` (RFC 8446 4.2.1),
  `hello_version`;
- GREASE values (RFC 8701: 0x?A?A extension types, versions, ALPN ids) are left out and
  counted in `grease`;
- `ech`: the hello carries encrypted_client_hello (0xfe0d); its `sni` is then the outer,
  public name.

At most 64 KiB are held; what is not a TLS handshake record ends the reader.
"""

from __future__ import annotations

import struct

VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2"}
VERSIONS[0x0304] = "TLS 1.3"
EXT_SNI, EXT_ALPN, EXT_VERSIONS, EXT_ECH = 0, 16, 43, 0xFE0D
MAX_HELLO = 64 * 1024
U16 = struct.Struct(">H")


def is_grease(v: int) -> bool:
    return v & 0x0F0F == 0x0A0A and v >> 8 == v & 0xFF


class HelloReader:
    """One client direction. `feed` returns the ClientHello dict once it is complete,
    then None for ever (`done`)."""

    __slots__ = ("buf", "hs", "done", "records")

    def __init__(self) -> None:
        self.buf = b""  # bytes of a record not yet complete
        self.hs = b""  # handshake bytes joined from the records so far
        self.done = False
        self.records = 0

    def feed(self, data: bytes) -> dict | None:
        if self.done:
            return None
        buf = self.buf + data if self.buf else data
        pos = 0
        while len(buf) - pos >= 5:
            ctype, major, length = buf[pos], buf[pos + 1], U16.unpack_from(buf, pos + 3)[0]
            if ctype != 22 or major != 3:
                self.done = True
                return None
            if len(buf) - pos < 5 + length:
                break
            self.hs += buf[pos + 5 : pos + 5 + length]
            self.records += 1
            pos += 5 + length
            hello = self._hello()
            if hello is not None or self.done:
                self.done = True
                self.buf = b""
                return hello
        self.buf = buf[pos:]
        if len(self.buf) + len(self.hs) > MAX_HELLO:
            self.done = True
        return None

    def _hello(self) -> dict | None:
        hs = self.hs
        if len(hs) < 4:
            return None
        if hs[0] != 1:  # not a ClientHello: nothing to read
            self.done = True
            return None
        hlen = int.from_bytes(hs[1:4], "big")
        if len(hs) < 4 + hlen:
            return None
        try:
            out = parse_client_hello(hs[4 : 4 + hlen])
        except (IndexError, struct.error, ValueError):
            self.done = True
            return None
        out["records"] = self.records
        return out


def parse_client_hello(body: bytes) -> dict:
    """The fields of a ClientHello body (after the 4-byte handshake header)."""
    out: dict = {"hello_version": VERSIONS.get(U16.unpack_from(body, 0)[0], body[:2].hex())}
    pos = 2 + 32  # legacy_version, random
    pos += 1 + body[pos]  # legacy_session_id
    pos += 2 + U16.unpack_from(body, pos)[0]  # cipher_suites
    pos += 1 + body[pos]  # legacy_compression_methods
    grease = 0
    if pos + 2 <= len(body):
        end = min(len(body), pos + 2 + U16.unpack_from(body, pos)[0])
        pos += 2
        while pos + 4 <= end:
            etype, elen = struct.unpack_from(">HH", body, pos)
            data = body[pos + 4 : pos + 4 + elen]
            pos += 4 + elen
            if is_grease(etype):
                grease += 1
            elif etype == EXT_SNI:
                name = _sni(data)
                if name is not None:
                    out["sni"] = name
            elif etype == EXT_ALPN:
                protos, g = _alpn(data)
                out["alpn"] = protos
                grease += g
            elif etype == EXT_VERSIONS and data:
                vs = [U16.unpack_from(data, i)[0] for i in range(1, data[0], 2)]
                out["supported_versions"] = [
                    VERSIONS.get(v, f"{v:04x}") for v in vs if not is_grease(v)
                ]
                grease += sum(1 for v in vs if is_grease(v))
            elif etype == EXT_ECH:
                out["ech"] = True
    if grease:
        out["grease"] = grease
    return out


def _sni(data: bytes) -> str | None:
    pos = 2  # server_name_list length
    while pos + 3 <= len(data):
        ntype, nlen = data[pos], U16.unpack_from(data, pos + 1)[0]
        if ntype == 0:
            return data[pos + 3 : pos + 3 + nlen].decode("ascii", "replace")
        pos += 3 + nlen
    return None


def _alpn(data: bytes) -> tuple[list[str], int]:
    protos, pos, grease = [], 2, 0
    while pos < len(data):
        n = data[pos]
        p = data[pos + 1 : pos + 1 + n]
        if len(p) == 2 and is_grease(U16.unpack(p)[0]):
            grease += 1
        else:
            protos.append(p.decode("ascii", "replace"))
        pos += 1 + n
    return protos, grease
