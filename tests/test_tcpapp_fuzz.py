"""The TCP analyzer never raises, whatever the segments: random flags, sequence numbers
and payloads mixed with real HTTP/1.x and HTTP/2 bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pcaptool.http.http2 import PREFACE
from pcaptool.record.flow import Flow
from pcaptool.tcp.analyzer import HttpAnalyzer
from pcaptool.tcp.reassembly import Limits
from pcaptool.tcp.stream import Segment

FLOWS = [Flow(f"{k:016x}", f"1:{k}") for k in range(3)]

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
    PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    b"\x00\x00\x05\x01\x05\x00\x00\x00\x01\x82\x86\x84\x41\x8a",
]

segment = st.tuples(
    st.integers(0, 1),  # direction
    st.integers(0, 0xFFFFFFFF),  # seq
    st.integers(0, 0xFFFFFFFF),  # ack
    st.integers(0, 0xFF),  # flags
    st.one_of(st.binary(max_size=120), st.sampled_from(SEEDS)),
    st.integers(0, 5_000_000_000),  # time step
)


@settings(max_examples=300, deadline=None)
@given(st.lists(segment, max_size=30), st.booleans())
def test_never_raises(segs, small):
    limits = (
        Limits(flow_bytes=256, total_bytes=512, max_flows=2, idle_timeout_ns=10**9)
        if small
        else None
    )
    an = HttpAnalyzer(project="p", flows=True, limits=limits)
    ts = 0
    for i, (d, seq, ack, flags, payload, dt) in enumerate(segs, 1):
        ts += dt
        key = i % 3  # a few connections, reused
        rec: dict = {}
        src, dst = ("10.0.0.1", 1000 + key), ("10.0.0.2", 80)
        a, b = (src, dst) if d == 0 else (dst, src)
        an.on_tcp(rec, FLOWS[key], d, Segment(*a, *b, seq, ack, flags, payload, ts, i))
        an.take_records()
    an.finish(ts)


def test_in_order_conversation_with_sequence_numbers_from_the_seeds():
    an = HttpAnalyzer()
    recs = []
    seq = [100, 5000]
    for i, (d, data) in enumerate([(0, SEEDS[0]), (1, SEEDS[1])], 1):
        rec: dict = {}
        a, b = (("a", 1), ("b", 2)) if d == 0 else (("b", 2), ("a", 1))
        an.on_tcp(rec, FLOWS[0], d, Segment(*a, *b, seq[d], seq[1 - d], 0x18, data, i, i))
        seq[d] += len(data)
        recs.append(rec)
    assert recs[0]["http"]["method"] == "GET"
    assert recs[1]["http"]["status"] == 200 and recs[1]["http"]["request"]["num"] == 1
    assert recs[1]["logging.googleapis.com/trace"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_http2_header_values_redacted_in_frames_and_messages():
    import hpack

    from pcaptool.http.http2 import PREFACE

    enc = hpack.Encoder()
    block = enc.encode(
        [
            (":method", "GET"),
            (":path", "/"),
            (":scheme", "http"),
            (":authority", "a"),
            ("cookie", "s=1"),
        ]
    )
    data = PREFACE + len(block).to_bytes(3, "big") + bytes([1, 5]) + (1).to_bytes(4, "big") + block
    an = HttpAnalyzer(redact={"Cookie"})
    rec: dict = {}
    an.on_tcp(rec, FLOWS[0], 0, Segment("a", 1, "b", 2, 1, 1, 0x18, data, 1, 1))
    assert rec["http"]["headers"]["cookie"] == "<redacted>"
    (hdrs,) = [f["headers"] for f in rec["http2"]["frames"] if "headers" in f]
    assert ["cookie", "<redacted>"] in hdrs and [":path", "/"] in hdrs
