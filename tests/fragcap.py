"""IP fragments built by struct, written as pcap, and tshark's view of them (test helper
for tests/test_ipfrag.py)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from packets import A6, B6, A, B, eth

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
T0 = 1_700_000_000


def frag4(payload: bytes, proto: int, pieces, ident: int = 0x1234, src=A, dst=B) -> list[bytes]:
    """IPv4 packets carrying `payload` (the transport header and data) cut as `pieces`:
    (offset, length, more fragments) each, offsets in bytes (multiples of 8)."""
    out = []
    for off, size, more in pieces:
        data = payload[off : off + size]
        frag = (0x2000 if more else 0) | off // 8
        hdr = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), ident, frag, 64, proto, 0, src, dst
        )
        out.append(hdr + data)
    return out


def fragment_frame(frame: bytes, pieces) -> list[bytes]:
    """The Ethernet frames of an Ethernet/IPv4 `frame`'s payload cut as `pieces`."""
    ihl = (frame[14] & 15) * 4
    ip = frame[14 : 14 + ihl]
    ident, proto = struct.unpack_from("!H", ip, 4)[0], ip[9]
    total = struct.unpack_from("!H", ip, 2)[0]
    payload = frame[14 + ihl : 14 + total]
    return [frame[:14] + p for p in frag4(payload, proto, pieces, ident, ip[12:16], ip[16:20])]


def frag6(
    payload: bytes, nxt: int, pieces, ident: int = 0x89AB, before: bytes = b"", first: int = 44
) -> list[bytes]:
    """IPv6 packets with a Fragment header after `before` (whole extension headers whose
    first one is `first`, the last one's next header 44)."""
    out = []
    for off, size, more in pieces:
        data = payload[off : off + size]
        fh = struct.pack("!BBHI", nxt, 0, off | int(more), ident)
        body = before + fh + data
        out.append(struct.pack("!IHBB16s16s", 6 << 28, len(body), first, 64, A6, B6) + body)
    return out


def ext(nxt: int, size: int = 8) -> bytes:
    """A hop-by-hop or destination options header of `size` bytes (PadN only)."""
    return struct.pack("!BBBB", nxt, size // 8 - 1, 1, size - 4) + bytes(size - 4)


def udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def write(path: Path, frames: list[bytes], etype: int = 0x0800, gaps_s=None) -> Path:
    """Ethernet frames (IP packets are wrapped with `etype`) one millisecond apart."""
    out = [PCAP_HEADER]
    usec = 0
    for i, f in enumerate(frames):
        frame = f if f[:6] in (b"\x02\x00\x00\x00\x00\x0b",) else eth(f, etype)
        usec += 1000 + (gaps_s[i] * 1_000_000 if gaps_s else 0)
        out.append(
            struct.pack("<IIII", T0 + usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


def tshark(path: Path, fields: list[str], *args: str) -> list[dict[str, list[str]]]:
    """One dict per frame: field -> every occurrence."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a"]
    cmd += ["-E", "aggregator=|", *args]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = []
    for line in out.splitlines():
        cells = line.split("\t")
        rows.append({f: [v for v in c.split("|") if v] for f, c in zip(fields, cells, strict=True)})
    return rows
