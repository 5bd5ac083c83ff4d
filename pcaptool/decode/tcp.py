"""TCP header and options (RFC 9293, RFC 7323, RFC 2018).

A header cut short keeps its ports when they were captured (as tshark does); a segment
with payload steps to the TCP_PORT table."""

from __future__ import annotations

import struct

from pcaptool.decode import TCP_PORT, Step, Truncated, need

TCP = struct.Struct("!HHIIBBHHH")
U16 = struct.Struct("!H")
PORTS = struct.Struct("!HH")
U32X2 = struct.Struct("!II")
TS_ONLY = b"\x01\x01\x08\x0a"  # NOP, NOP, timestamps (kind 8, length 10): Linux's options

# flag bit -> (name, tcpdump letter); tcpdump prints "." for ACK
FLAG_BITS = (
    (0x02, "SYN", "S"),
    (0x01, "FIN", "F"),
    (0x04, "RST", "R"),
    (0x08, "PSH", "P"),
    (0x20, "URG", "U"),
    (0x40, "ECE", "E"),
    (0x80, "CWR", "W"),
    (0x10, "ACK", "."),
)
FLAG_NAMES: dict[int, tuple[list[str], str]] = {}


def flags_of(bits: int) -> tuple[list[str], str]:
    """(["SYN", "ACK"], "S.") for a flags byte; memoised, there are only 256."""
    hit = FLAG_NAMES.get(bits)
    if hit is None:
        names = [n for b, n, _ in FLAG_BITS if bits & b]
        letters = "".join(c for b, _, c in FLAG_BITS if bits & b) or "none"
        hit = FLAG_NAMES[bits] = (names, letters)
    return hit


def tcp(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    if off + 20 > end:
        if off + 4 <= end:
            sport, dport = PORTS.unpack_from(buf, off)
            rec["tcp"] = {"sport": sport, "dport": dport}
        need("tcp", "TCP header", off, 20, end)
    sport, dport, seq, ack, doff, bits, win, _csum, urg = TCP.unpack_from(buf, off)
    hlen = (doff >> 4) * 4
    if hlen < 20:
        rec["tcp"] = {"sport": sport, "dport": dport}
        raise Truncated("tcp", f"TCP data offset {hlen} is below 20")
    names, letters = flags_of(bits)
    t = tcp_fields(sport, dport, seq, ack, names, letters, win, hlen)
    rec["tcp"] = t
    if urg and bits & 0x20:
        t["urgent"] = urg
    if off + hlen > end:
        need("tcp", "TCP options", off, hlen, end)
    if hlen == 32 and buf[off + 20 : off + 24] == TS_ONLY:
        t["options"] = {"ts": list(U32X2.unpack_from(buf, off + 24))}
    elif hlen > 20:
        t["options"] = options(buf, off + 20, off + hlen)
    size = t["len"] = max(end - off - hlen, 0)
    return (
        (TCP_PORT, sport if dport not in TCP_PORT and sport in TCP_PORT else dport, off + hlen, end)
        if size
        else None
    )


def options(buf: bytes, off: int, end: int) -> dict:
    opts: dict = {}
    while off < end:
        kind = buf[off]
        if kind == 0:
            break
        if kind == 1:
            off += 1
            continue
        if off + 1 >= end:
            break
        olen = buf[off + 1]
        if olen < 2 or off + olen > end:
            opts["malformed"] = True
            break
        if kind == 2 and olen == 4:
            opts["mss"] = U16.unpack_from(buf, off + 2)[0]
        elif kind == 3 and olen == 3:
            opts["wscale"] = buf[off + 2]
        elif kind == 4:
            opts["sack_perm"] = True
        elif kind == 5:
            opts["sack"] = [
                list(U32X2.unpack_from(buf, p)) for p in range(off + 2, off + olen - 7, 8)
            ]
        elif kind == 8 and olen == 10:
            opts["ts"] = list(U32X2.unpack_from(buf, off + 2))
        elif kind == 30:
            opts["mptcp"] = True
        elif kind == 34:
            opts["tfo"] = buf[off + 2 : off + olen].hex()
        else:
            opts.setdefault("other", []).append(kind)
        off += olen
    return opts


def tcp_fields(
    sport: int, dport: int, seq: int, ack: int, names: list, letters: str, win: int, hlen: int
) -> dict:
    """The record's `tcp` object of a TCP header (decode/fastpath.py writes the same dict
    out in line; tests/test_decode_fastpath.py checks that they agree); `len` is set once
    the payload is known."""
    return {
        "sport": sport,
        "dport": dport,
        "seq": seq,
        "ack": ack,
        "flags": names,
        "flags_str": letters,
        "window": win,
        "hdr_len": hlen,
        "len": 0,
    }
