"""Build TCP conversations (Ethernet/IPv4/TCP) packet by packet for tests (test helper)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from pcaptool.capfile.reader import LINKTYPE_ETHERNET, PcapWriter

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


class Capture:
    """Packets in capture order; `write(path)` makes a nanosecond pcap of them."""

    def __init__(self, ts_ns: int = 1_700_000_000_000_000_000) -> None:
        self.ts = ts_ns
        self.packets: list[tuple[int, bytes, int]] = []
        self.snaplen = 0  # > 0: frames longer than this are cut (wire length kept)

    def add(self, frame: bytes, dt_ns: int = 1000) -> int:
        self.ts += dt_ns
        cut = frame[: self.snaplen] if self.snaplen else frame
        self.packets.append((self.ts, cut, len(frame)))
        return len(self.packets)  # the pcap.num of this packet

    def write(self, path: Path) -> Path:
        with path.open("wb") as f:
            w = PcapWriter(f, LINKTYPE_ETHERNET, 262144, nanosecond=True)
            for ts, frame, wirelen in self.packets:
                w.write(ts, frame, wirelen=wirelen)
        return path


def tcp_frame(
    src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, payload=b""
):
    tcp = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0
    )
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        1,
        0x4000,
        64,
        6,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    return eth + ip + tcp + payload


class Conn:
    """One TCP connection between a client and a server, with its own sequence numbers."""

    def __init__(self, cap: Capture, client=("10.0.0.1", 40000), server=("10.0.0.9", 8080)) -> None:
        self.cap = cap
        self.c, self.s = client, server
        self.cseq, self.sseq = 1000, 900_000

    def _pkt(self, from_client: bool, flags: int, payload: bytes = b"", seq=None, dt=1000) -> int:
        if from_client:
            (a, ap), (b, bp) = self.c, self.s
            s, k = (self.cseq if seq is None else seq), self.sseq
        else:
            (a, ap), (b, bp) = self.s, self.c
            s, k = (self.sseq if seq is None else seq), self.cseq
        return self.cap.add(tcp_frame(a, b, ap, bp, s, k, flags, payload), dt)

    def handshake(self) -> None:
        self._pkt(True, SYN, seq=self.cseq - 1)
        self._pkt(False, SYN | ACK, seq=self.sseq - 1)
        self._pkt(True, ACK)

    def client(self, data: bytes, dt: int = 1000) -> int:
        n = self._pkt(True, PSH | ACK, data, dt=dt)
        self.cseq += len(data)
        return n

    def server(self, data: bytes, dt: int = 1000) -> int:
        n = self._pkt(False, PSH | ACK, data, dt=dt)
        self.sseq += len(data)
        return n

    def client_ack(self, dt: int = 1000) -> int:
        return self._pkt(True, ACK, dt=dt)

    def server_ack(self, dt: int = 1000) -> int:
        return self._pkt(False, ACK, dt=dt)

    def raw(self, from_client: bool, seq: int, data: bytes, dt: int = 1000) -> int:
        """A segment at an explicit sequence number (retransmission, out of order)."""
        return self._pkt(from_client, PSH | ACK, data, seq=seq, dt=dt)

    def close(self) -> list[int]:
        a = self._pkt(True, FIN | ACK)
        self.cseq += 1
        b = self._pkt(False, FIN | ACK)
        self.sseq += 1
        c = self._pkt(True, ACK)
        return [a, b, c]
