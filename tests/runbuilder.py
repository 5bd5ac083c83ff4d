"""A capture with known HTTP latencies, statuses, traces, a refused connection and DNS
(test helper for query/report): every number the tests expect is computed from it."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import dpkt
from tcpconv import ACK, RST, SYN, Capture, Conn, tcp_frame

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Run:
    path: Path
    latencies: dict[str, list[float]] = field(default_factory=dict)  # path -> seconds
    statuses: list[int] = field(default_factory=list)
    refused: int = 0
    dns_queries: int = 0
    retransmissions: int = 0


def _udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + udp


def _dns(cap: Capture, qid: int, name: str, rcode: int, dt_ns: int) -> None:
    q = dpkt.dns.DNS(id=qid, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
    cap.add(_udp_frame("10.0.0.1", "10.0.0.53", 5353 + qid, 53, bytes(q)))
    r = dpkt.dns.DNS(id=qid, qr=1, rcode=rcode, qd=q.qd)
    if rcode == 0:
        r.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, ttl=60, ip=b"\x0a\x00\x00\x09")]
    cap.add(_udp_frame("10.0.0.53", "10.0.0.1", 53, 5353 + qid, bytes(r)), dt_ns)


def build(path: Path, connections: int = 6, requests: int = 5) -> Run:
    """CONNECTIONS keep-alive connections of REQUESTS requests each, to /fast and /slow."""
    cap = Capture()
    run = Run(path)
    for c in range(connections):
        conn = Conn(cap, client=("10.0.0.1", 40000 + c), server=("10.0.0.9", 8080))
        conn.handshake()
        for r in range(requests):
            target = "/slow" if r % 2 else "/fast"
            latency_ns = (40_000_000 if r % 2 else 2_000_000) + 1_000_000 * c + 10_000 * r
            status = 500 if (c, r) == (1, 3) else 200
            headers = f"traceparent: 00-{TRACE[:-4]}{c:02x}{r:02x}-00f067aa0ba902b7-01\r\n"
            conn.client(
                f"GET {target}?q={r} HTTP/1.1\r\nHost: svc\r\n{headers}\r\n".encode(), dt=500_000
            )
            body = b"x" * (10 + r)
            reason = b"OK" if status == 200 else b"Internal Server Error"
            conn.server(
                b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n%s"
                % (status, reason, len(body), body),
                dt=latency_ns,
            )
            conn.client_ack()
            if (c, r) == (2, 1):  # the server sends its last segment again
                conn.raw(False, conn.sseq - len(body), body)
                run.retransmissions += 1
            run.latencies.setdefault(target, []).append(latency_ns / 1e9)
            run.statuses.append(status)
        conn.close()
    for i in range(2):  # connections refused: SYN answered by RST
        sport = 50000 + i
        cap.add(tcp_frame("10.0.0.1", "10.0.0.7", sport, 9999, 7, 0, SYN))
        cap.add(tcp_frame("10.0.0.7", "10.0.0.1", 9999, sport, 0, 8, RST | ACK))
        run.refused += 1
    _dns(cap, 1, "svc.example.", 0, 3_000_000)
    _dns(cap, 2, "nope.example.", 3, 9_000_000)
    run.dns_queries = 2
    cap.write(path)
    return run


def quantile_cont(values: list[float], q: float) -> float:
    """DuckDB's quantile_cont: linear interpolation between closest ranks."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
