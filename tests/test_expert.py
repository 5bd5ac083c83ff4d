"""TCP expert analysis: one built case per flag, each checked against tshark as well; random
conversations (hypothesis) equal to tshark; the corpus equal to tshark; bounded memory."""

from __future__ import annotations

import os
import shutil
import socket
import struct
from pathlib import Path

import pytest
from expert_oracle import compare, ours_analysis, translate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import corpus_files
from pcaptool.capfile.reader import LINKTYPE_ETHERNET, PcapWriter
from pcaptool.tcp.expert import TcpExpert

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MS = 1_000_000


def frame(src, dst, sport, dport, seq, ack, flags, window, payload=b"", opts=b""):
    opts += b"\x01" * (-len(opts) % 4)
    hdr = struct.pack(
        "!HHIIBBHHH",
        sport,
        dport,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        (20 + len(opts)) // 4 << 4,
        flags,
        window,
        0,
        0,
    )
    seg = hdr + opts + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(seg),
        1,
        0x4000,
        64,
        6,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + seg


class Talk:
    """A client (c) and a server (s) exchanging segments with explicit numbers; `c`/`s`
    return the packet number; `seq` defaults to the side's next sequence number."""

    def __init__(self, wscale: int | None = None) -> None:
        self.ts = 1_700_000_000_000_000_000
        self.packets: list[tuple[int, bytes]] = []
        self.next = {"c": 1000, "s": 500_000}
        self.wscale = wscale

    def send(self, who, flags=ACK, data=b"", seq=None, ack=None, win=1000, dt=MS, opts=b""):
        other = "s" if who == "c" else "c"
        seq = self.next[who] if seq is None else seq
        ack = self.next[other] if ack is None else ack
        src, dst = ("10.0.0.1", "10.0.0.9") if who == "c" else ("10.0.0.9", "10.0.0.1")
        sport, dport = (40000, 80) if who == "c" else (80, 40000)
        if flags & SYN and self.wscale is not None:
            opts = b"\x03\x03" + bytes([self.wscale]) + opts
        self.ts += dt
        self.packets.append(
            (self.ts, frame(src, dst, sport, dport, seq, ack, flags, win, data, opts))
        )
        end = seq + len(data) + (1 if flags & (SYN | FIN) else 0)
        if (end - self.next[who]) & 0xFFFFFFFF < 0x80000000:
            self.next[who] = end & 0xFFFFFFFF
        return len(self.packets)

    def c(self, *a, **k):
        return self.send("c", *a, **k)

    def s(self, *a, **k):
        return self.send("s", *a, **k)

    def handshake(self, rtt=10 * MS):
        self.c(SYN, seq=self.next["c"] - 1, ack=0)
        self.s(SYN | ACK, seq=self.next["s"] - 1, dt=rtt // 2)
        self.c(ACK, dt=rtt // 2)

    def write(self, path: Path) -> Path:
        with path.open("wb") as f:
            w = PcapWriter(f, LINKTYPE_ETHERNET, 262144, nanosecond=True)
            for ts, data in self.packets:
                w.write(ts, data)
        return path


def check(talk: Talk, tmp_path: Path) -> dict[int, dict[str, str]]:
    """Ours per packet; equal to tshark's where tshark is installed."""
    path = talk.write(tmp_path / "t.pcap")
    records = translate(path)
    if shutil.which("tshark"):
        assert compare(path, records) == []
    return ours_analysis(records)


def test_handshake_rtt_and_acks(tmp_path):
    t = Talk()
    t.handshake(rtt=20 * MS)
    req = t.c(PSH | ACK, b"x" * 100)
    ack = t.s(ACK, dt=7 * MS)
    got = check(t, tmp_path)
    assert got[3]["initial_rtt"] == str(20 * MS)
    assert got[ack]["acks_frame"] == str(req) and got[ack]["ack_rtt"] == str(7 * MS)
    assert got[req]["bytes_in_flight"] == "100"


def test_retransmission_is_a_warning_with_its_tag(tmp_path):
    t = Talk()
    t.handshake()
    first = t.c(PSH | ACK, b"a" * 50)
    again = t.c(PSH | ACK, b"a" * 50, seq=first and 1000, dt=300 * MS)
    got = check(t, tmp_path)
    assert "retransmission" in got[again] and got[again]["rto_frame"] == str(first)
    rec = [r for r in translate(t.write(tmp_path / "r.pcap")) if r["pcap"]["num"] == again][0]
    assert rec["severity"] == "WARNING" and rec["message"].endswith("[TCP Retransmission]")


def test_fast_retransmission_after_duplicate_acks(tmp_path):
    t = Talk()
    t.handshake()
    lost = t.next["c"]
    t.next["c"] += 100  # this segment is never captured
    t.c(PSH | ACK, b"b" * 100)
    d = [t.s(ACK, ack=lost, dt=MS) for _ in range(3)]
    fast = t.c(PSH | ACK, b"a" * 100, seq=lost, dt=MS)
    got = check(t, tmp_path)
    # the server's SYN/ACK already acknowledged `lost`: each ACK after it repeats it
    assert [got[n].get("duplicate_ack_num") for n in d] == ["1", "2", "3"]
    assert got[d[2]]["duplicate_ack_frame"] == "2"
    assert {"fast_retransmission", "retransmission"} <= set(got[fast])


def test_lost_segment_out_of_order_and_acked_unseen(tmp_path):
    t = Talk()
    t.handshake()
    hole = t.next["c"]
    t.next["c"] += 10
    after = t.c(PSH | ACK, b"y" * 10, dt=MS)
    ooo = t.c(PSH | ACK, b"x" * 10, seq=hole, dt=MS // 2)
    unseen = t.s(ACK, ack=t.next["c"] + 20)
    got = check(t, tmp_path)
    assert "lost_segment" in got[after] and "out_of_order" in got[ooo]
    assert "ack_lost_segment" in got[unseen]


def test_spurious_retransmission(tmp_path):
    t = Talk()
    t.handshake()
    t.c(PSH | ACK, b"z" * 40)
    t.s(ACK)
    spur = t.c(PSH | ACK, b"z" * 40, seq=1000, dt=200 * MS)
    assert {"spurious_retransmission", "retransmission"} <= set(check(t, tmp_path)[spur])


def test_zero_window_probe_and_update(tmp_path):
    t = Talk()
    t.handshake()
    t.c(PSH | ACK, b"d" * 100)
    zero = t.s(ACK, win=0)
    probe = t.c(PSH | ACK, b"d", dt=200 * MS)
    probe_ack = t.s(ACK, win=0, ack=t.next["c"] - 1)
    update = t.s(ACK, win=4000, ack=t.next["c"] - 1)
    got = check(t, tmp_path)
    assert "zero_window" in got[zero] and "zero_window_probe" in got[probe]
    assert "zero_window_probe_ack" in got[probe_ack] and "window_update" in got[update]


def test_keep_alive_and_its_ack(tmp_path):
    t = Talk()
    t.handshake()
    t.c(PSH | ACK, b"k" * 10)
    t.s(ACK)
    ka = t.c(ACK, seq=t.next["c"] - 1, dt=2000 * MS)
    ka_ack = t.s(ACK)
    got = check(t, tmp_path)
    assert "keep_alive" in got[ka] and "keep_alive_ack" in got[ka_ack]


def test_window_full_with_window_scaling(tmp_path):
    t = Talk(wscale=2)
    t.handshake()
    t.s(ACK, win=100)  # 400 bytes with the scale
    full = t.c(PSH | ACK, b"f" * 400)
    assert "window_full" in check(t, tmp_path)[full]


def test_reused_ports_and_mid_data_reset(tmp_path):
    t = Talk()
    t.handshake()
    t.c(PSH | ACK, b"q" * 10)
    rst = t.s(RST | ACK)
    t.next["c"] += 100_000
    again = t.c(SYN, seq=t.next["c"], ack=0, dt=50 * MS)
    got = check(t, tmp_path)
    assert "reused_ports" in got[again]
    recs = {r["pcap"]["num"]: r for r in translate(t.write(tmp_path / "m.pcap")) if "pcap" in r}
    assert recs[rst]["tcp"]["analysis"]["mid_data_reset"] is True
    assert recs[rst]["severity"] == "WARNING"


def test_memory_is_bounded():
    ex = TcpExpert(max_conns=50, max_segments=20, budget=500)
    for port in range(1000):
        for k in range(40):  # never acknowledged
            ex.segment(k, k * MS, "10.0.0.1", port, "10.0.0.2", 80, 1000 + 10 * k, 1, ACK, 100, 10)
        assert ex.segments <= 500 + 20 and len(ex.conns) <= 2 * 50
    assert all(len(s.segs) <= 20 for c, *_ in ex.conns.values() for s in c.sides)


SEGMENT = st.tuples(
    st.sampled_from("cs"),
    st.sampled_from([ACK, PSH | ACK, ACK, FIN | ACK, RST | ACK, SYN, SYN | ACK]),
    st.integers(0, 3),  # data size class
    st.integers(-3, 2),  # sequence offset class (behind, repeat, ahead)
    st.integers(-2, 1),  # acknowledgment offset class
    st.sampled_from([0, 0, 1, 2, 40]),  # ms since the previous packet
    st.sampled_from([0, 512, 1000, 1000, 1000]),  # window
)


@needs_tshark
@settings(
    max_examples=int(os.environ.get("PCAPTOOL_EXPERT_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(SEGMENT, min_size=3, max_size=40))
def test_random_conversations_equal_tshark(tmp_path, segments):
    t = Talk(wscale=1)
    t.handshake()
    for who, flags, size, dseq, dack, ms, win in segments:
        other = "s" if who == "c" else "c"
        data = b"r" * (0, 1, 10, 100)[size]
        seq = (t.next[who] + (0, 1, 10, -10, -1, -100)[dseq]) & 0xFFFFFFFF
        ack = (t.next[other] + (0, 10, -1, -10)[dack]) & 0xFFFFFFFF
        t.send(who, flags, data if not flags & SYN else b"", seq=seq, ack=ack, win=win, dt=ms * MS)
    path = t.write(tmp_path / "h.pcap")
    assert compare(path) == []


@needs_tshark
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_equals_tshark(path):
    assert compare(path) == []
