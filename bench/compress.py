#!/usr/bin/env python3
"""Compress throughput: `pcaptool compress` beside `gzip -6` on the same capture, same run.

Synthesizes a realistic capture (default ~200 MB) with PcapWriter: HTTP/1.1 requests and
responses with varying ids, cookies and JSON bodies, TLS application data (random bytes,
incompressible), and pure ACKs, over many flows. Then times both tools on it and prints
MB/s, the speed ratio and the size difference. Target (issue 5): at least 3x the speed
of `gzip -6` with output at most 10% larger.

    python3 bench/compress.py              # ~200 MB
    python3 bench/compress.py --size-mb 50 --mix text
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pcaptool.capfile.reader import PcapWriter  # noqa: E402

ETH_IP_TCP = struct.Struct("!6s6sH BBHHHBBH4s4s HHIIBBHHH")
PATHS = ["/api/v1/items", "/api/v1/users", "/static/app.js", "/healthz", "/api/v2/orders"]
AGENTS = [
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0",
    "Go-http-client/1.1",
]


def frame(rng: random.Random, flow: tuple, seq: int, ack: int, payload: bytes) -> bytes:
    src, dst, sport, dport = flow
    ip_len = 40 + len(payload)
    return ETH_IP_TCP.pack(
        b"\x02\x42\xac\x11\x00\x02", b"\x02\x42\xac\x11\x00\x03", 0x0800,
        0x45, 0, ip_len, rng.getrandbits(16), 0x4000, 64, 6, 0, src, dst,
        sport, dport, seq, ack, 0x50, 0x18 if payload else 0x10, 502, 0, 0,
    ) + payload  # fmt: skip


def http_request(rng: random.Random) -> bytes:
    return (
        f"GET {rng.choice(PATHS)}/{rng.randrange(10**6)}?page={rng.randrange(50)} HTTP/1.1\r\n"
        f"Host: service-{rng.randrange(8)}.example.internal\r\n"
        f"User-Agent: {rng.choice(AGENTS)}\r\n"
        f"X-Cloud-Trace-Context: {rng.getrandbits(128):032x}/{rng.getrandbits(63)};o=1\r\n"
        f"Cookie: session={rng.randbytes(24).hex()}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()


def http_response(rng: random.Random) -> bytes:
    items = ",".join(
        f'{{"id":{rng.randrange(10**7)},"name":"item-{rng.randrange(10**4)}",'
        f'"price":{rng.randrange(10**5) / 100},"in_stock":{str(rng.random() < 0.7).lower()}}}'
        for _ in range(rng.randrange(3, 15))
    )
    body = f'{{"items":[{items}],"next":"{rng.randbytes(8).hex()}"}}'
    return (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nDate: Thu, 26 Nov 2026 15:{rng.randrange(60):02d}:00 GMT\r\n"
        f"Server: envoy\r\nx-envoy-upstream-service-time: {rng.randrange(300)}\r\n\r\n{body}"
    ).encode()[:1448]


def synthesize(path: Path, size: int, seed: int = 5, mix: str = "mixed") -> int:
    rng = random.Random(seed)
    flows = [
        (
            rng.randbytes(4),
            rng.randbytes(4),
            rng.randrange(32768, 61000),
            rng.choice([80, 443, 8080]),
        )
        for _ in range(64)
    ]
    ts, n = 1_764_000_000_000_000_000, 0
    with open(path, "wb") as out:
        w = PcapWriter(out, 1)
        while out.tell() < size:
            flow = rng.choice(flows)
            kind = rng.random()
            if mix == "text":  # plaintext HTTP only: the case where gzip gains most
                kind = kind * 0.55 if kind < 0.8 else kind
            if kind < 0.25:
                payload = http_request(rng)
            elif kind < 0.55:
                payload = http_response(rng)
            elif kind < 0.8:
                payload = rng.randbytes(rng.randrange(100, 1448))  # TLS application data
            else:
                payload = b""
            ts += rng.randrange(1000, 200_000)
            w.write(ts, frame(rng, flow, rng.getrandbits(32), rng.getrandbits(32), payload))
            n += 1
    return n


def timed(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=200)
    ap.add_argument(
        "--mix",
        choices=["mixed", "text"],
        default="mixed",
        help="mixed: HTTP + TLS + ACKs (default); text: plaintext HTTP + ACKs only",
    )
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(prefix="pcaptool-bench-") as tmp:
        src = Path(tmp) / "capture.pcap"
        t = time.perf_counter()
        packets = synthesize(src, int(args.size_mb * 1e6), mix=args.mix)
        size = src.stat().st_size
        mb = size / 1e6
        print(
            f"capture: {mb:.1f} MB, {packets} packets (synthesized in {time.perf_counter() - t:.1f} s)"
        )

        with open(Path(tmp) / "gzip6.gz", "wb") as out:
            t_gzip = timed(["gzip", "-6", "-c", str(src)], stdout=out)
        gz_size = (Path(tmp) / "gzip6.gz").stat().st_size

        work = Path(tmp) / "part.pcap"
        shutil.copyfile(src, work)
        t_ours = timed(
            [sys.executable, "-m", "pcaptool", "compress", str(work)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        ours = work.with_name(work.name + ".gz")
        our_size = ours.stat().st_size
        subprocess.run(["gunzip", "-t", str(ours)], check=True)

        print(
            f"gzip -6           : {mb / t_gzip:8.1f} MB/s  {gz_size / 1e6:8.1f} MB  ratio {size / gz_size:.2f}"
        )
        print(
            f"pcaptool compress : {mb / t_ours:8.1f} MB/s  {our_size / 1e6:8.1f} MB  ratio {size / our_size:.2f}"
        )
        print(
            f"speed: {t_gzip / t_ours:.2f}x gzip -6 (target >= 3x); "
            f"size: {100 * (our_size - gz_size) / gz_size:+.1f}% vs gzip -6 (target <= +10%)"
        )


if __name__ == "__main__":
    main()
