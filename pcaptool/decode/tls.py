"""TLS records (RFC 8446 §5.1) and the ClientHello's SNI and ALPN (RFC 6066, RFC 7301).

Only records that start in this packet are read; dpkt parses the hello messages. Every
length is checked against what was captured: a short record or hello is reported as
`handshake_truncated`, never read past.
"""

from __future__ import annotations

import struct

from pcaptool.decode import Step

RECORD = struct.Struct("!BHH")
CONTENT_TYPES = {
    20: "change_cipher_spec",
    21: "alert",
    22: "handshake",
    23: "application_data",
    24: "heartbeat",
}
VERSIONS = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
HANDSHAKES = {
    1: "ClientHello",
    2: "ServerHello",
    4: "NewSessionTicket",
    8: "EncryptedExtensions",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    15: "CertificateVerify",
    16: "ClientKeyExchange",
    20: "Finished",
}
EXT_SNI, EXT_ALPN, EXT_SUPPORTED_VERSIONS = 0, 16, 43


def looks_like_tls(buf: bytes, off: int, end: int) -> bool:
    return end - off >= 5 and buf[off] in CONTENT_TYPES and buf[off + 1] == 3 and buf[off + 2] <= 4


def tls(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    read_records(bytes(buf[off:end]), rec)
    return None


def read_records(payload: bytes, rec: dict) -> dict:
    records = []
    out: dict = {"records": records}
    off, end = 0, len(payload)
    while off + 5 <= end and len(records) < 16:
        ctype, version, length = RECORD.unpack_from(payload, off)
        if ctype not in CONTENT_TYPES or version >> 8 != 3:
            break
        records.append(
            {
                "type": CONTENT_TYPES[ctype],
                "version": VERSIONS.get(version, hex(version)),
                "len": length,
            }
        )
        if ctype == 22 and "handshake" not in out and length and off + 6 <= end:
            _handshake(payload[off + 5 : off + 5 + length], out)
        off += 5 + length
    rec["tls"] = out
    return out


def _handshake(body: bytes, out: dict) -> None:
    htype = body[0]
    out["handshake"] = HANDSHAKES.get(htype, str(htype))
    if htype not in (1, 2):
        return
    hlen = int.from_bytes(body[1:4], "big")
    if hlen + 4 > len(body):
        out["handshake_truncated"] = True
        return
    import dpkt  # here, not at start-up: most translations never parse a hello

    try:
        hello = (dpkt.ssl.TLSClientHello if htype == 1 else dpkt.ssl.TLSServerHello)(
            body[4 : 4 + hlen]
        )
    except (dpkt.UnpackError, struct.error, IndexError, ValueError, TypeError, KeyError):
        out["handshake_truncated"] = True
        return
    out["hello_version"] = VERSIONS.get(hello.version, hex(hello.version))
    for etype, data in getattr(hello, "extensions", None) or ():
        if etype == EXT_SNI and htype == 1:
            sni = _sni(data)
            if sni:
                out["sni"] = sni
        elif etype == EXT_ALPN:
            out["alpn"] = _alpn(data)
        elif etype == EXT_SUPPORTED_VERSIONS:
            out["supported_versions"] = _versions(data, htype)


def _sni(data: bytes) -> str | None:
    # server_name_list: u16 length, then (u8 type, u16 length, name)*
    pos = 2
    while pos + 3 <= len(data):
        ntype, nlen = data[pos], int.from_bytes(data[pos + 1 : pos + 3], "big")
        if ntype == 0:
            return data[pos + 3 : pos + 3 + nlen].decode("ascii", "replace")
        pos += 3 + nlen
    return None


def _alpn(data: bytes) -> list[str]:
    protos, pos = [], 2
    while pos < len(data):
        n = data[pos]
        protos.append(data[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    return protos


def _versions(data: bytes, htype: int) -> list[str]:
    if htype == 2:  # ServerHello carries the one selected version
        return [VERSIONS.get(int.from_bytes(data[:2], "big"), data[:2].hex())]
    return (
        [
            VERSIONS.get(int.from_bytes(data[i : i + 2], "big"), data[i : i + 2].hex())
            for i in range(1, 1 + data[0], 2)
        ]
        if data
        else []
    )
