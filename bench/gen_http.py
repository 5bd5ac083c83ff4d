"""Synthesize a realistic HTTP/1.1 capture (Ethernet/IPv4/TCP) of N packets.

Connections from many clients: handshake, a keep-alive run of GET/POST requests with
traceparent headers, responses of one to several segments with ACKs, then FIN/ACK.
Response bodies are JSON (`application/json`, the default) or plain text (`--body text`,
`text/plain` lines of words), of the same range of sizes.
Usage: python bench/gen_http.py OUT.pcap [PACKETS] [--body json|text]
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pcaptool.capfile.reader import LINKTYPE_ETHERNET, PcapWriter  # noqa: E402

ETH = bytes.fromhex("0200000000020200000000010800")
ETH_BACK = bytes.fromhex("0200000000010200000000020800")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def packet(src, dst, sport, dport, seq, ack, flags, payload=b"", back=False):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 8 << 4, flags, 502, 0, 0)
    tcp += b"\x01\x01\x08\x0a" + struct.pack("!II", seq & 0xFFFF, ack & 0xFFFF)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, seq & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return (ETH_BACK if back else ETH) + ip + tcp + payload


WORDS = b"alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def body_of(kind: str, rnd: random.Random) -> tuple[bytes, bytes]:
    """A response body and its content type: JSON or plain text of 20 B to 5 KB."""
    if kind == "json":
        return b'{"ok":true,"items":[' + b"1," * rnd.randint(10, 2500) + b"0]}", b"application/json"
    lines = []
    for i in range(rnd.randint(1, 80)):
        lines.append(b"%d " % i + b" ".join(rnd.choice(WORDS) for _ in range(8)))
    return b"\n".join(lines) + b"\n", b"text/plain; charset=utf-8"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("packets", type=int, nargs="?", default=200_000)
    ap.add_argument("--body", choices=("json", "text"), default="json")
    args = ap.parse_args()
    out, target = args.out, args.packets
    rnd = random.Random(7)
    server = bytes([10, 0, 0, 9])
    ts = 1_700_000_000_000_000_000
    n = 0
    with out.open("wb") as f:
        w = PcapWriter(f, LINKTYPE_ETHERNET, 65535, nanosecond=True)

        def emit(data):
            nonlocal ts, n
            ts += rnd.randint(5_000, 400_000)
            w.write(ts, data)
            n += 1

        conn = 0
        while n < target:
            conn += 1
            client = bytes([10, 1, (conn >> 8) & 0xFF, conn & 0xFF])
            cport = 30000 + conn % 30000
            c_seq, s_seq = rnd.getrandbits(32), rnd.getrandbits(32)
            emit(packet(client, server, cport, 8080, c_seq, 0, 0x02))
            emit(packet(server, client, 8080, cport, s_seq, c_seq + 1, 0x12, back=True))
            c_seq += 1
            s_seq += 1
            emit(packet(client, server, cport, 8080, c_seq, s_seq, 0x10))
            for _ in range(rnd.randint(1, 6)):
                trace = f"{rnd.getrandbits(128):032x}"
                path = f"/api/v1/items/{rnd.randint(1, 99999)}?q={rnd.randint(1, 999)}"
                req = (
                    f"GET {path} HTTP/1.1\r\nHost: svc.example.run.app\r\nUser-Agent: curl/8.5.0\r\n"
                    f"Accept: */*\r\ntraceparent: 00-{trace}-{rnd.getrandbits(64):016x}-01\r\n\r\n"
                ).encode()
                emit(packet(client, server, cport, 8080, c_seq, s_seq, 0x18, req))
                c_seq += len(req)
                emit(packet(server, client, 8080, cport, s_seq, c_seq, 0x10, back=True))
                body, ctype = body_of(args.body, rnd)
                resp = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: "
                    + ctype
                    + b"\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                for i in range(0, len(resp), 1448):
                    chunk = resp[i : i + 1448]
                    emit(packet(server, client, 8080, cport, s_seq, c_seq, 0x18, chunk, back=True))
                    s_seq += len(chunk)
                emit(packet(client, server, cport, 8080, c_seq, s_seq, 0x10))
            emit(packet(client, server, cport, 8080, c_seq, s_seq, 0x11))
            emit(packet(server, client, 8080, cport, s_seq, c_seq + 1, 0x11, back=True))
            emit(packet(client, server, cport, 8080, c_seq + 1, s_seq + 1, 0x10))
    print(f"{out}: {n} packets, {conn} connections", file=sys.stderr)


if __name__ == "__main__":
    main()
